"""Trim a found circuit node by node, within a time budget.

The top-k search keeps a whole prefix of the mask ranking, so the circuit it returns still
holds every node ranked above the last one it needed: nodes the short mask training left on
but the task does not use. Trimming tries to drop each kept node in turn (the least trusted and
most connected first) and keeps the drop whenever the held-out loss still meets the target.
It never takes the held-out loss past the target and stops at its deadline. Every drop is
accepted on the same held-out pairs, so many drops fit their noise: circuits.verify checks the
result on other pairs and undoes drops, the last first, until it meets the target there too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sparsecircuits.circuits.edges import circuit_edges
from sparsecircuits.circuits.nodes import NodeGroup
from sparsecircuits.model import GPT


@dataclass
class TrimResult:
    keep: torch.Tensor
    loss: float  # held-out loss of the trimmed circuit
    drops: list[int]  # nodes removed, in the order they were
    tried: int  # drops evaluated
    finished: bool  # every kept node was tried before the deadline
    rejected_losses: list[float]  # held-out loss of each drop that broke the target
    seconds: float = 0.0


def node_degrees(model: GPT, groups: list[NodeGroup], keep: torch.Tensor) -> torch.Tensor:
    """Number of circuit edges touching each node (zero outside the circuit)."""
    ids = [group.node_id(i) for group in groups for i in range(group.width)]
    position = {node: index for index, node in enumerate(ids)}
    counts = Counter()
    for edge in circuit_edges(model, groups, keep):
        counts[edge.source] += 1
        counts[edge.target] += 1
    degrees = torch.zeros(len(ids), dtype=torch.long)
    for node, count in counts.items():
        degrees[position[node]] = count
    return degrees


def trim_order(keep: torch.Tensor, scores: torch.Tensor, degrees: torch.Tensor) -> list[int]:
    """Kept nodes, lowest mask score first; among equal scores, the most connected first."""
    kept = keep.nonzero().flatten().tolist()
    return sorted(kept, key=lambda i: (float(scores[i]), -int(degrees[i])))


def trim_circuit(
    loss_of: Callable[[torch.Tensor], float],
    keep: torch.Tensor,
    order: list[int],
    target_loss: float,
    deadline: float,
    loss: float,
) -> TrimResult:
    """Drop nodes of `keep` (tried in `order`) while `loss_of(keep)` stays within the target.

    `loss` is the loss of `keep` as given; `deadline` is a `time.perf_counter()` value.
    """
    keep = keep.clone()
    drops, rejected = [], []
    tried = 0
    for node in order:
        if time.perf_counter() > deadline:
            return TrimResult(keep, loss, drops, tried, False, rejected)
        keep[node] = False
        tried += 1
        trial_loss = loss_of(keep)
        if trial_loss <= target_loss:
            loss = trial_loss
            drops.append(node)
        else:
            keep[node] = True
            rejected.append(trial_loss)
    return TrimResult(keep, loss, drops, tried, True, rejected)
