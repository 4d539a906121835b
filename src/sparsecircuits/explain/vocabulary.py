"""Word lists the prose simulator (explain.prose) reads explanations and tokens with.

General English and Python vocabulary only: the names people give symbols ("opening
parenthesis", "full stop"), closed word classes (pronouns, determiners, prepositions), number
words, Python's keywords and built-ins, and the framing words of an explanation ("words
about", "the token") that carry no meaning of their own.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re


def word_set(text: str) -> frozenset[str]:
    """The words of `text`, split at spaces (word lists read as prose)."""
    return frozenset(text.split())


# What people call a symbol, longest names first where one contains another.
SYMBOL_NAMES: dict[str, tuple[str, ...]] = {
    "opening parenthesis": ("(",),
    "opening parentheses": ("(",),
    "open parenthesis": ("(",),
    "open paren": ("(",),
    "left parenthesis": ("(",),
    "closing parenthesis": (")",),
    "closing parentheses": (")",),
    "close paren": (")",),
    "right parenthesis": (")",),
    "opening square brackets": ("[",),
    "closing square brackets": ("]",),
    "opening brackets": ("(", "[", "{"),
    "closing brackets": (")", "]", "}"),
    "opening square bracket": ("[",),
    "closing square bracket": ("]",),
    "square brackets": ("[", "]"),
    "square bracket": ("[", "]"),
    "opening bracket": ("(", "[", "{"),
    "closing bracket": (")", "]", "}"),
    "curly braces": ("{", "}"),
    "curly brace": ("{", "}"),
    "braces": ("{", "}"),
    "angle brackets": ("<", ">"),
    "parentheses": ("(", ")"),
    "parenthesis": ("(", ")"),
    "brackets": ("(", ")", "[", "]"),
    "bracket": ("(", ")", "[", "]"),
    "full stops": (".",),
    "full stop": (".",),
    "periods": (".",),
    "period": (".",),
    "dots": (".",),
    "dot": (".",),
    "commas": (",",),
    "comma": (",",),
    "semicolons": (";",),
    "semicolon": (";",),
    "colons": (":",),
    "closing braces": ("}",),
    "closing brace": ("}",),
    "opening braces": ("{",),
    "opening brace": ("{",),
    "colon": (":",),
    "question marks": ("?",),
    "question mark": ("?",),
    "exclamation marks": ("!",),
    "exclamation mark": ("!",),
    "exclamation point": ("!",),
    "quotation marks": ('"', "'"),
    "quotation mark": ('"', "'"),
    "quote marks": ('"', "'"),
    "double quotes": ('"',),
    "double quote": ('"',),
    "single quotes": ("'",),
    "single quote": ("'",),
    "apostrophes": ("'",),
    "apostrophe": ("'",),
    "quotes": ('"', "'"),
    "hash symbol": ("#",),
    "hash sign": ("#",),
    "hash": ("#",),
    "pound sign": ("#",),
    "# symbol": ("#",),
    "equals signs": ("=",),
    "equals sign": ("=",),
    "equal sign": ("=",),
    "plus signs": ("+",),
    "plus sign": ("+",),
    "minus signs": ("-",),
    "minus sign": ("-",),
    "asterisk": ("*",),
    "slashes": ("/",),
    "slash": ("/",),
    "backslash": ("\\",),
    "underscores": ("_",),
    "underscore": ("_",),
    "hyphens": ("-",),
    "hyphen": ("-",),
    "dashes": ("-",),
    "dash": ("-",),
    "at sign": ("@",),
    "dollar sign": ("$",),
    "percent sign": ("%",),
    "ampersand": ("&",),
    "newlines": ("\n",),
    "newline": ("\n",),
    "line breaks": ("\n",),
    "line break": ("\n",),
}
BRACKET_PAIRS = {"(": ")", "[": "]", "{": "}"}
QUOTE_CHARACTERS = ('"', "'", "`", "\u201c", "\u201d", "\u2018", "\u2019")
SENTENCE_ENDS = (".", "!", "?")

NUMBER_WORDS = word_set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion dozen half"
)
PRONOUNS = word_set(
    "i you he she it we they me him her us them who which that this these those what "
    "myself yourself himself herself itself ourselves themselves"
)
DETERMINERS = word_set(
    "the a an this that these those my your his her its our their some many few several "
    "all no every each any both more most other such"
)
PREPOSITIONS = word_set(
    "of in on at by for with from to into onto over under above below between through "
    "during before after about against among around behind beside near off out up down "
    "across along within without upon"
)
CONJUNCTIONS = word_set("and or but nor so yet because although if when while")
AUXILIARIES = word_set(
    "is are was were be been being am do does did have has had will would shall should can "
    "could may might must"
)
MODALS = word_set("can could may might must shall should will would")
NEGATIONS = word_set("not no never none nothing nobody nowhere neither nor cannot n't without")
QUESTION_WORDS = word_set("who whom whose what which when where why how")
FUNCTION_WORDS = PRONOUNS | DETERMINERS | PREPOSITIONS | CONJUNCTIONS | AUXILIARIES | {"not"}
IRREGULAR_PLURALS = word_set(
    "men women children people mice geese feet teeth oxen sheep fish deer data criteria "
    "phenomena lice dice"
)
NOT_PLURAL_ENDINGS = ("ss", "us", "is", "ous", "'s")

PYTHON_KEYWORDS = frozenset(keyword.kwlist + keyword.softkwlist) - {"_"}
PYTHON_BUILTINS = frozenset(
    name for name in dir(builtins) if not name.startswith("_") and name[0].islower()
)
ASSIGNMENT_OPERATORS = ("=", "+=", "-=", "*=", "/=", "//=", "%=", "|=", "&=", ":=")
# Symbols that make an excerpt look like code rather than prose.
CODE_MARKERS = word_set("= == ( ) [ ] { } : def import return class self print if for in")

# Words an explanation frames its meaning with: "words that name colors" means colors.
FRAMING = re.compile(
    r"\b(?:words?|tokens?|terms?|names?|kinds?|types?|sorts?|examples?|instances?|"
    r"occurrences?|mentions?|references?|things?|items?|pieces?|the|an?|any|of|that|which|"
    r"name|names|naming|related|relating|to|about|for|like|such|as|expressing|describing|"
    r"denoting|referring|refers?|other|various|general|generally|specific|itself|themselves|"
    r"text|is|are|being|it|its|in|and|or|with|this|these|those|unit|neuron|fires?|"
    r"activates?|on|responds?|certain|some|anything|everything|something|phrases?|passages?|"
    r"excerpts?|contexts?|documents?|single|used|uses?|appears?|appeared|appearing|occurs?|"
    r"occurred|seen|written|defined|mentioned|copy|copies|positions?|where|when|who|whose|"
    r"what|how|all|most|often|usually|mostly|mainly|especially|particular|particularly|very|"
    r"mean|means|meaning|sense|senses|ones?|from|earlier|later|previous|previously|before|"
    r"after|sequences?|times?|second|first|last|next|same|whole|parts? of speech|whatever|"
    r"contents?|characters?|within|inside|form|forms|called|named|known|commonly|typically)\b",
    re.IGNORECASE,
)


@functools.cache
def bare(token: str) -> str:
    """A token's word without surrounding whitespace, lower-cased."""
    return token.strip().lower()


@functools.cache
def is_number(token: str) -> bool:
    text = bare(token).replace(",", "").replace("_", "")
    return bool(text) and (text.isdigit() or text in NUMBER_WORDS)


@functools.cache
def is_word(token: str) -> bool:
    text = token.strip()
    return (
        bool(text)
        and any(c.isalpha() for c in text)
        and all(c.isalnum() or c in "'-" for c in text)
    )


def looks_plural(token: str) -> bool:
    """Plural by its form: an irregular plural, or a longer word ending in s (not -ss, -us)."""
    text = bare(token)
    if text in IRREGULAR_PLURALS:
        return True
    return (
        len(text) > 3
        and text.isalpha()
        and text.endswith("s")
        and not text.endswith(NOT_PLURAL_ENDINGS)
        and text not in FUNCTION_WORDS
    )


def inflections(word: str) -> set[str]:
    """`word` and its regular plural, third-person, past and -ing forms, lower-cased."""
    word = word.lower()
    forms = {word, word + "s", word + "es", word + "'s", word + "ed", word + "d", word + "ing"}
    if word.endswith("y") and len(word) > 2:
        forms.add(word[:-1] + "ies")
    if word.endswith("s"):
        forms.add(word[:-1])
    return forms
