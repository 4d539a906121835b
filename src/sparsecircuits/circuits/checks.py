"""Checks of a found circuit beyond its own loss: the same nodes under the other ablation and
on nonsense answers (cheap: no pruning, see circuits.controls for the controls that prune).

Nonsense answers: the task's pairs with the two answers swapped in a random half of the pairs
(fixed seed), so the answer no longer follows from the prompt. A circuit that does the task
scores about chance there (ln 2 = 0.693), whatever it does on the real answers.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from sparsecircuits.circuits.prune import calibrated_loss
from sparsecircuits.circuits.space import CircuitSpace, circuit_space
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.loading import Run
from sparsecircuits.tasks import TaskBatch

OTHER_ABLATION = {"mean": "zero", "zero": "mean"}


def nonsense_batch(batch: TaskBatch, seed: int = 0) -> TaskBatch:
    """`batch` with the answers of a random half of its pairs swapped, in both prompts."""
    swap = torch.rand(batch.n_pairs, generator=torch.Generator().manual_seed(seed)) < 0.5
    rows = torch.cat([swap, swap])
    return replace(
        batch,
        correct=torch.where(rows, batch.wrong, batch.correct),
        wrong=torch.where(rows, batch.correct, batch.wrong),
    )


@torch.no_grad()
def circuit_checks(
    run: Run, space: CircuitSpace, ablation: str, keep: torch.Tensor, splits: TaskSplits
) -> dict:
    """The found circuit under the other ablation, and on nonsense answers: test losses, each
    calibrated on the selection pairs as the circuit itself is."""
    other = OTHER_ABLATION[ablation]
    select, test = splits.select, splits.test
    return {
        "other_ablation": other,
        "other_ablation_loss": calibrated_loss(circuit_space(run, other), keep, select, test),
        "nonsense_task_loss": calibrated_loss(
            space, keep, nonsense_batch(select), nonsense_batch(test, 1)
        ),
    }
