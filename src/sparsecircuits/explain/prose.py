"""Reading a prose explanation as a person would, to simulate it without a language model.

An explanation is read into a `Reading`: what kind of token fires (a quoted word and its
inflections, a symbol by its name, a word class such as numbers or Python keywords, or a
kind of word by meaning, compared in a sentence-embedding space), where it must stand (inside
brackets, quotes or a comment; at the start or end of a line or sentence; right after or
before some token; seen earlier in the text; the result of a wrong sum) and, for a quoted
word, which of its senses counts ("'bat' meaning the animal, not ..."). Phrases are matched by
the general English patterns of explain.patterns, in a fixed order, each claiming the words it
matched; whatever no pattern claims is read as a kind of word by meaning. The simulation of a
token is 10 x its target strength x the product of its conditions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sparsecircuits.explain import code_cues, cues
from sparsecircuits.explain.patterns import (
    AFFIX,
    ANY_SENSE,
    CONDITIONS,
    DOMAIN,
    EARLY_CONDITIONS,
    EXAMPLES,
    EXCLUDED,
    FIRST_TIME,
    IN_THE_SENSE,
    MEANING_ONLY,
    NEIGHBOUR_OBJECT,
    NEXT_OBJECT,
    NEXT_SUBJECT,
    NOT_A_LITERAL,
    NOT_SENSE,
    PAIR_NAMES,
    PHRASES,
    PREVIOUS_OBJECT,
    REPEATED,
    SENSE,
    TIME_CLAUSE,
    UNQUOTED_WORD,
)
from sparsecircuits.explain.vocabulary import (
    BRACKET_PAIRS,
    FRAMING,
    bare,
    is_word,
)
from sparsecircuits.explain.wordclasses import (
    CLASSES,
    OUT_OF_DOMAIN,
    PLACEHOLDER,
    Factor,
    literal_factor,
    noun_like,
    object_test,
    per_token,
    symbol_names,
    verb_like,
)

QUOTED = re.compile(r"(?<![\w'])'([^']+)'(?!\w)|\"([^\"]+)\"|`([^`]+)`|\u201c([^\u201d]+)\u201d")


@dataclass
class Reading:
    text: str = ""  # the explanation read
    literals: list[str] = field(default_factory=list)
    classes: list[Factor] = field(default_factory=list)  # word classes (union with literals)
    conditions: list[Factor] = field(default_factory=list)  # all must hold (product)
    meaning: str | None = None  # a kind of word by meaning (sentence-embedding target)
    sense: str | None = None  # which sense of the literals counts
    not_senses: list[str] = field(default_factory=list)
    code_only: bool | None = None  # True: in code; False: in prose
    meaning_joins: bool = False  # a class "and" a meaning: either counts (else: the class
    # narrowed by the meaning, "verbs that express wanting")

    def has_target(self) -> bool:
        return bool(self.literals or self.classes or self.meaning)


# --- reading an explanation -------------------------------------------------------------------


def read(explanation: str) -> Reading:
    """The explanation as a Reading (see the module docstring)."""
    reading, quoted = Reading(explanation.strip()), []

    def hold(match: re.Match) -> str:
        quoted.append(next(group for group in match.groups() if group is not None))
        return f" qq{len(quoted) - 1} "

    text = QUOTED.sub(hold, explanation.strip()).lower()
    text = name_symbols(text, quoted)

    def unquoted(match: re.Match) -> str:
        if match.group(1) in NOT_A_LITERAL:
            return match.group(0)
        quoted.append(match.group(1))
        return f" qq{len(quoted) - 1} "

    text = UNQUOTED_WORD.sub(unquoted, text)
    text = read_examples(text, quoted, reading)
    text = read_sense(text, quoted, reading)
    meaning_part = ""
    about = MEANING_ONLY.search(text)
    if about:
        meaning_part, text = about.group(1), text[: about.start()]
    phrase = re.search(PHRASES, text) is not None and not re.search(r"\bsingle\b", text)
    text = consume(text, TIME_CLAUSE, lambda m: None)
    for pattern, factor in EARLY_CONDITIONS:
        text = consume(text, pattern, lambda m, f=factor: reading.conditions.append(f))
    text = consume(text, FIRST_TIME, lambda m: reading.conditions.append(
        lambda t: cues.repeated(t, phrase, later=True)))  # fmt: skip
    text = consume(text, REPEATED, lambda m: reading.conditions.append(
        lambda t: cues.repeated(t, phrase)))  # fmt: skip
    for pattern, factor in CONDITIONS:
        text = consume(text, pattern, lambda m, f=factor: reading.conditions.append(f))
    text = re.sub(EXCLUDED, " ", text)
    for pattern, wanted in DOMAIN:
        text = consume(text, pattern, lambda m, w=wanted: setattr(reading, "code_only", w))
    text = read_relations(text, quoted, reading)
    text = read_affixes(text, quoted, reading)
    symbol = symbol_names(PLACEHOLDER.sub(" ", text))
    if symbol is not None:
        reading.classes.append(per_token(symbol[0]))
        text = symbol_names(text)[1]
    for pattern, factor in CLASSES:
        joined = re.search(rf"\b(?:{pattern})\b\s*(?:,|\band\b|\bor\b)|(?:,|\band\b|\bor\b)"
                           rf"\s*\b(?:{pattern})\b", text)  # fmt: skip
        if joined:
            reading.meaning_joins = True  # "numbers and dates": either, not both
        text = consume(text, rf"\b(?:{pattern})\b", lambda m, f=factor: reading.classes.append(f))
    for match in PLACEHOLDER.finditer(text):
        reading.literals.append(quoted[int(match.group(1))])
    text = PLACEHOLDER.sub(" ", text)
    reading.meaning = leftover(text + " " + meaning_part)
    return reading


def read_affixes(text: str, quoted: list[str], reading: Reading) -> str:
    """ "ending in the letter s", "starting with 'un'": a condition on the word's spelling."""
    for match in AFFIX.finditer(text):
        ending = match.group(1) is not None
        affix = match.group(1) or match.group(2)
        held = PLACEHOLDER.fullmatch(affix)
        affix = (quoted[int(held.group(1))] if held else affix).lower()

        def spelled(token: str, affix=affix, ending=ending) -> float:
            word = bare(token)
            fits = word.endswith(affix) if ending else word.startswith(affix)
            return 1.0 if fits and len(word) > len(affix) and is_word(token) else 0.0

        reading.conditions.append(per_token(spelled))
    return AFFIX.sub(" ", text)


def name_symbols(text: str, quoted: list[str]) -> str:
    """Brackets written as symbols, as their names: "[ ]" and "between '[' and ']'" as
    "square brackets", "a ( symbol" as a quoted "(" (so punctuation rules leave them be)."""
    for opener, name in PAIR_NAMES.items():
        closer = BRACKET_PAIRS[opener]
        text = re.sub(rf"{re.escape(opener)}\s*{re.escape(closer)}(?: brackets?| parenthes[ie]s)?",
                      name, text)  # fmt: skip
        for match in re.finditer(r"qq(\d+) and qq(\d+)", text):
            pair = quoted[int(match.group(1))].strip(), quoted[int(match.group(2))].strip()
            if pair == (opener, closer):
                text = text.replace(match.group(0), name)

    def hold(match: re.Match) -> str:
        quoted.append(match.group(1))
        return f" qq{len(quoted) - 1} "

    return re.sub(r"(?<!\S)([^\w\s]{1,3})\s+(?:symbols?|signs?|characters?|marks?|tokens?)\b",
                  hold, text)  # fmt: skip


def consume(text: str, pattern: str, handle: Callable[[re.Match], object]) -> str:
    """`text` with every match of `pattern` blanked; `handle` called once if any matched (one
    mention or two, the explanation asks for the condition once)."""
    regex = re.compile(pattern)
    matches = list(regex.finditer(text))
    if not matches:
        return text
    handle(matches[0])
    return regex.sub(" ", text)


def read_examples(text: str, quoted: list[str], reading: Reading) -> str:
    """ "like maybe, perhaps and might": single-word examples become literal targets (an
    example that is an expression, "2 + 2 = 5", tells nothing a word match could use)."""
    match = EXAMPLES.search(text)
    if not match:
        return text
    for item in re.split(r",|\band\b|\bor\b", match.group(1)):
        item = item.strip(" .")
        held = PLACEHOLDER.fullmatch(item)
        if held:
            reading.literals.append(quoted[int(held.group(1))])
        elif re.fullmatch(r"[a-z][a-z'-]*|\d+", item) and item not in ("etc", "so on"):
            reading.literals.append(item)
    return text[: match.start()] + text[match.end() :]


def read_sense(text: str, quoted: list[str], reading: Reading) -> str:
    """ "'bat' meaning the animal, not the club": which sense of a quoted word counts."""
    text = ANY_SENSE.sub(" ", text)
    text = IN_THE_SENSE.sub(lambda m: f" meaning {m.group(1)} ", text)
    sense = SENSE.search(text)
    if not sense:
        return text
    before = text[: sense.start()].strip()
    if re.fullmatch(r"[a-z][a-z-]*", before) and before not in NOT_A_LITERAL:
        quoted.append(before)  # "bat in the sense of ...": the word itself is quoted
        text = f" qq{len(quoted) - 1} " + text[sense.start() :]
        sense = SENSE.search(text)
    if not PLACEHOLDER.search(text[: sense.start()]):
        return text
    reading.sense = sense.group(1).strip()
    part = re.fullmatch(r"(?:an? )?(verb|noun)s?", reading.sense)
    if part:  # "'run' used as a verb": a part of speech, read off the neighbours
        reading.conditions.append(verb_like if part.group(1) == "verb" else noun_like)
        reading.sense = None
    text = text[: sense.start()] + " " + text[sense.end() :]
    for negated in NOT_SENSE.finditer(text):
        reading.not_senses.append(negated.group(1).strip())
    return NOT_SENSE.sub(" ", text)


def read_relations(text: str, quoted: list[str], reading: Reading) -> str:
    """ "X is likely to come next", "just before X", "right after X": conditions on the
    neighbouring token."""
    for match in NEXT_SUBJECT.finditer(text):
        test = object_test(match.group(1) or match.group(2) or "", quoted)
        if test is not None:
            reading.conditions.append(cues.neighbour(test, 1, same_line=False))
    text = NEXT_SUBJECT.sub(" ", text)
    for match in NEXT_OBJECT.finditer(text):
        test = object_test(match.group(1), quoted)
        if test is not None:
            reading.conditions.append(cues.neighbour(test, 1, same_line=False))
    text = NEXT_OBJECT.sub(" ", text)
    for match in PREVIOUS_OBJECT.finditer(text):
        test = object_test(match.group(2), quoted)
        if test is not None:
            adjacent = match.group(1) is not None
            reading.conditions.append(cues.neighbour(test, -1, same_line=not adjacent))
    text = PREVIOUS_OBJECT.sub(" ", text)
    for match in NEIGHBOUR_OBJECT.finditer(text):
        test = object_test(match.group(1), quoted)
        if test is not None:
            reading.conditions.append(cues.either_side(test))
    return NEIGHBOUR_OBJECT.sub(" ", text)


def leftover(text: str) -> str | None:
    """The words no pattern claimed, without framing: a kind of word by meaning."""
    text = FRAMING.sub(" ", text.replace("'s", " "))
    words = [w for w in re.findall(r"[a-z][a-z'-]*", text) if len(w) > 2]
    return " ".join(words) or None


# --- simulating a reading --------------------------------------------------------------------

SENSE_FLOOR = 0.15  # similarity of a context to an unrelated sense


def simulate_reading(
    reading: Reading, excerpts: list[list[str]], semantic: Callable[[], object]
) -> list[list[float]]:
    """10 x target x conditions for every token. `semantic()` gives explain.semantic's
    simulator, called only when the reading needs a meaning compared (loading takes seconds)."""
    meaning = None
    if reading.meaning:
        phrases = [reading.meaning]
        if (
            not (reading.literals or reading.classes or reading.conditions)
            and reading.text.lower() != reading.meaning
        ):
            # A kind of word alone: the whole sentence too ("names of animals" says a little
            # more than "animals"); the two similarity maps are averaged.
            phrases.append(reading.text)
        maps = [semantic().simulate(phrase, excerpts) for phrase in phrases]
        meaning = [
            [sum(values) / (10 * len(values)) for values in zip(*rows, strict=True)]
            for rows in zip(*maps, strict=True)
        ]
    literal_factors = [literal_factor(literal) for literal in reading.literals]
    rows = []
    for n, tokens in enumerate(excerpts):
        target = union([factor(tokens) for factor in literal_factors], len(tokens))
        if reading.sense and reading.literals:
            fits = sense_strengths(reading, tokens, target, semantic())
            target = [a * b for a, b in zip(target, fits, strict=True)]
        kinds = union([factor(tokens) for factor in reading.classes], len(tokens))
        if reading.classes and meaning is not None:
            combine = max if reading.meaning_joins else (lambda a, b: a * b)
            kinds = [combine(a, b) for a, b in zip(kinds, meaning[n], strict=True)]
        elif meaning is not None:
            kinds = meaning[n]
        target = [max(a, b) for a, b in zip(target, kinds, strict=True)]
        if not reading.has_target():
            target = [0.0 if cues.is_space(token) else 1.0 for token in tokens]
        for condition in reading.conditions:
            target = [a * b for a, b in zip(target, condition(tokens), strict=True)]
        if reading.code_only is not None:
            code = code_cues.code_likeness(tokens)
            weight = max(OUT_OF_DOMAIN, code if reading.code_only else 1.0 - code)
            target = [weight * value for value in target]
        rows.append([10.0 * value for value in target])
    return rows


def union(rows: list[list[float]], length: int) -> list[float]:
    return [max(values) for values in zip(*rows, strict=True)] if rows else [0.0] * length


def sense_strengths(
    reading: Reading,
    tokens: list[str],
    target: list[float],
    semantic,  # noqa: ANN001
) -> list[float]:
    """How well each matched token's context (the excerpt with the token masked) fits the
    wanted sense, against the unwanted ones (or an unrelated-sense floor)."""
    positions = [i for i, value in enumerate(target) if value > 0]
    out = [1.0] * len(tokens)
    if not positions:
        return out
    contexts = ["".join(tokens[:i]) + " ___" + "".join(tokens[i + 1 :]) for i in positions]
    wanted = semantic.similarities([reading.sense], contexts)[0]
    if reading.not_senses:
        unwanted = semantic.similarities(reading.not_senses, contexts).max(dim=0).values
    else:
        unwanted = None
    for k, i in enumerate(positions):
        contrast = float(wanted[k]) - (float(unwanted[k]) if unwanted is not None else SENSE_FLOOR)
        out[i] = min(1.0, max(0.1, 0.5 + 3.0 * contrast))
    return out
