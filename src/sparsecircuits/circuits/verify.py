"""Confirm a chosen circuit on pairs nothing was chosen on, growing it back if it fails.

The k search and trimming judge hundreds of candidate circuits on the same selection pairs and
keep whatever still meets the target there, so a circuit they return can sit above the target
on other pairs. Verification measures the circuit on separate pairs, with the calibration
fitted on the selection pairs, and if it misses the target walks along a chain of nested,
growing circuits: the trimmed circuit, then trimming's drops undone by need (the drop that
raised the selection loss most comes back first), then the untrimmed circuit grown by the mask
ranking up to every node. It keeps the first link of that chain that meets the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sparsecircuits.circuits.cleanup import remove_idle_nodes
from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.prune import (
    Calibration,
    calibrated_pair_losses,
    smallest_k_meeting_target,
)
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.circuits.trim import Drop
from sparsecircuits.tasks import TaskBatch


@dataclass
class Verification:
    keep: torch.Tensor
    calibration: Calibration
    summary: dict  # "loss" is the loss on the verification pairs of the circuit kept


class GrowthChain:
    """Nested circuits from a trimmed circuit up to every node.

    Link 0 is the trimmed circuit; the next links undo trimming's drops, most needed first
    (or, without `by_need`, the last drop first);
    the links after those add the remaining nodes by the mask ranking. Links are built when
    asked for: a model can have 10^5 nodes.
    """

    def __init__(
        self,
        trimmed: torch.Tensor,
        drops: list[Drop],
        ranking: torch.Tensor,
        by_need: bool = True,
    ) -> None:
        self.trimmed = trimmed
        ordered = sorted(drops, key=lambda drop: -drop.need) if by_need else drops[::-1]
        self.restores = [drop.nodes for drop in ordered]
        untrimmed = trimmed.clone()
        for nodes in self.restores:
            untrimmed[nodes] = True
        self.additions = ranking[~untrimmed[ranking]]

    def __len__(self) -> int:
        return 1 + len(self.restores) + len(self.additions)

    def __getitem__(self, link: int) -> torch.Tensor:
        keep = self.trimmed.clone()
        for nodes in self.restores[:link]:
            keep[nodes] = True
        keep[self.additions[: max(0, link - len(self.restores))]] = True
        return keep


@torch.no_grad()
def verify_circuit(
    space: CircuitSpace,
    chain: GrowthChain,
    select: TaskBatch,
    verify: TaskBatch,
    config: PruneConfig,
) -> Verification:
    """The first circuit of `chain` (roughly: the smallest) meeting the target on `verify`.

    If none does, the one with the lowest verification loss, with `summary["met"]` False.
    """
    started = time.perf_counter()
    # link (1-based, as the k search counts) -> circuit, calibration and per-pair losses
    fitted: dict[int, tuple[torch.Tensor, Calibration, torch.Tensor]] = {}

    def loss_at(link: int) -> float:
        keep = chain[link - 1]
        keep = remove_idle_nodes(space, keep) if config.clean_up else keep
        fitted[link] = (keep, *calibrated_pair_losses(space, keep, select, verify))
        return float(fitted[link][2].mean())

    # The chain grows by one node a link at first: doubling the step keeps the checks few.
    link = smallest_k_meeting_target(loss_at, len(chain), config.target_loss, growth=2.0)
    keep, calibration, pair_losses = fitted[link]
    loss = float(pair_losses.mean())
    summary = {
        "pairs": verify.n_pairs,
        "loss_as_chosen": float(fitted[1][2].mean()),
        "loss": loss,
        # Per-pair losses are heavy-tailed (most near 0, a few near 2): the mean of a few
        # hundred pairs moves by this much from one draw of pairs to the next.
        "loss_stderr": (
            float(pair_losses.std() / pair_losses.numel() ** 0.5)
            if pair_losses.numel() > 1
            else None
        ),
        "met": loss <= config.target_loss,
        "nodes_added": int(keep.sum() - fitted[1][0].sum()),
        "checks": len(fitted),
        "seconds": time.perf_counter() - started,
    }
    return Verification(keep, calibration, summary)
