"""Schedules of training: the kept fraction (L0 annealing) and the sharkfin learning rate."""

from __future__ import annotations

import math


def kept_fraction(step: int, total_steps: int, target: float, anneal_end: float = 0.5) -> float:
    """Kept fraction of weights at `step`: linear from 1 (dense) to `target` over the first
    `anneal_end` of training, then constant."""
    anneal_steps = max(1, round(anneal_end * total_steps))
    progress = min(1.0, step / anneal_steps)
    return 1.0 + (target - 1.0) * progress


def warmup_then_linear_decay(step: int, total_steps: int, warmup_frac: float = 0.01) -> float:
    """Multiplier in [0, 1]: linear warmup, then linear decay to 0 at the end."""
    warmup = max(1, round(warmup_frac * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def sharkfin_learning_rate(
    step: int,
    total_steps: int,
    base_lr: float,
    target: float,
    current: float,
    warmup_frac: float = 0.01,
) -> float:
    """The usual schedule times sqrt(target / current kept fraction): the learning rate grows
    like 1/sqrt(L0) while the model anneals to its target sparsity."""
    return (
        base_lr
        * warmup_then_linear_decay(step, total_steps, warmup_frac)
        * math.sqrt(target / current)
    )
