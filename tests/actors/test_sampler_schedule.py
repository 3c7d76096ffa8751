"""The drift-free schedule: pure slot arithmetic, then the Sampler's ticks on the fake clock."""

from __future__ import annotations

import math

import pytest

from actors.sampler.schedule import DriftFreeSchedule, percentile
from runtime.clock import FakeClock

from .test_sampler_kit import FakeCollector, SlowOffload, config_with, running_sampler


def test_slots_are_due_at_start_plus_i_intervals_without_accumulated_error() -> None:
    """Slot i is due at exactly start + i * interval, even after 100,000 slots of 0.1 s."""
    schedule = DriftFreeSchedule(5.0, 0.1)
    summed = 5.0
    for i in range(1, 100_001):
        slot = schedule.next_slot(schedule.due_s(i))
        summed += 0.1
        assert slot.number == i
        assert slot.due_s == 5.0 + i * 0.1
    assert abs(summed - slot.due_s) > 1e-9  # a running sum would have drifted
    assert schedule.skipped == 0


def test_an_early_call_returns_the_next_slot_in_the_future() -> None:
    """Asked before the next slot is due, the schedule names that slot (the caller waits)."""
    schedule = DriftFreeSchedule(0.0, 1.0)
    slot = schedule.next_slot(0.2)
    assert (slot.number, slot.due_s, slot.skipped) == (1, 1.0, 0)


def test_a_late_slot_does_not_shift_the_slots_after_it() -> None:
    """A slot taken late (within its own interval) leaves the next one at its due time."""
    schedule = DriftFreeSchedule(0.0, 1.0)
    first = schedule.next_slot(1.7)  # slot 1 runs 0.7 s late
    second = schedule.next_slot(1.75)  # its work is done: slot 2 is still due at 2.0
    assert (first.number, first.due_s, first.skipped) == (1, 1.0, 0)
    assert (second.number, second.due_s, second.skipped) == (2, 2.0, 0)


def test_an_overrun_skips_the_covered_slots_and_counts_them() -> None:
    """Work that overran two whole slots resumes in the slot the clock is in; two skipped."""
    schedule = DriftFreeSchedule(0.0, 1.0)
    schedule.next_slot(1.0)
    slot = schedule.next_slot(4.5)  # slot 1's work ended at 4.5: slots 2 and 3 are over
    assert (slot.number, slot.due_s, slot.skipped) == (4, 4.0, 2)
    assert schedule.next_slot(4.6).due_s == 5.0
    assert schedule.skipped == 2


def test_a_tick_exactly_on_a_due_time_is_not_rounded_into_the_previous_slot() -> None:
    """Float rounding of (due - start) / interval does not turn an on-time tick into a skip."""
    schedule = DriftFreeSchedule(0.0, 0.1)
    schedule.next_slot(0.1)
    schedule.next_slot(0.2)
    slot = schedule.next_slot(0.1 * 3)  # 0.30000000000000004 / 0.1 < 3 without care
    assert (slot.number, slot.skipped) == (3, 0)


@pytest.mark.parametrize("interval_s", [0.0, -1.0, math.nan, math.inf])
def test_an_interval_that_is_not_positive_and_finite_is_refused(interval_s: float) -> None:
    """A zero, negative, NaN or infinite interval raises ValueError naming interval_s."""
    with pytest.raises(ValueError, match="interval_s must be a positive number"):
        DriftFreeSchedule(0.0, interval_s)


def test_percentile_is_the_nearest_rank() -> None:
    """p50 and p99 by nearest rank; 0.0 for no values; a fraction outside 0..1 is refused."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    with pytest.raises(ValueError, match=r"fraction must be within 0\.\.1"):
        percentile(values, 1.5)


# -- the Sampler's ticks on the fake clock ----------------------------------------------------


async def test_samples_are_taken_at_start_plus_i_intervals(clock: FakeClock) -> None:
    """Started at t=0 with a 1 s interval, samples are taken at 1, 2, 3, 4 and 5 s."""
    collector = FakeCollector()
    async with running_sampler(clock, collector):
        await clock.advance(5.0)
    assert collector.primed == [0.0]
    assert collector.taken == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_a_slow_sample_does_not_shift_the_samples_after_it(clock: FakeClock) -> None:
    """A collection taking 0.6 s at t=2 leaves the next samples at 3, 4, 5 s."""
    collector = FakeCollector()
    offload = SlowOffload(clock, {2: 0.6})
    async with running_sampler(clock, collector, offload=offload) as sampler:
        await clock.advance(5.0)
        stats = sampler.statistics()
    assert collector.taken == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.skipped == 0
    assert stats.collect_max_ms == pytest.approx(600.0)


async def test_a_sample_late_within_its_slot_runs_late_then_the_schedule_resumes(
    clock: FakeClock,
) -> None:
    """A 1.5 s collection at t=1 makes slot 2 run at 2.5 (0.5 s late), slot 3 at 3.0."""
    collector = FakeCollector()
    offload = SlowOffload(clock, {1: 1.5})
    async with running_sampler(clock, collector, offload=offload) as sampler:
        await clock.advance(4.0)
        stats = sampler.statistics()
    assert collector.taken == [1.0, 2.5, 3.0, 4.0]
    assert stats.skipped == 0
    assert stats.lateness_max_ms == pytest.approx(500.0)
    assert stats.lateness_p50_ms == 0.0


async def test_an_overrun_skips_missed_slots_and_counts_them(clock: FakeClock) -> None:
    """A 2.7 s collection at t=1 ends at 3.7, past slot 2: slot 2 is skipped (counted), slot 3
    runs at once, slot 4 at its due time 4.0."""
    collector = FakeCollector()
    offload = SlowOffload(clock, {1: 2.7})
    async with running_sampler(clock, collector, offload=offload) as sampler:
        await clock.advance(5.0)
        stats = sampler.statistics()
    assert collector.taken == [1.0, 3.7, 4.0, 5.0]
    assert stats.skipped == 1
    assert stats.samples == 4


async def test_an_interval_change_applies_from_the_next_tick(clock: FakeClock) -> None:
    """Reloading interval_ms from 1000 to 250 at t=1.5: the tick at 2.0 still runs, then every
    0.25 s from it."""
    collector = FakeCollector()
    async with running_sampler(clock, collector) as sampler:
        await clock.advance(1.5)
        assert sampler.apply_config(config_with(interval_ms=250)) == []
        await clock.advance(1.0)
    assert collector.taken == [1.0, 2.0, 2.25, 2.5]
