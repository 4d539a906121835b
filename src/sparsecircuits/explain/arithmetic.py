"""Arithmetic statements in text and code, and whether their stated results are right.

"2 + 2 = 5", "ten times ten is a thousand", "half of 50 is 30", "the total of 12 and 8 is
20", "add(2, 3) == 6": the position of each stated result and whether it equals the computed
one, for explanations such as "wrong answers to simple sums".
"""

from __future__ import annotations

import re

from sparsecircuits.explain.cues import Strengths
from sparsecircuits.explain.vocabulary import NUMBER_WORDS, bare, word_set

OPERATIONS = {
    "+": lambda a, b: a + b,
    "plus": lambda a, b: a + b,
    "add": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "minus": lambda a, b: a - b,
    "sub": lambda a, b: a - b,
    "subtract": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "x": lambda a, b: a * b,
    "\u00d7": lambda a, b: a * b,
    "times": lambda a, b: a * b,
    "mul": lambda a, b: a * b,
    "multiply": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
    "div": lambda a, b: a / b if b else None,
    "divide": lambda a, b: a / b if b else None,
}

EQUALS = word_set("= == is equals makes gives was are")

SMALL_NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
)  # fmt: skip
WORD_VALUES = {
    **{word: float(value) for value, word in enumerate(SMALL_NUMBERS)},
    "twenty": 20.0, "thirty": 30.0, "forty": 40.0, "fifty": 50.0, "hundred": 100.0,
    "thousand": 1000.0, "million": 1e6, "dozen": 12.0,
}  # fmt: skip

NUMBER = re.compile(r"\d+(?:\.\d+)?")


def number_value(word: str) -> float | None:
    if NUMBER.fullmatch(word):
        return float(word)
    return WORD_VALUES.get(word) if word in NUMBER_WORDS else None


def arithmetic_results(tokens: list[str]) -> list[tuple[int, bool]]:
    """(position of the stated result, whether it is right) of every arithmetic statement:
    "2 + 2 = 5", "ten times ten is a thousand", "half of 50 is 30", "the total of 12 and 8
    is 20", "add(2, 3) == 6"."""
    words = [(i, bare(t)) for i, t in enumerate(tokens) if bare(t) and bare(t) not in "(),"]
    merged = []  # "=" "=" as one "==", "a thousand" as "thousand"
    for i, word in words:
        if merged and word == "=" and merged[-1][1] == "=":
            merged[-1] = (i, "==")
        elif merged and merged[-1][1] in ("a", "an") and word in WORD_VALUES:
            merged[-1] = (i, word)
        else:
            merged.append((i, word))
    results = []
    for k in range(len(merged)):
        statement = parse_statement([w for _, w in merged[k : k + 6]])
        if statement is not None:
            length, computed, stated = statement
            results.append((merged[k + length - 1][0], abs(computed - stated) < 1e-9))
    return results


def parse_statement(words: list[str]) -> tuple[int, float, float] | None:
    """(words used, computed value, stated value) when `words` open with a statement."""
    values = [number_value(w) for w in words]

    def ending(at: int, computed: float | None) -> tuple[int, float, float] | None:
        if computed is None or at + 1 >= len(words) or words[at] not in EQUALS:
            return None
        stated = values[at + 1]
        return None if stated is None else (at + 2, computed, stated)

    if len(words) >= 5 and None not in (values[0], values[2]) and words[1] in OPERATIONS:
        return ending(3, OPERATIONS[words[1]](values[0], values[2]))  # 2 + 2 = 5
    if len(words) >= 5 and words[0] in OPERATIONS and None not in values[1:3]:  # add(2, 3) == 6
        return ending(3, OPERATIONS[words[0]](values[1], values[2]))
    if len(words) >= 5 and words[:2] == ["half", "of"] and values[2] is not None:
        return ending(3, values[2] / 2)
    if (
        len(words) >= 6
        and words[0] in ("total", "sum", "product", "difference")
        and words[1] == "of"
        and words[3] == "and"
        and None not in (values[2], values[4])
    ):
        combine = {"total": "+", "sum": "+", "product": "*", "difference": "-"}[words[0]]
        return ending(5, OPERATIONS[combine](values[2], values[4]))
    return None


def arithmetic(tokens: list[str], wanted: bool | None) -> Strengths:
    """1 at the results of arithmetic statements: all (`wanted` None), the wrong ones
    (False) or the right ones (True)."""
    out = [0.0] * len(tokens)
    for position, right in arithmetic_results(tokens):
        if wanted is None or right == wanted:
            out[position] = 1.0
    return out
