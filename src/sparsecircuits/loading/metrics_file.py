"""A run's `metrics.jsonl`: one JSON object per training step, appended as training goes.

Reading checks every line against `MetricsLine`, with two cases kept apart:

- the last line cut short (no newline at its end; the start of an object, not a whole one) is
  what a killed writer leaves: it is dropped, and `--resume` rewrites the file without it, so every
  complete line is kept and the next appended line does not join the broken one;
- any other bad line (garbage, binary, a line that is not an object, a line missing its
  step) is damage nobody can repair by guessing: a UserError naming the file and line number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, NonNegativeInt

from sparsecircuits.errors import UserError
from sparsecircuits.files import json_text, write_text_atomic
from sparsecircuits.validation import parse_json

METRICS = "metrics.jsonl"


class MetricsLine(BaseModel):
    """One step's record: what the loss plot and --resume read; other keys pass through."""

    model_config = ConfigDict(extra="allow")
    step: NonNegativeInt
    tokens: NonNegativeInt
    loss: float
    density: float
    val_loss: float | None = None  # only on steps with an evaluation
    tasks: dict[str, dict[str, float | None]] | None = None  # --eval-tasks scores


@dataclass
class MetricsFile:
    lines: list[str]  # the complete lines, as written
    records: list[dict]  # the same lines as checked data
    dropped_line: int | None = None  # the number of an unfinished last line left out


def read_metrics_file(path: Path) -> MetricsFile:
    """The complete lines of `path` (none if it does not exist), each checked."""
    path = Path(path)
    try:
        data = path.read_bytes() if path.exists() else b""
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    raw_lines = data.split(b"\n")  # a complete file ends in "\n": the last piece is empty
    metrics = MetricsFile([], [])
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        unfinished = number == len(raw_lines)  # no newline after it
        try:
            record = parse_json(raw, MetricsLine, f"{path}: line {number}")
        except UserError:
            if unfinished and _cut_short(raw):
                metrics.dropped_line = number
                break
            raise
        metrics.lines.append(raw.decode("utf-8"))
        metrics.records.append(record.model_dump(exclude_unset=True))
    return metrics


def _cut_short(raw: bytes) -> bool:
    """Whether `raw` is the beginning of a record whose writer stopped half-way."""
    if not raw.lstrip().startswith(b"{"):
        return False
    try:
        parse_json(raw, object, "line")
    except UserError:
        return True
    return False  # a whole JSON document: a complete (if wrong) line, not a cut one


def read_metrics(path: Path) -> list[dict]:
    """Every complete step record of a metrics file, in order."""
    return read_metrics_file(path).records


def metrics_text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def keep_metrics_before(path: Path, step: int) -> MetricsFile:
    """On resume: drop the records after `step` (the checkpoint training restarts from) and an
    unfinished last line; the file is rewritten (atomically) only if that changes it."""
    metrics = read_metrics_file(path)
    kept = [
        (line, record)
        for line, record in zip(metrics.lines, metrics.records, strict=True)
        if record["step"] <= step
    ]
    text = metrics_text([line for line, _ in kept])
    if Path(path).exists() and Path(path).read_bytes() != text.encode("utf-8"):
        write_text_atomic(Path(path), text)
    return MetricsFile([line for line, _ in kept], [r for _, r in kept], metrics.dropped_line)


def metrics_line(record: dict) -> str:
    """A record as one line of the file: strict JSON (NaN becomes null) and its newline."""
    return json_text(record, indent=None) + "\n"
