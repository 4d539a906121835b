"""The realistic code around each task's decisive line: identifier pools and preambles.

A model must not be able to solve a task by recognising one memorised string, so every prompt
starts with a few lines of ordinary Python (imports, a function or method header, a docstring,
assignments) built from pools of identifiers that are common in the standard library. The
task-specific line then goes at the indentation the preamble leaves open.

Rules every generator relies on: preamble lines are complete statements (every bracket and
string closed), and names drawn together start differently, so that their first BPE tokens
differ too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

VARIABLES = (
    "name", "path", "data", "value", "key", "item", "node", "line", "text", "result", "count",
    "size", "index", "source", "target", "buffer", "parts", "items", "values", "names", "lines",
    "args", "options", "config", "message", "prefix", "offset", "width", "total", "level",
    "mode", "state", "parent", "entry", "record", "field", "header", "token", "chunk", "block",
    "stream", "handler", "request", "response", "context", "module", "filename", "encoding",
    "timeout", "limit", "start", "stop", "position", "length", "version", "status", "label",
)  # fmt: skip
# Collections one can loop over, paired with a name for one element.
SEQUENCES = (
    ("items", "item"), ("lines", "line"), ("names", "name"), ("values", "value"),
    ("parts", "part"), ("args", "arg"), ("keys", "key"), ("nodes", "node"), ("paths", "path"),
    ("fields", "field"), ("rows", "row"), ("tokens", "token"), ("entries", "entry"),
    ("files", "filename"), ("children", "child"), ("words", "word"), ("chunks", "chunk"),
    ("records", "record"), ("modules", "module"), ("options", "option"), ("tests", "test"),
)  # fmt: skip
VERBS = (
    "get", "read", "write", "load", "save", "parse", "format", "build", "make", "check", "find",
    "update", "process", "handle", "create", "close", "run", "add", "remove", "split", "join",
    "convert", "encode", "decode", "render", "validate", "collect", "resolve", "compute", "reset",
)  # fmt: skip
CLASSES = (
    "Parser", "Reader", "Writer", "Handler", "Config", "Node", "Buffer", "Request", "Response",
    "Record", "Entry", "Client", "Server", "Worker", "Cache", "Registry", "Loader", "Formatter",
    "Token", "Stream", "Connection", "Message", "Session", "Manager", "Builder",
)  # fmt: skip
BASES = ("object", "Exception", "dict", "threading.Thread", "unittest.TestCase", "Base")
MODULES = ("os", "sys", "re", "io", "json", "time", "logging", "functools", "itertools")
FROM_IMPORTS = (
    "from collections import defaultdict", "from collections import namedtuple",
    "from functools import partial", "from os import path", "from io import StringIO",
    "from itertools import chain", "from typing import Any", "from . import util",
)  # fmt: skip
STRING_METHODS = ("strip", "lower", "upper", "split", "rstrip", "lstrip", "splitlines", "title")
WORDS = (
    "cannot", "open", "file", "invalid", "value", "expected", "missing", "argument", "unknown",
    "option", "not", "found", "for", "the", "in", "of", "must", "be", "a", "string", "integer",
    "empty", "name", "path", "read", "write", "error", "failed", "to", "connect", "timeout",
    "data", "line", "bytes", "encoding", "no", "such", "directory", "object", "has", "attribute",
    "is", "too", "long", "short", "section", "key", "header", "module", "test", "result",
)  # fmt: skip
SIMPLE_VALUES = ("None", "0", "1", "True", "False", "-1", "2", "10", "100")

DEFAULTS = ("None", "None", "0", "1", "False", "True", "''", "()", "-1")

# Names for a variable that collects things; none is in VARIABLES, so no preamble line reuses it.
ACCUMULATORS = (
    "seen", "visited", "found", "output", "collected", "done", "acc", "out", "pending", "used",
    "matched", "chars", "known", "buf", "res", "keep",
)  # fmt: skip

# Context managers, each with the name its value is usually bound to.
CONTEXT_MANAGERS = (
    ("open({})", "f"), ("open({}, 'rb')", "fp"), ("open({}, 'w')", "out"),
    ("zipfile.ZipFile({})", "archive"), ("tarfile.open({})", "tar"),
    ("tempfile.TemporaryDirectory()", "tmpdir"), ("sqlite3.connect({})", "conn"),
    ("io.StringIO({})", "buf"), ("os.scandir({})", "it"), ("urlopen({})", "response"),
    ("socket.create_connection({})", "sock"), ("self.assertRaises(ValueError)", "cm"),
)  # fmt: skip

# Names of a file that is read and of one that is written, in matching styles.
FILE_NAMES = (
    ("input_path", "output_path"), ("infile", "outfile"), ("src_path", "dst_path"),
    ("source_file", "target_file"), ("in_path", "out_path"), ("input_file", "output_file"),
    ("read_path", "write_path"), ("source", "destination"), ("'input.txt'", "'output.txt'"),
    ("'data.json'", "'results.json'"), ("self.input_path", "self.output_path"),
    ("'config.ini'", "'report.txt'"), ("input_filename", "output_filename"),
)  # fmt: skip

INDEX_NAMES = ("i", "index", "n", "idx", "pos", "lineno", "j", "k", "num")


def distinct(rng: random.Random, pool: Sequence[str], k: int) -> list[str]:
    """k names from the pool whose first three letters all differ, so their first BPE tokens
    (which usually cover the start of a word) differ as well."""
    chosen: list[str] = []
    while len(chosen) < k:  # the pools hold dozens of prefixes; k is at most five
        name = rng.choice(pool)
        if all(name[:3] != other[:3] for other in chosen):
            chosen.append(name)
    return chosen


def phrase(rng: random.Random, max_words: int = 6) -> str:
    """A few words, as in a message string. It ends in a letter, so a closing quote or brace
    after it starts a new BPE pre-token."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))


def function_name(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    return verb if rng.random() < 0.3 else f"{verb}_{rng.choice(VARIABLES)}"


def docstring(rng: random.Random) -> str:
    return f'"""{rng.choice(VERBS).capitalize()} the {rng.choice(VARIABLES)}."""'


@dataclass
class Scope:
    """Where a task's decisive line goes: the code before it and the indentation it takes."""

    code: str  # complete lines, each ending in a newline (may be empty)
    indent: str
    in_method: bool

    @property
    def returns(self) -> list[str]:
        """["return "] where a return statement is allowed, else nothing: for choice lists."""
        return ["return "] if self.indent else []

    def then(self, *lines: str) -> str:
        """The preamble, then `lines` at the scope's indentation. A line may span several lines;
        those keep their indentation relative to the first (a loop body stays one level in)."""
        return self.code + self.indent + self.indented("\n".join(lines))

    def indented(self, text: str) -> str:
        """`text` with every line after the first moved in by the scope's indentation."""
        first, *rest = text.split("\n")
        return "\n".join([first, *(self.indent + line if line else line for line in rest)])


def module_lines(rng: random.Random, strings: bool) -> list[str]:
    lines = [f"import {module}" for module in rng.sample(MODULES, rng.randint(0, 2))]
    if rng.random() < 0.3:
        lines.append(rng.choice(FROM_IMPORTS))
    if lines:
        lines.append("")
    if rng.random() < 0.3:
        constant = rng.choice(VARIABLES).upper()
        value = f"'{rng.choice(WORDS)}'" if strings and rng.random() < 0.5 else rng.randint(0, 64)
        lines += [f"{constant} = {value}", ""]
    return lines


def statement(
    rng: random.Random, params: list[str], in_method: bool, strings: bool, brackets: bool
) -> str:
    """One ordinary line of a function body, closed and neutral for every task."""
    target = rng.choice(VARIABLES)
    source = rng.choice(params) if params else rng.choice(VARIABLES)
    choices = [
        f"{target} = {source}.{rng.choice(STRING_METHODS)}()",
        f"{target} = len({source})",
        f"{target} = {rng.choice(SIMPLE_VALUES)}",
        f"{target} = {function_name(rng)}({source})",
        f"if {source} is None:\n    {source} = {rng.choice(SIMPLE_VALUES)}",
        f"# {phrase(rng)}",
    ]
    if in_method:
        choices += [f"self.{target} = {source}", f"{target} = self.{rng.choice(VARIABLES)}"]
    if brackets:
        choices += [f"{target} = []", f"{target} = {{}}", f"{target} = {source}[0]"]
    if strings:
        choices += [
            f"{target} = os.path.join({source}, '{rng.choice(WORDS)}')",
            f"logger.debug('{phrase(rng, 3)} %s', {source})",
        ]
    return rng.choice(choices)


def scope(
    rng: random.Random,
    strings: bool = True,
    brackets: bool = True,
    module_level: bool = True,
    docstrings: bool | None = None,
) -> Scope:
    """A preamble: module level, inside a function, or inside a method of a class.

    strings=False leaves out every string literal, docstrings included, so the preamble holds
    no quote character at all; docstrings=True puts docstrings back without the other strings.
    """
    if docstrings is None:
        docstrings = strings
    roll = rng.random()
    lines = module_lines(rng, strings)
    if module_level and roll < 0.2:
        return Scope("".join(line + "\n" for line in lines), "", in_method=False)
    in_method = roll > 0.65
    indent = "        " if in_method else "    "
    params = rng.sample(VARIABLES, rng.randint(0 if in_method else 1, 3))
    if in_method:
        lines += [f"class {rng.choice(CLASSES)}({rng.choice(BASES)}):", ""]
        header = f"    def {function_name(rng)}({', '.join(['self', *params])}):"
    else:
        header = f"def {function_name(rng)}({', '.join(params)}):"
    lines.append(header)
    if docstrings and rng.random() < 0.4:
        lines.append(indent + docstring(rng))
    for _ in range(rng.randint(0, 3)):
        body = statement(rng, params, in_method, strings, brackets)
        lines.append(indent + body.replace("\n", "\n" + indent))
    return Scope("".join(line + "\n" for line in lines), indent, in_method)


def condition(rng: random.Random, name: str, in_method: bool = False) -> str:
    """A boolean test of `name` (or of `self.name` in a method). It ends in a letter or digit,
    so a following ':' or ' else' starts a new BPE pre-token."""
    number = rng.randint(0, 9)
    return rng.choice(
        [
            f"{name} is None",
            f"{name} is not None",
            f"not {name}",
            name,
            f"{name} > {number}",
            f"{name} == {number}",
            f"len({name}) > {number}",
            f"{name} in {rng.choice(VARIABLES)}",
            f"{name}.{rng.choice(VARIABLES)}",
            *[f"self.{name}"] * in_method,
        ]
    )
