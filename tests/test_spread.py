"""Medians, ranges and bootstrap intervals of circuit-size ratios (circuits.spread), on sizes
whose answer is known by arithmetic."""

from __future__ import annotations

import math

import pytest

from sparsecircuits.circuits.spread import (
    bootstrap_size_ratio,
    geometric_mean,
    median_range,
    quantile,
    size_ratio,
)


def test_median_range_of_seeds() -> None:
    assert median_range([30, 10, 20]) == {"median": 20, "min": 10, "max": 30, "n": 3}
    with pytest.raises(ValueError):
        median_range([])


def test_the_ratio_is_the_geometric_mean_of_median_ratios_over_shared_tasks() -> None:
    dense = {"a": [10, 10, 90], "b": [40], "only_dense": [1000]}
    sparse = {"a": [5, 5, 5], "b": [10], "only_sparse": [1]}
    # Task a: median 10 / 5 = 2; task b: 4; tasks measured on one side only do not count.
    assert size_ratio(dense, sparse) == pytest.approx(math.sqrt(8))
    with pytest.raises(ValueError, match="no task"):
        size_ratio({"a": [1]}, {"b": [1]})


def test_the_interval_is_a_point_only_where_every_seed_agrees() -> None:
    sparse = {task: [10, 20, 30] for task in "abcd"}  # median 20
    dense = {task: [50, 60, 70] for task in "abcd"}  # median 60: 3x on every task...
    estimate = bootstrap_size_ratio(dense, sparse, draws=200)
    # ...but a resample of the seeds can move a median (e.g. [10, 10, 30]): not exactly 3.
    assert estimate.low < 3.0 < estimate.high
    exact = bootstrap_size_ratio({t: [60] * 3 for t in dense}, {t: [20] * 3 for t in sparse})
    assert (exact.ratio, exact.low, exact.high) == pytest.approx((3.0, 3.0, 3.0))
    assert estimate.ratio == pytest.approx(3.0)
    assert (estimate.tasks, estimate.seeds) == (4, 3)


def test_disagreeing_tasks_widen_the_interval_around_the_estimate() -> None:
    sparse = {task: [10, 10, 10] for task in "abcdef"}
    factors = dict(zip("abcdef", (1, 2, 4, 8, 16, 32), strict=True))
    dense = {task: [10 * factor] * 3 for task, factor in factors.items()}
    estimate = bootstrap_size_ratio(dense, sparse, draws=500)
    assert estimate.low < estimate.ratio < estimate.high
    assert estimate.low >= 1 and estimate.high <= 32  # never outside the per-task ratios
    assert estimate.ratio == pytest.approx(geometric_mean([1, 2, 4, 8, 16, 32]))
    # The same draws on the same data give the same interval.
    assert bootstrap_size_ratio(dense, sparse, draws=500) == estimate


def test_disagreeing_seeds_widen_the_interval_of_a_single_task() -> None:
    sparse = {"a": [10, 10, 10]}
    steady = bootstrap_size_ratio({"a": [50, 50, 50]}, sparse, draws=300)
    noisy = bootstrap_size_ratio({"a": [10, 50, 250]}, sparse, draws=300)
    assert steady.low == pytest.approx(5.0) and steady.high == pytest.approx(5.0)
    assert noisy.low < 5.0 < noisy.high


def test_quantile_interpolates_between_order_statistics() -> None:
    assert quantile([4, 1, 3, 2], 0.5) == 2.5
    assert quantile([1, 2, 3], 0.0) == 1 and quantile([1, 2, 3], 1.0) == 3
