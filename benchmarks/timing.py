"""Timing shared by the benchmarks, including those run in other venvs (plain Python and time
only, no sparsecircuits import)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(
    steps: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall time of each step over `repeats` rounds after `warmup` untimed ones; the
    steps take turns within a round, so machine noise hits them alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
