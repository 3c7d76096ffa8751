"""The latency histogram: sub-millisecond resolution, percentile accuracy, merging, export."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from actors.profiler.histogram import (
    BUCKET_BOUNDS_S,
    BUCKETS_PER_DECADE,
    LatencyHistogram,
    LatencySummary,
)

BUCKET_RATIO = 10 ** (1 / BUCKETS_PER_DECADE)  # how much wider each bucket is than the last


def filled(values: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    return histogram


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def test_bounds_are_log_spaced_with_exact_decades() -> None:
    """Bounds run from 1 µs to 1000 s, 20 per decade, each ~12% above the last, decades exact."""
    assert BUCKET_BOUNDS_S[0] == 1e-6 and BUCKET_BOUNDS_S[-1] == 1000.0
    assert len(BUCKET_BOUNDS_S) == 9 * BUCKETS_PER_DECADE + 1
    assert {1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0} <= set(BUCKET_BOUNDS_S)
    ratios = [b / a for a, b in itertools.pairwise(BUCKET_BOUNDS_S)]
    assert all(abs(r - BUCKET_RATIO) < 1e-4 for r in ratios)


def test_a_single_value_is_reported_exactly() -> None:
    """One sample: every percentile is that sample (clamped to the exact min and max)."""
    summary = filled([0.000237]).summary()
    assert summary.count == 1
    assert summary.p50_ms == summary.p99_ms == summary.max_ms == summary.min_ms == 0.237


def test_two_tenths_and_four_tenths_of_a_millisecond_are_told_apart() -> None:
    """0.2 ms and 0.4 ms land in different buckets; p25 and p75 come out near each."""
    histogram = filled([0.0002] * 500 + [0.0004] * 500)
    assert histogram.percentile(25) * 1000 == pytest.approx(0.2, rel=0.13)
    assert histogram.percentile(75) * 1000 == pytest.approx(0.4, rel=0.13)
    assert histogram.percentile(75) > 1.5 * histogram.percentile(25)
    cumulative = dict(histogram.cumulative_buckets())
    assert cumulative[2.51189e-4] == 500  # every 0.2 ms value is <= 0.25 ms, no 0.4 ms one is


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("uniform 0-10 ms", lambda rng: rng.uniform(0.0, 0.010)),
        ("exponential, mean 1 ms", lambda rng: rng.expovariate(1000.0)),
        ("log-normal, 10 µs to seconds", lambda rng: rng.lognormvariate(math.log(0.002), 2.0)),
        ("sub-millisecond, 50-900 µs", lambda rng: rng.uniform(0.00005, 0.0009)),
    ],
)
def test_percentiles_are_within_a_bucket_of_the_exact_ones(name: str, draw: object) -> None:
    """On known distributions p50/p95/p99 are within one bucket's width (12%) of the exact
    nearest-rank percentiles, and max is exact."""
    rng = random.Random(1234)
    values = [draw(rng) for _ in range(20_000)]  # type: ignore[operator]
    histogram = filled(values)
    for q in (50, 95, 99):
        assert histogram.percentile(q) == pytest.approx(nearest_rank(values, q), rel=0.122), q
    assert histogram.max_s == max(values)
    assert histogram.sum_s == pytest.approx(sum(values))


def test_merging_equals_recording_everything_in_one() -> None:
    """Two halves merged give the same counts and percentiles as one histogram of all."""
    rng = random.Random(5)
    values = [rng.expovariate(200.0) for _ in range(4000)]
    left, right = filled(values[:1500]), filled(values[1500:])
    whole = filled(values)
    merged = LatencyHistogram.merged([left, right])
    assert merged.cumulative_buckets() == whole.cumulative_buckets()
    for q in (50, 95, 99):
        assert merged.percentile(q) == whole.percentile(q)
    assert merged.sum_s == pytest.approx(whole.sum_s)
    assert (merged.min_s, merged.max_s, merged.count) == (whole.min_s, whole.max_s, whole.count)
    assert left.count == 1500  # merging leaves its inputs alone


def test_copy_is_independent() -> None:
    """A copy has the same counts and does not change when the original does."""
    original = filled([0.001, 0.002])
    twin = original.copy()
    original.record(0.5)
    assert twin.count == 2 and twin.max_s == 0.002


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf, -math.inf])
def test_invalid_latencies_are_refused_and_change_nothing(bad: float) -> None:
    """Negative, NaN and infinite values raise ValueError naming the value; nothing counted."""
    histogram = filled([0.001])
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        histogram.record(bad)
    assert histogram.count == 1 and histogram.cumulative_buckets()[-1] == (math.inf, 1)


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_outside_0_to_100_is_refused(q: float) -> None:
    """percentile() raises ValueError for q outside [0, 100]."""
    with pytest.raises(ValueError, match="q must be a percentile"):
        filled([0.001]).percentile(q)


def test_an_empty_histogram_reads_zero() -> None:
    """No samples: percentiles are 0.0 and the summary is all zeros."""
    histogram = LatencyHistogram()
    assert histogram.percentile(99) == 0.0
    assert histogram.summary() == LatencySummary()


def test_percentile_0_and_100_are_the_exact_min_and_max() -> None:
    """q=0 gives the smallest value, q=100 the largest, exactly."""
    histogram = filled([0.0031, 0.0007, 0.0123])
    assert histogram.percentile(0) == 0.0007
    assert histogram.percentile(100) == 0.0123


def test_values_beyond_the_last_bound_count_in_the_overflow_bucket() -> None:
    """Above 1000 s a value is counted only in +Inf; its percentile is the exact maximum."""
    histogram = filled([0.001, 2000.0])
    buckets = histogram.cumulative_buckets()
    assert buckets[-2] == (1000.0, 1) and buckets[-1] == (math.inf, 2)
    assert histogram.percentile(100) == 2000.0
    assert histogram.percentile(99) == pytest.approx(2000.0, rel=0.5)


def test_cumulative_buckets_export_for_prometheus() -> None:
    """Cumulative counts never decrease, end at (inf, count), and a coarser export (every 5th
    bound: 4 per decade) agrees with the full one at the bounds it keeps."""
    histogram = filled([0.00002, 0.0003, 0.0003, 0.004, 0.05, 0.6])
    full = histogram.cumulative_buckets()
    counts = [c for _, c in full]
    assert counts == sorted(counts) and full[-1] == (math.inf, 6)
    coarse = histogram.cumulative_buckets(every=5)
    assert len(coarse) == 9 * 4 + 2
    assert all(dict(full)[le] == count for le, count in coarse)
    assert dict(coarse)[1e-3] == 3


@pytest.mark.parametrize("every", [0, 3, 7])
def test_a_coarser_export_must_divide_a_decade(every: int) -> None:
    """cumulative_buckets(every) raises ValueError unless every divides 20."""
    with pytest.raises(ValueError, match="every must divide 20"):
        LatencyHistogram().cumulative_buckets(every=every)


def test_summary_is_in_milliseconds() -> None:
    """The summary reports count, mean, min, percentiles and max in milliseconds."""
    summary = filled([0.001, 0.003]).summary()
    assert summary.count == 2
    assert summary.mean_ms == pytest.approx(2.0)
    assert (summary.min_ms, summary.max_ms) == (1.0, 3.0)
    assert summary.p99_ms == pytest.approx(3.0, rel=0.13)
