"""Task pairs for pruning, split four ways: mask training, selection, verification, test."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.tasks import TaskBatch, encode_pairs, read_pairs_jsonl, task_pairs

# Pairs drawn from a task's train split, in this order; the test split measures the circuit.
TRAIN_PAIRS, SELECT_PAIRS, VERIFY_PAIRS, TEST_PAIRS = 512, 256, 512, 256


@dataclass
class TaskSplits:
    """A task's pairs for one prune.

    Masks train on `train`; the k search and trimming choose among many circuits on `select`
    (and fit the calibration there), so a circuit chosen close to the target fits the noise of
    those pairs; `verify`, which nothing was chosen on, confirms the choice; `test` measures.
    """

    name: str
    train: TaskBatch
    select: TaskBatch
    verify: TaskBatch
    test: TaskBatch

    def batches(self) -> tuple[TaskBatch, ...]:
        return self.train, self.select, self.verify, self.test


def task_splits(run: Run, task: str | None, pairs_file: Path | None, seed: int = 0) -> TaskSplits:
    """The splits of a built-in task or of a user's pairs file.

    A pairs file is shuffled deterministically and split 40% / 20% / 20% / 20%.
    """
    if (task is None) == (pairs_file is None):
        raise UserError("give exactly one of --task NAME or --pairs FILE.jsonl")
    n_ctx = run.model_config.n_ctx
    encode = lambda pairs: encode_pairs(pairs, run.tokenizer, n_ctx).batch  # noqa: E731
    if task is not None:
        sizes = (TRAIN_PAIRS, SELECT_PAIRS, VERIFY_PAIRS)
        pool = encode(task_pairs(task, "train", sum(sizes), seed))
        test = encode(task_pairs(task, "test", TEST_PAIRS, seed))
        return TaskSplits(task, *split_by_shares(pool, sizes), test)
    pairs = read_pairs_jsonl(pairs_file)
    random.Random(seed).shuffle(pairs)
    if len(pairs) < 5:
        raise UserError(f"{pairs_file} has {len(pairs)} pairs; pruning needs at least 5")
    return TaskSplits(Path(pairs_file).stem, *split_by_shares(encode(pairs), (2, 1, 1, 1)))


def split_by_shares(batch: TaskBatch, shares: tuple[int, ...]) -> list[TaskBatch]:
    """Consecutive parts of `batch` in proportion to `shares`, none empty.

    Pairs the tokenizer skipped shrink every part alike."""
    total, n = sum(shares), batch.n_pairs
    if n < len(shares):
        raise UserError(f"only {n} usable pairs; pruning needs at least {len(shares)}")
    bounds = [0]
    for share in shares[:-1]:
        bounds.append(max(bounds[-1] + 1, bounds[-1] + n * share // total))
    bounds = [min(bound, n - (len(shares) - i)) for i, bound in enumerate(bounds)] + [n]
    return [batch.subset(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
