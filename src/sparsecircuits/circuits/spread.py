"""Spreads instead of best cases: circuit sizes as medians with ranges over pruning seeds, and
ratios of sizes with bootstrap intervals over tasks and seeds.

A ratio of two models' circuit sizes is the geometric mean over tasks of the ratio of their
median sizes. Its interval resamples both levels of the experiment: the tasks (with
replacement), and within each drawn task each model's seeds (with replacement), so a ratio
resting on a few tasks or on seeds that disagree gets a wide interval.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

BOOTSTRAP_DRAWS = 2000
INTERVAL_LEVEL = 0.9


def geometric_mean(values: Sequence[float]) -> float | None:
    """exp(mean(log v)), each value counted as at least 1 (a circuit has at least one edge)."""
    if not values:
        return None
    return math.exp(sum(math.log(max(v, 1)) for v in values) / len(values))


def median_range(values: Sequence[float]) -> dict:
    """{"median", "min", "max", "n"} of the values of one measurement over seeds."""
    if not values:
        raise ValueError("no values to summarise")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float
    low: float  # the bootstrap interval's ends, at INTERVAL_LEVEL
    high: float
    tasks: int
    seeds: int  # the fewest seeds any model has on any task

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        level = round(100 * INTERVAL_LEVEL)
        return (
            f"{self.ratio:.1f}x ({level}% bootstrap interval {self.low:.1f}x-{self.high:.1f}x; "
            f"{self.tasks} tasks, >= {self.seeds} seeds each)"
        )


def size_ratio(numerator: dict[str, list[float]], denominator: dict[str, list[float]]) -> float:
    """Geometric mean over the tasks of both of median(numerator) / median(denominator)."""
    tasks = shared_tasks(numerator, denominator)
    logs = [log_ratio(numerator[task], denominator[task]) for task in tasks]
    return math.exp(statistics.fmean(logs))


def bootstrap_size_ratio(
    numerator: dict[str, list[float]],
    denominator: dict[str, list[float]],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> RatioEstimate:
    """The size ratio with its interval: tasks resampled, then each model's seeds per task."""
    tasks = shared_tasks(numerator, denominator)
    rng = random.Random(seed)
    resampled = []
    for _ in range(draws):
        logs = []
        for task in rng.choices(tasks, k=len(tasks)):
            top, bottom = numerator[task], denominator[task]
            logs.append(log_ratio(rng.choices(top, k=len(top)), rng.choices(bottom, k=len(bottom))))
        resampled.append(math.exp(statistics.fmean(logs)))
    tail = (1 - INTERVAL_LEVEL) / 2
    low, high = quantile(resampled, tail), quantile(resampled, 1 - tail)
    seeds = min(len(sizes[task]) for sizes in (numerator, denominator) for task in tasks)
    return RatioEstimate(size_ratio(numerator, denominator), low, high, len(tasks), seeds)


def shared_tasks(numerator: dict[str, list[float]], denominator: dict[str, list[float]]) -> list:
    tasks = [task for task in numerator if numerator[task] and denominator.get(task)]
    if not tasks:
        raise ValueError("the two models have no task measured on both")
    return tasks


def log_ratio(top: Sequence[float], bottom: Sequence[float]) -> float:
    return math.log(max(statistics.median(top), 1)) - math.log(max(statistics.median(bottom), 1))


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
