"""Kinds of token a person names: a quoted word, a symbol by its name ("the full stop"), a
word class ("numbers", "Python keywords", "plural nouns", "capitalized words"). Each becomes a
factor: one excerpt's tokens in, one strength in 0..1 per token out (explain.prose reads the
names; explain.cues and explain.code_cues say where tokens stand).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sparsecircuits.explain import code_cues, cues
from sparsecircuits.explain.cues import Strengths, is_space
from sparsecircuits.explain.vocabulary import (
    AUXILIARIES,
    DETERMINERS,
    FUNCTION_WORDS,
    MODALS,
    NEGATIONS,
    PREPOSITIONS,
    PRONOUNS,
    PYTHON_BUILTINS,
    PYTHON_KEYWORDS,
    QUESTION_WORDS,
    SYMBOL_NAMES,
    bare,
    inflections,
    is_number,
    is_word,
    looks_plural,
    word_set,
)

Factor = Callable[[list[str]], list[float]]  # one excerpt's tokens -> strength per token
TokenTest = Callable[[str], float]
PLACEHOLDER = re.compile(r"\bqq(\d+)\b")  # a quoted literal, held out of the text as qqN
SENTENCE_PUNCTUATION = {",", ".", ";", ":", "!", "?", "(", ")", "-", "'", '"'}
OUT_OF_DOMAIN = 0.15  # "in code" read on prose, "Python keywords" on English


def literal_test(literal: str) -> TokenTest:
    """A quoted word matches its inflections caselessly; a symbol matches itself."""
    text = literal.strip()
    if not any(c.isalnum() for c in text):
        return lambda token: 1.0 if token.strip() == text else 0.0
    forms = inflections(text) if text.isalpha() else {text.lower()}
    return lambda token: 1.0 if bare(token) in forms else 0.0


def literal_factor(literal: str) -> Factor:
    """Every token of the literal's words, in order ("Big Ben" marks both tokens)."""
    words = literal.split()
    if len(words) < 2:
        test = literal_test(literal)
        return lambda tokens: [test(token) for token in tokens]
    tests = [literal_test(word) for word in words]

    def factor(tokens: list[str]) -> list[float]:
        out = [0.0] * len(tokens)
        solid = [i for i, token in enumerate(tokens) if token.strip()]
        for start in range(len(solid) - len(words) + 1):
            span = solid[start : start + len(words)]
            if all(test(tokens[i]) for test, i in zip(tests, span, strict=True)):
                for i in span:
                    out[i] = 1.0
        return out

    return factor


def per_token(test: TokenTest) -> Factor:
    return lambda tokens: [test(token) for token in tokens]


def in_code(factor: Factor, wanted: bool = True) -> Factor:
    """`factor` where the excerpt reads like code (`wanted` False: like prose)."""

    def inner(tokens: list[str]) -> list[float]:
        code = code_cues.code_likeness(tokens)
        weight = max(OUT_OF_DOMAIN, code if wanted else 1.0 - code)
        return [weight * value for value in factor(tokens)]

    return inner


def closed_class(words: frozenset[str]) -> Factor:
    return per_token(lambda token: 1.0 if bare(token) in words else 0.0)


def capitalised(token: str) -> float:
    text = token.strip()
    return 1.0 if text[:1].isupper() and is_word(token) else 0.0


def upper_case(token: str) -> float:
    text = token.strip()
    return 1.0 if len(text) > 1 and text.isupper() and is_word(token) else 0.0


def punctuation(token: str) -> float:
    text = token.strip()
    return 1.0 if text and not any(c.isalnum() for c in text) else 0.0


def previous_word(tokens: list[str], i: int) -> str:
    for j in range(i - 1, -1, -1):
        if not is_space(tokens[j]):
            return bare(tokens[j])
    return ""


def noun_like(tokens: list[str]) -> Strengths:
    """Open-class words after a determiner, number or preposition (1), after a subject
    pronoun or auxiliary (0, a verb), else 0.5."""
    out = []
    for i, token in enumerate(tokens):
        if not is_word(token) or bare(token) in FUNCTION_WORDS:
            out.append(0.0)
            continue
        before = previous_word(tokens, i)
        if before in DETERMINERS or before in PREPOSITIONS or is_number(before):
            out.append(1.0)
        elif before in PRONOUNS or before in AUXILIARIES or before == "to":
            out.append(0.0)
        else:
            out.append(0.5)
    return out


def verb_like(tokens: list[str]) -> Strengths:
    """Auxiliaries, and open-class words after a subject pronoun, modal or "to" (1), not
    after a determiner (0), else 0.4."""
    out = []
    for i, token in enumerate(tokens):
        word = bare(token)
        if word in AUXILIARIES:
            out.append(1.0)
            continue
        if not is_word(token) or word in FUNCTION_WORDS or is_number(token):
            out.append(0.0)
            continue
        before = previous_word(tokens, i)
        if before in PRONOUNS or before in MODALS or before == "to":
            out.append(1.0)
        elif before in DETERMINERS or before in PREPOSITIONS:
            out.append(0.0)
        else:
            out.append(0.4)
    return out


def looks_like_year(token: str) -> float:
    text = bare(token)
    return 1.0 if text.isdigit() and len(text) == 4 and 1000 <= int(text) <= 2100 else 0.0


def plural_nouns(tokens: list[str]) -> list[float]:
    nouns = noun_like(tokens)
    return [n if looks_plural(t) else 0.0 for t, n in zip(tokens, nouns, strict=True)]


ARITHMETIC_OPERATORS = word_set("+ - * / % ** // plus minus times")

OPERATORS = ARITHMETIC_OPERATORS | word_set("= == != < > <= >= and or not in is")

# (pattern, factor) for the kinds of token a person names, more specific ones first: each
# pattern claims its words, so "modal verbs" is not read again as "verbs".
CLASSES: list[tuple[str, Factor]] = [
    (r"plural(?: nouns?| forms?| words?)?|nouns? in (?:the )?plural", plural_nouns),
    (r"all[- ]caps|all upper-?case|all capital letters|all capitals|acronyms?|abbreviations?",
     per_token(upper_case)),
    (r"proper nouns?|capitali[sz]ed words?|words? (?:starting|beginning) with a capital(?: letter)?"
     r"|capitali[sz]ed|upper-?case first letters?|capital letters?|words? with capitals?",
     per_token(capitalised)),
    (r"nouns?", noun_like),
    (r"modal verbs?|modals?", closed_class(MODALS)),
    (r"verbs?", verb_like),
    (r"pronouns?", closed_class(PRONOUNS)),
    (r"prepositions?", closed_class(PREPOSITIONS)),
    (r"negations?|negative words?|negating words?", closed_class(NEGATIONS)),
    (r"question words?|interrogatives?", closed_class(QUESTION_WORDS)),
    (r"dictionary keys?|keys? (?:of|in) (?:an? |the )?dict(?:ionary|ionaries)?",
     code_cues.dictionary_keys),
    (r"(?:python |reserved )?keywords?|reserved words?",
     in_code(closed_class(PYTHON_KEYWORDS))),
    (r"built-?in (?:python )?functions?|builtins?", in_code(closed_class(PYTHON_BUILTINS))),
    (r"names? of (?:an? |the )?functions? (?:being )?defined|functions? being defined"
     r"|function definitions?|defined functions?|functions? defined",
     lambda t: code_cues.after_word(t, ("def",))),
    (r"function names?|names? of functions?|function calls?|functions? (?:being )?called",
     code_cues.function_names),
    (r"variable names?|names? of variables?|variables?|identifiers?", code_cues.variable_names),
    (r"(?:imported )?module names?|names? of (?:imported )?modules?|imported (?:modules?|names?"
     r"|packages?)", code_cues.imported_names),
    (r"class names?|names? of classes", code_cues.class_names),
    (r"method(?: names?| calls?)?|names? of methods|attributes?(?: names?| access)?|methods?",
     code_cues.attributes),
    (r"arithmetic operators?|math(?:ematical)? operators?", closed_class(ARITHMETIC_OPERATORS)),
    (r"operators?", closed_class(OPERATORS)),
    (r"years|dates", per_token(looks_like_year)),
    (r"numbers?|digits?|numerals?|numeric(?: values?)?|integers?", per_token(
        lambda token: 1.0 if is_number(token) else 0.0)),
    (r"indentation(?: whitespace)?|leading (?:whitespace|spaces)", cues.indentation),
    (r"whitespace|spaces?", per_token(lambda token: 1.0 if cues.is_space(token) else 0.0)),
    (r"punctuation(?: marks?)?|symbols?|special characters?", per_token(punctuation)),
    (r"(?:plain |ordinary )?english words?|words? in english|natural language|prose",
     in_code(per_token(lambda token: float(is_word(token))), wanted=False)),
]  # fmt: skip


def symbol_names(text: str) -> tuple[TokenTest, str] | None:
    """Symbols named in `text` ("opening parentheses", "the # symbol") as one test, and the
    text without their names."""
    found: set[str] = set()
    for name in sorted(SYMBOL_NAMES, key=len, reverse=True):
        pattern = rf"(?<!\w){re.escape(name)}(?!\w)"
        if re.search(pattern, text):
            found.update(SYMBOL_NAMES[name])
            text = re.sub(pattern, " ", text)
    # A bare symbol ("the # symbol"); not the explanation's own punctuation.
    for raw in re.findall(r"(?<!\S)[^\w\s]{1,3}(?!\S)", text):
        if raw not in SENTENCE_PUNCTUATION:
            found.add(raw)
            text = text.replace(raw, " ")
    if not found:
        return None
    return (lambda token: 1.0 if token.strip() in found else 0.0), text


def object_test(phrase: str, literals: list[str]) -> TokenTest | None:
    """What the object of "after ..." / "before ..." names, as a test of one token."""
    placeholder = PLACEHOLDER.search(phrase)
    if placeholder:
        return literal_test(literals[int(placeholder.group(1))])
    symbol = symbol_names(phrase)
    if symbol is not None:
        return symbol[0]
    if re.search(r"\bnumbers?\b|\bdigits?\b", phrase):
        return lambda token: 1.0 if is_number(token) else 0.0
    if re.search(r"\bkeywords?\b", phrase):
        return lambda token: 1.0 if bare(token) in PYTHON_KEYWORDS else 0.0
    if re.search(r"\bcapitali[sz]ed\b", phrase):
        return capitalised
    word = re.fullmatch(r"(?:the )?(?:word |token )?([a-z]+)", phrase.strip())
    if word and word.group(1) not in FUNCTION_WORDS and word.group(1) not in ("word", "token"):
        return literal_test(word.group(1))
    return None
