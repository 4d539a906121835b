"""Roles of tokens in code: names that are called, defined, assigned, imported; arguments;
indented lines; and how much an excerpt reads like code at all. Same contract as
explain.cues: one excerpt's tokens in, one strength in 0..1 per token out.
"""

from __future__ import annotations

from sparsecircuits.explain.cues import Strengths, is_space, starts_line
from sparsecircuits.explain.vocabulary import (
    ASSIGNMENT_OPERATORS,
    CODE_MARKERS,
    PYTHON_KEYWORDS,
    bare,
    is_number,
)


def code_likeness(tokens: list[str]) -> float:
    """1 for an excerpt that reads like code, 0 for prose (by its code symbols and
    keywords-at-line-start)."""
    markers = sum(bare(token) in CODE_MARKERS or "_" in token.strip() for token in tokens)
    markers += sum(
        starts_line(a) and bare(b) in PYTHON_KEYWORDS
        for a, b in zip(tokens, tokens[1:], strict=False)
    )
    return min(1.0, markers / max(3.0, 0.15 * len(tokens)))


def is_identifier(token: str) -> bool:
    text = token.strip()
    return text.isidentifier() and text not in PYTHON_KEYWORDS


def function_names(tokens: list[str]) -> Strengths:
    """Identifiers called (right before "(") or defined (after "def")."""
    out = []
    for i, token in enumerate(tokens):
        called = i + 1 < len(tokens) and tokens[i + 1] == "("
        defined = i > 0 and bare(tokens[i - 1]) == "def"
        out.append(1.0 if is_identifier(token) and (called or defined) else 0.0)
    return out


def variable_names(tokens: list[str]) -> Strengths:
    """Identifiers of code that are not called, defined as functions or imported."""
    if code_likeness(tokens) < 0.5:
        return [0.0] * len(tokens)
    functions = function_names(tokens)
    out = []
    for i, token in enumerate(tokens):
        after = bare(tokens[i - 1]) if i > 0 else ""
        named = after in ("def", "class", "import", "from", "as")
        variable = is_identifier(token) and not functions[i] and not named
        out.append(1.0 if variable and not is_number(token) else 0.0)
    return out


def after_word(tokens: list[str], words: tuple[str, ...], whole_line: bool = False) -> Strengths:
    """Identifiers right after one of `words` ("import", "class", "."); `whole_line`: any
    identifier after it on its line ("import os, sys")."""
    out, active = [], False
    for i, token in enumerate(tokens):
        previous = bare(tokens[i - 1]) if i > 0 else ""
        if "\n" in token:
            active = False
        hit = previous in words or (whole_line and active)
        out.append(1.0 if hit and is_identifier(token) else 0.0)
        if bare(token) in words:
            active = True
    return out


def imported_names(tokens: list[str]) -> Strengths:
    return after_word(tokens, ("import", "from"), whole_line=True)


def class_names(tokens: list[str]) -> Strengths:
    """Names after "class", and capitalised identifiers called in code ("Engineer(...)")."""
    defined = after_word(tokens, ("class",))
    code = code_likeness(tokens) >= 0.5
    return [
        max(d, 1.0 if code and token.strip()[:1].isupper() and is_identifier(token) else 0.0)
        for d, token in zip(defined, tokens, strict=True)
    ]


def attributes(tokens: list[str]) -> Strengths:
    """Identifiers right after a "." with no space (attributes and methods)."""
    return [
        1.0 if i and tokens[i - 1] == "." and is_identifier(token) and token == token.strip()
        else 0.0
        for i, token in enumerate(tokens)
    ]  # fmt: skip


def indented_lines(tokens: list[str]) -> Strengths:
    """1 on the tokens of lines that start with indentation."""
    out, indented, line_start = [], False, False
    for token in tokens:
        if line_start:
            indented = is_space(token) and bool(token.strip(" \t") == "") and token != ""
        out.append(1.0 if indented and not is_space(token) else 0.0)
        line_start = starts_line(token)
        if line_start:
            indented = token[token.rindex("\n") + 1 :] != ""
    return out


def assigned(tokens: list[str]) -> Strengths:
    """1 at tokens right before an assignment operator (not "==")."""
    out = [0.0] * len(tokens)
    for i in range(len(tokens) - 1):
        operator = tokens[i + 1].strip()
        following = tokens[i + 2].strip() if i + 2 < len(tokens) else ""
        if operator in ASSIGNMENT_OPERATORS and following != "=":
            out[i] = 1.0
    return out


def keyword_arguments(tokens: list[str]) -> Strengths:
    """Names inside a call's parentheses right before "=" (not "=="): f(x, key=1)."""
    inside, out = call_arguments(tokens), []
    for i, token in enumerate(tokens):
        following = [t.strip() for t in tokens[i + 1 : i + 3]] + ["", ""]
        named = following[0] == "=" and following[1] != "="
        out.append(1.0 if inside[i] and named and is_identifier(token) else 0.0)
    return out


def dictionary_keys(tokens: list[str]) -> Strengths:
    """Inside braces, the tokens of a key: from "{" or "," up to the ":" that follows it."""
    out, depth, key = [0.0] * len(tokens), 0, []
    for i, token in enumerate(tokens):
        text = token.strip()
        if text == "{":
            depth, key = depth + 1, []
        elif text == "}":
            depth, key = max(0, depth - 1), []
        elif depth and text == ",":
            key = []
        elif depth and text == ":":
            for j in key:
                out[j] = 1.0
            key = []
        elif depth and text and text not in ('"', "'"):
            key.append(i)
    return out


def call_arguments(tokens: list[str]) -> Strengths:
    """Inside the parentheses of a call (an identifier right before "(")."""
    stack, out = [], []
    for i, token in enumerate(tokens):
        text = token.strip()
        if text == ")" and stack:
            stack.pop()
        out.append(1.0 if any(stack) and text != "(" else 0.0)
        if text == "(":
            stack.append(i > 0 and is_identifier(tokens[i - 1]) and token == "(")
    return out
