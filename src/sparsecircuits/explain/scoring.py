"""Scores of an explanation: how well its simulation matches the unit's true activations.

- correlation: Pearson's r of true against simulated activations over every token of every
  scored excerpt concatenated (the paper's score). None when the true activations are constant
  (nothing to predict); 0 when the simulation is constant but the truth is not.
- explained variance: 1 - Var(a - s') / Var(a), s' = alpha s + beta the least-squares affine
  calibration of the simulation onto the truth, alpha >= 0 (a calibration may rescale an
  explanation, not turn it upside down). Fitted on the same tokens it equals r^2 for r > 0 and
  0 otherwise: it says no more than r, and is kept because the paper reports it.
- detection and fuzzing (delphi): can the simulation tell activating excerpts from others, and
  truly active tokens from random ones? Balanced accuracy, from the simulation alone.
The ablation score, which needs the model, is in explain.ablation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

# An excerpt "activates" the unit when its max reaches this fraction of the unit's max; a token
# is "active" likewise (the paper's 0..10 scale: 2 and up).
ACTIVE_FRACTION = 0.2


def correlation(
    true: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]]
) -> float | None:
    pair = comparable(true, simulated)
    if pair is None or not isinstance(pair, tuple):
        return pair
    return float(torch.corrcoef(torch.stack(pair))[0, 1])


def explained_variance(
    true: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]]
) -> float | None:
    pair = comparable(true, simulated)
    if pair is None or not isinstance(pair, tuple):
        return pair
    a, s = pair
    alpha = max(0.0, float(((s - s.mean()) * (a - a.mean())).mean() / s.var(unbiased=False)))
    calibrated = alpha * s + (a.mean() - alpha * s.mean())
    return float(1 - (a - calibrated).var(unbiased=False) / a.var(unbiased=False))


def comparable(
    true: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]]
) -> tuple[torch.Tensor, torch.Tensor] | float | None:
    """Both as flat tensors; or the score itself where it is fixed: None when the truth is
    constant (nothing to predict), 0 when only the simulation is."""
    a, s = flatten(true), flatten(simulated)
    if len(a) < 2 or float(a.std()) == 0:
        return None
    if float(s.std()) == 0:
        return 0.0
    return a, s


def flatten(rows: Sequence[Sequence[float]]) -> torch.Tensor:
    return torch.tensor([value for row in rows for value in row], dtype=torch.float64)


def to_scale(activations: Sequence[float], max_activation: float) -> list[int]:
    """The paper's 0..10 scale: negative -> 0, the unit's max -> 10, floor in between."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [min(10, math.floor(10 * max(0.0, a) / max_activation)) for a in activations]


def detection_score(
    true: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]], max_activation: float
) -> float | None:
    """Balanced accuracy of "this excerpt activates" predicted by the simulation's max, its
    threshold chosen as the median simulated max (no tuning on the truth)."""
    truth = [max(row) >= ACTIVE_FRACTION * max_activation for row in true]
    if all(truth) or not any(truth):
        return None
    peaks = [max(row) if len(row) else 0.0 for row in simulated]
    threshold = sorted(peaks)[len(peaks) // 2]
    predicted = [peak > threshold or (peak == threshold and peak > 0) for peak in peaks]
    return balanced_accuracy(truth, predicted)


def fuzzing_score(
    true: Sequence[Sequence[float]],
    simulated: Sequence[Sequence[float]],
    max_activation: float,
    seed: int = 0,
) -> float | None:
    """Each activating excerpt is shown twice: once with its truly active tokens highlighted,
    once with as many random other tokens highlighted. The simulation "says correct" when its
    mean at the highlighted tokens is above its mean elsewhere. Balanced accuracy."""
    generator = random.Random(seed)
    truth, predicted = [], []
    for row_true, row_sim in zip(true, simulated, strict=True):
        active = [i for i, a in enumerate(row_true) if a >= ACTIVE_FRACTION * max_activation]
        inactive = [i for i in range(len(row_true)) if i not in active]
        if not active or len(inactive) < len(active):
            continue
        for correct, marked in ((True, active), (False, generator.sample(inactive, len(active)))):
            rest = [row_sim[i] for i in range(len(row_sim)) if i not in marked]
            inside = sum(row_sim[i] for i in marked) / len(marked)
            outside = sum(rest) / len(rest) if rest else 0.0
            truth.append(correct)
            predicted.append(inside > outside)
    if not truth:
        return None
    return balanced_accuracy(truth, predicted)


def balanced_accuracy(truth: list[bool], predicted: list[bool]) -> float:
    positives = [p for t, p in zip(truth, predicted, strict=True) if t]
    negatives = [not p for t, p in zip(truth, predicted, strict=True) if not t]
    rates = [sum(group) / len(group) for group in (positives, negatives) if group]
    return sum(rates) / len(rates)
