"""Task pairs for pruning, split three ways: mask training, held-out (k and calibration), test."""

from __future__ import annotations

import random
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.tasks import TaskBatch, encode_pairs, read_pairs_jsonl, task_pairs
from sparsecircuits.train import Run

# Pairs drawn from a task's train split: the first part trains masks, the rest chooses k and
# fits the calibration; the test split measures the final circuit.
TRAIN_PAIRS, HELDOUT_PAIRS, TEST_PAIRS = 384, 128, 256


def task_batches(
    run: Run, task: str | None, pairs_file: Path | None, seed: int = 0
) -> tuple[str, TaskBatch, TaskBatch, TaskBatch]:
    """(name, train, heldout, test) TaskBatches for a built-in task or a user's pairs file.

    A pairs file is shuffled deterministically and split 50% / 25% / 25%.
    """
    if (task is None) == (pairs_file is None):
        raise UserError("give exactly one of --task NAME or --pairs FILE.jsonl")
    n_ctx = run.model_config.n_ctx
    encode = lambda pairs: encode_pairs(pairs, run.tokenizer, n_ctx).batch  # noqa: E731
    if task is not None:
        train = encode(task_pairs(task, "train", TRAIN_PAIRS + HELDOUT_PAIRS, seed))
        test = encode(task_pairs(task, "test", TEST_PAIRS, seed))
        split = max(1, train.n_pairs * TRAIN_PAIRS // (TRAIN_PAIRS + HELDOUT_PAIRS))
        return task, train.subset(range(split)), train.subset(range(split, train.n_pairs)), test
    pairs = read_pairs_jsonl(pairs_file)
    random.Random(seed).shuffle(pairs)
    if len(pairs) < 4:
        raise UserError(f"{pairs_file} has {len(pairs)} pairs; pruning needs at least 4")
    everything = encode(pairs)
    n = everything.n_pairs
    half, three_quarters = max(1, n // 2), max(2, 3 * n // 4)
    return (
        Path(pairs_file).stem,
        everything.subset(range(half)),
        everything.subset(range(half, three_quarters)),
        everything.subset(range(three_quarters, n)),
    )
