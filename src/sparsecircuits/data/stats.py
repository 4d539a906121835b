"""What a corpus holds for the tasks: how often the constructions each task decides occur.

A task can only be learned from a corpus that shows its decision often enough. The counts
here are the evidence a user needs to see why a model does or does not learn a task, e.g.
`bracket_counting` needs one-line nested list literals closing with `]]`, which the standard
library has few of.

Bracket counts come from Python's own `tokenize` (a `[` opens a list literal unless it follows
a name, a literal or a closing bracket, where it is a subscript); the rest are line patterns.
"""

from __future__ import annotations

import io
import keyword
import re
import sys
import tokenize
from collections import Counter
from collections.abc import Iterable

from tqdm import tqdm

from sparsecircuits.data.corpus import Corpus, Document

# name -> (what it counts, the task it matters for, pattern over the text, multi-line)
LINE_PATTERNS: dict[str, tuple[str, str, str]] = {
    "fstrings": (
        "f-string literals",
        "fstring_brace",
        r"(?<![\w\"'])[fF][rR]?[\"']|(?<![\w\"'])[rR][fF][\"']",
    ),
    "format_calls": ("'...'.format( calls", "fstring_brace", r"[\"']\.format\("),
    "set_initialisations": ("x = set()", "set_or_string", r"^\s*\w+\s*=\s*set\(\)\s*$"),
    "string_initialisations": (
        "x = '' or x = \"\"",
        "set_or_string",
        r"^\s*\w+\s*=\s*(?:''|\"\")\s*$",
    ),
    "lambdas": ("lambda expressions", "lambda_func", r"\blambda\b"),
    "with_as": ("with ... as ...", "with_as", r"^\s*(?:async\s+)?with\b[^\n#]*\bas\b"),
    "open_modes": ("open(..., 'r' or 'w')", "with_open", r"\bopen\([^)\n]*[\"'][rw][bt]?[\"']"),
    "while_true": ("while True:", "while_return_true", r"^\s*while True:"),
    "return_true": ("return True", "while_return_true", r"^\s*return True\s*$"),
    "if_equals_true": ("if x == True:", "var_if", r"^\s*if \w+ == True:"),
    "enumerate_loops": (
        "for a, b in enumerate(",
        "enumerate_range",
        r"^\s*for \w+, \w+ in enumerate\(",
    ),
    "range_loops": ("for i in range(", "enumerate_range", r"^\s*for \w+ in range\("),
    "swaps": ("a, b = b, a", "var_swap", r"^\s*(\w+), (\w+) = \2, \1\s*$"),
    "self_assignments": ("self.x = x", "class_init", r"^\s*self\.(\w+) = \1\s*$"),
    "elif": ("elif lines", "else_elif", r"^\s*elif\b"),
    "ternaries": (
        "x if c else y on one line",
        "if_ternary",
        # An `if` after something on its line (not a statement's), `else` later on it. Each
        # match starts at an `if`, so a long generated line costs no more than a scan of it.
        r"[^\s#][ \t]+if\b[^#\n:]*?\belse\b",
    ),
}
_COMPILED = {
    name: re.compile(pattern, re.MULTILINE) for name, (_, _, pattern) in LINE_PATTERNS.items()
}
BRACKET_COUNTS = {
    "nested_list_closings": ("]] closing a one-line nested list literal", "bracket_counting"),
    "flat_list_closings": ("] closing a list literal with no list inside", "bracket_counting"),
    "subscript_double_closings": ("]] closing a subscript in a subscript", "bracket_counting"),
}
_VALUE_TOKENS = (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)


def bracket_counts(text: str) -> Counter:
    """Closings of list literals and subscripts, by Python's tokenizer; a file it cannot
    tokenize (not Python 3) counts nothing."""
    counts: Counter = Counter()
    stack: list[dict] = []  # open brackets: kind, line, whether a list literal is inside
    previous = None
    last_close = None  # the previous token if it was a ']', with what it closed
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.NL, tokenize.COMMENT):
                continue
            if token.type == tokenize.OP and token.string in "([{":
                kind = "other"
                if token.string == "[":
                    kind = "subscript" if _ends_value(previous) else "list"
                if kind == "list" and stack:
                    stack[-1]["has_list"] = True
                stack.append({"kind": kind, "line": token.start[0], "has_list": False})
            elif token.type == tokenize.OP and token.string in ")]}" and stack:
                closed = stack.pop()
                if token.string == "]":
                    _count_closing(counts, closed, token, last_close)
                    last_close = (token, closed)
                    previous = token
                    continue
            last_close = None
            previous = token
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return Counter()
    return counts


def _ends_value(token: tokenize.TokenInfo | None) -> bool:
    if token is None:
        return False
    if token.type == tokenize.NAME:
        return not keyword.iskeyword(token.string) or token.string in ("True", "False", "None")
    return token.type in _VALUE_TOKENS or token.string in (")", "]", "}")


def _count_closing(counts: Counter, closed: dict, token, last_close) -> None:
    adjacent = last_close is not None and last_close[0].end == token.start
    if closed["kind"] == "list" and not closed["has_list"]:
        counts["flat_list_closings"] += 1
    if not adjacent:
        return
    inner = last_close[1]
    if closed["kind"] == inner["kind"] == "list" and closed["line"] == token.start[0]:
        counts["nested_list_closings"] += 1
    elif closed["kind"] == inner["kind"] == "subscript":
        counts["subscript_double_closings"] += 1


def pattern_counts(text: str) -> Counter:
    return Counter({name: len(pattern.findall(text)) for name, pattern in _COMPILED.items()})


def corpus_counts(documents: Iterable[Document], progress: bool = True) -> tuple[Counter, int]:
    """Every count over the documents, and their UTF-8 bytes."""
    counts: Counter = Counter()
    total_bytes = 0
    with tqdm(
        desc="counting", unit="B", unit_scale=True, file=sys.stderr, disable=not progress
    ) as bar:
        for document in documents:
            size = len(document.text.encode("utf-8"))
            counts.update(pattern_counts(document.text))
            counts.update(bracket_counts(document.text))
            counts["documents"] += 1
            total_bytes += size
            bar.update(size)
    return counts, total_bytes


def corpus_stats(corpus: Corpus, tokens: int | None, progress: bool = True) -> dict:
    """Files, bytes, tokens, the distinct share and every task count (also per million
    tokens, to compare corpora of different sizes)."""
    counts, total_bytes = corpus_counts(corpus.documents(), progress)
    files = counts.pop("documents")
    seen = files + corpus.duplicates
    per_million = 1e6 / tokens if tokens else None
    constructions = {}
    for name, (what, task, *_) in {**LINE_PATTERNS, **BRACKET_COUNTS}.items():
        constructions[name] = {
            "what": what,
            "task": task,
            "count": counts[name],
            "per_million_tokens": counts[name] * per_million if per_million else None,
        }
    return {
        "corpus": corpus.description,
        "packages": corpus.packages,
        "files": files,
        "duplicate_files": corpus.duplicates,
        "unreadable_files": corpus.skipped,
        "distinct_share": files / seen if seen else None,
        "bytes": total_bytes,
        "tokens": tokens,
        "constructions": constructions,
    }
