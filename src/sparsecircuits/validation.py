"""Checking what the program reads against its schema, and saying what is wrong in one line.

Every file the project reads back (configs, trainer state, optimizer index, circuit files, pairs)
has a schema: a dataclass or a small pydantic model. `validate` and `load_json` check data
against one and turn the first problem into a UserError that names the file and the field:

    models/x/config.json: model.d_model: expected an integer, got 'abc'

All JSON the project reads (whole files, JSONL lines, JSON kept in a database) is parsed here,
by `parse_json`: its parser has a depth limit, so `[[[[...` a hundred thousand deep is one
line ("nested too deeply") instead of Python's RecursionError.

A leaf module: it imports nothing from the package but errors.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic_core import ErrorDetails

from sparsecircuits.errors import UserError

T = TypeVar("T")

# pydantic's error types, said the way a person reading a JSON file would put it.
EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dataclass_type": "expected an object",
    "dataclass_exact_type": "expected an object",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}
UNKNOWN_KEY_TYPES = ("extra_forbidden", "unexpected_keyword_argument")
LONGEST_SHOWN_VALUE = 60


def validate(schema: type[T], data: object, source: Path | str) -> T:
    """`data` checked against `schema` (a dataclass, pydantic model or type), as that type.

    The data is checked as the JSON it came from (or will be written as), in strict mode:
    "2" is not an integer and 2.5 is not one either. Strict Python mode would also refuse a
    plain dict where a dataclass is expected; strict JSON mode fills the dataclass from it.
    """
    return _check(schema, json.dumps(data), source)


def load_json(path: Path | str, schema: type[T], kind: str = "file") -> T:
    """Read the JSON file at `path` and check it against `schema`; `kind` names it in errors."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such {kind}: {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {kind} {path}: {error.strerror or error}") from None
    return parse_json(text, schema, path)


def parse_json(text: str | bytes, schema: type[T], source: Path | str) -> T:
    """The JSON document `text` checked against `schema` (`object`: any JSON at all);
    `source` names it in errors ("runs/x/metrics.jsonl: line 3")."""
    if not isinstance(text, str | bytes):  # e.g. NULL where a database keeps JSON
        raise field_error(source, "", f"expected JSON text, got {shown(text)}")
    return _check(schema, text, source)


def bounded_float(bound: float) -> Any:
    """A float type for numbers read from a file: finite (no NaN, no Infinity) and within
    ±`bound`, so that what is computed from them stays finite too."""
    return Annotated[float, pydantic.Field(allow_inf_nan=False, ge=-bound, le=bound)]


def field_error(source: Path | str, location: str, message: str) -> UserError:
    """The one-line error for a problem found by hand, in the same form as `validate`'s."""
    return UserError(f"{source}: {location}: {message}" if location else f"{source}: {message}")


def _check(schema: type[T], text: str | bytes, source: Path | str) -> T:
    try:
        return _adapter(schema).validate_json(text, strict=True)
    except pydantic.ValidationError as error:
        raise _first_problem(error, source) from None
    except UserError as error:  # a dataclass's own range check, run while it is filled in
        raise UserError(f"{source}: {error}") from None


@functools.cache
def _adapter(schema: Any) -> pydantic.TypeAdapter:
    # Building an adapter compiles the schema; each one is built once per process.
    return pydantic.TypeAdapter(schema)


def _first_problem(error: pydantic.ValidationError, source: Path | str) -> UserError:
    problems = error.errors()
    first = problems[0]
    more = len(problems) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return field_error(source, dotted_location(first["loc"]), describe(first) + suffix)


def dotted_location(location: tuple[int | str, ...]) -> str:
    """('nodes', 3, 'layer') -> 'nodes[3].layer'; keys that hold dots are quoted."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":  # pydantic's marker for a bad dictionary key, not a value
            text += " (the key)"
        elif "." in part or " " in part or not part:
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


def describe(problem: ErrorDetails) -> str:
    """What is wrong with one value, and the value itself."""
    kind, message = problem["type"], problem["msg"]
    reason = problem.get("ctx", {}).get("error")  # the parser's or a check's own words
    if kind == "missing":
        return "missing"
    if kind in UNKNOWN_KEY_TYPES:
        return "unknown key"
    if kind == "json_invalid" and "recursion limit" in str(reason or message):
        return f"not valid JSON: nested too deeply ({reason or message})"
    if kind == "json_invalid":
        return f"not valid JSON: {reason or message}"
    if kind == "value_error":  # a ValueError raised by a check while validating
        expected = str(reason or message)
    elif kind in EXPECTED:
        expected = EXPECTED[kind]
    elif message.startswith("Input should be "):  # "... be greater than 0" -> "expected ..."
        expected = "expected " + message.removeprefix("Input should be ")
    else:
        expected = message[:1].lower() + message[1:]
    return f"{expected}, got {shown(problem['input'])}"


def shown(value: object) -> str:
    text = repr(value)
    if len(text) > LONGEST_SHOWN_VALUE:
        text = text[: LONGEST_SHOWN_VALUE - 3] + "..."
    return text
