"""Trim a found circuit node by node.

The top-k search keeps a whole prefix of the mask ranking, so the circuit it returns still
holds nodes ranked above the last one it needed that the task does not use. Trimming tries to
drop each kept node in turn (the least trusted and most connected first), cleans the circuit of
the nodes the drop leaves idle, and keeps the drop when the selection loss stays at least
`margin` below the target: a drop accepted right at the target would fit the noise of the
selection pairs. It records how much each accepted drop raised the loss, its "need", so that
verification can restore the most needed nodes first if the circuit fails on other pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.prune import Measured, measure_cleaned
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.tasks import TaskBatch


@dataclass
class Drop:
    nodes: list[int]  # the node tried and the nodes its removal left idle
    need: float  # how much the selection loss rose


@dataclass
class TrimResult:
    circuit: Measured
    drops: list[Drop]  # in the order they were made
    tried: int  # drops evaluated
    rejected_losses: list[float] = field(default_factory=list)  # of drops that broke the target
    seconds: float = 0.0


def trim_order(keep: torch.Tensor, scores: torch.Tensor, degrees: torch.Tensor) -> list[int]:
    """Kept nodes, lowest mask score first; among equal scores, the most connected first."""
    kept = keep.nonzero().flatten().tolist()
    return sorted(kept, key=lambda i: (float(scores[i]), -int(degrees[i])))


def trim_circuit(
    measure: Callable[[torch.Tensor], Measured],
    circuit: Measured,
    order: list[int],
    target_loss: float,
    margin: float,
    tries: int | None = None,
) -> TrimResult:
    """Drop nodes of `circuit` (tried in `order`, at most `tries` of them) while
    `measure(keep)` stays within target - margin (or within the circuit's own loss, if that is
    already above it)."""
    bound = max(target_loss - margin, circuit.loss)
    drops, rejected, tried = [], [], 0
    for node in order:
        if tries is not None and tried >= tries:
            break
        if not circuit.keep[node]:
            continue  # an earlier drop left it idle
        trial = circuit.keep.clone()
        trial[node] = False
        tried += 1
        candidate = measure(trial)
        if candidate.loss <= bound:
            removed = (circuit.keep & ~candidate.keep).nonzero().flatten().tolist()
            drops.append(Drop(removed, candidate.loss - circuit.loss))
            circuit = candidate
        else:
            rejected.append(candidate.loss)
    return TrimResult(circuit, drops, tried, rejected)


def trim_found_circuit(
    space: CircuitSpace,
    circuit: Measured,
    scores: torch.Tensor,
    select: TaskBatch,
    config: PruneConfig,
) -> TrimResult:
    """`circuit` with the nodes the task does not need dropped."""
    order = trim_order(circuit.keep, scores, space.degrees(circuit.keep))
    return trim_circuit(
        lambda keep: measure_cleaned(space, keep, select, config.clean_up),
        circuit,
        order,
        config.target_loss,
        config.trim_margin,
        config.trim_tries,
    )
