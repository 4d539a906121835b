"""A check of a found circuit beyond its own loss: the same nodes under the other ablation
(cheap: no pruning; circuits.controls prunes where no circuit should be, circuits.acceptance
says whether a circuit is the model's).
"""

from __future__ import annotations

import torch

from sparsecircuits.circuits.prune import calibrated_loss
from sparsecircuits.circuits.space import CircuitSpace, circuit_space
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.loading import Run

OTHER_ABLATION = {"mean": "zero", "zero": "mean"}


@torch.no_grad()
def circuit_checks(
    run: Run, space: CircuitSpace, ablation: str, keep: torch.Tensor, splits: TaskSplits
) -> dict:
    """The found circuit under the other ablation (and the same strictness options as
    `space`): its test loss, calibrated on the selection pairs as the circuit itself is."""
    other = OTHER_ABLATION[ablation]
    return {
        "other_ablation": other,
        "other_ablation_loss": calibrated_loss(
            circuit_space(run, other, **space.options), keep, splits.select, splits.test
        ),
    }
