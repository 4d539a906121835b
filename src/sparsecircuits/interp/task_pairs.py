"""The toolkit's inputs: task pairs as one `tasks.TaskBatch`, clean (A) rows against corrupted
(B) rows, from a built-in task or a pairs file; and the labels of a position scan's columns.

The batch's token-level alignment (`TaskBatch.alignments`) decides which clean tokens differ
and where each clean activation goes in the corrupted prompt, so prompts of different lengths
(a token inserted or deleted) are compared token by token, not position by position. A
position scan has one column per clean position counted back from the last token (the answer
position of both prompts): column "-k" patches, in every pair, the corrupted position aligned
to the clean token k before the last, and nothing in a pair where that token has no
counterpart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.tasks import (
    TaskBatch,
    TaskPair,
    encode_pairs,
    read_pairs_jsonl,
    task_pairs,
)

TokenText = Callable[[int], str]


@dataclass
class TaskInput:
    """The pairs a command analyses: their batch (trimmed), a label for file names and titles,
    the skips, and which input pairs the batch's rows are."""

    label: str
    batch: TaskBatch
    skipped: dict[str, int]
    kept: list[int]

    @classmethod
    def encoded(cls, label: str, pairs: list[TaskPair], run: Run) -> TaskInput:
        encoded = encode_pairs(pairs, run.tokenizer, run.model_config.n_ctx)
        return cls(label, encoded.batch.trimmed(), encoded.skipped, encoded.kept)


def task_input(run: Run, task: str | None, pairs_file: Path | None, n: int, seed: int) -> TaskInput:
    """`n` test pairs of a built-in task, or every pair of a JSONL pairs file (as `prune
    --pairs` reads it), for the model in `run`."""
    return TaskInput.encoded(*pairs_to_analyse(task, pairs_file, n, seed), run)


def pairs_to_analyse(
    task: str | None, pairs_file: Path | None, n: int, seed: int
) -> tuple[str, list[TaskPair]]:
    """A label and the pairs of exactly one of `task` and `pairs_file`, as text: every bad
    input is refused here, before any model is loaded."""
    if (task is None) == (pairs_file is None):
        raise UserError("give exactly one of --task NAME or --pairs FILE.jsonl")
    if task is not None:
        return task, task_pairs(task, "test", n, seed)
    return Path(pairs_file).stem, read_pairs_jsonl(pairs_file)


def task_batch(run: Run, task: str, n: int = 64, seed: int = 0) -> TaskBatch:
    """`n` test pairs of a built-in task for the model in `run`, trimmed."""
    return task_input(run, task, None, n, seed).batch


def shared_positions(batch: TaskBatch) -> int:
    """How many positions, counted back from the last token, every clean prompt has."""
    return int(batch.clean_last.min()) + 1


def position_labels(batch: TaskBatch, token_text: TokenText | None = None) -> list[str]:
    """Labels of a position scan's columns (oldest first), from the first pair: the clean token
    where the corrupted prompt has the same one aligned to it, "a/b" where it was substituted,
    "a/-" where it has no counterpart; "-k" and "last" without a tokenizer."""
    if token_text is None:
        return [f"-{back}" if back else "last" for back in reversed(range(shared_positions(batch)))]
    counterpart = batch.alignments[0].counterpart
    clean_of = {i: j for j, i in enumerate(counterpart) if i >= 0}  # clean -> corrupted
    last = int(batch.clean_last[0])
    labels = []
    for back in reversed(range(shared_positions(batch))):
        position = last - back
        clean_text = token_text(int(batch.clean[0, position]))
        if position not in clean_of:
            labels.append(f"{clean_text}/-")
            continue
        corrupted_token = int(batch.corrupted[0, clean_of[position]])
        same = corrupted_token == int(batch.clean[0, position])
        labels.append(clean_text if same else f"{clean_text}/{token_text(corrupted_token)}")
    return labels
