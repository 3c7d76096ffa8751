"""Clocks: the fake clock's timers, sleeps and scopes, settle(), and the real clock's basics."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from runtime.clock import Clock, FakeClock, RealClock, settle


def sleeper(
    clock: FakeClock, seconds: float, log: list[tuple[str, float]], name: str
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A task that sleeps ``seconds`` on the clock, then logs its name and the time it woke."""

    async def run() -> None:
        await clock.sleep(seconds)
        log.append((name, clock.now()))

    return run


# -- now and wall -----------------------------------------------------------------------------


async def test_fake_clock_reads_its_start_and_moves_only_when_advanced() -> None:
    """now() and wall() start where told, stay put, and move together by what advance says."""
    clock = FakeClock(10.0, wall_start=1_000.0)
    assert (clock.now(), clock.wall()) == (10.0, 1_000.0)
    await settle()
    assert clock.now() == 10.0
    await clock.advance(2.5)
    assert (clock.now(), clock.wall()) == (12.5, 1_002.5)


async def test_default_fake_clock_starts_at_zero_with_a_plausible_wall_time(
    clock: FakeClock,
) -> None:
    """The default fake clock reads 0 s monotonic and a 2027 wall time."""
    assert clock.now() == 0.0
    assert time.gmtime(clock.wall()).tm_year == 2027


# -- sleep ------------------------------------------------------------------------------------


async def test_sleep_wakes_exactly_at_its_deadline_and_not_before(clock: FakeClock) -> None:
    """A sleep of 1 s is still asleep just before t=1 and wakes at t=1 exactly."""
    log: list[tuple[str, float]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper(clock, 1.0, log, "a"))
        await clock.advance_to(math.nextafter(1.0, 0.0))
        assert log == []
        await clock.advance_to(1.0)
        assert log == [("a", 1.0)]


async def test_a_woken_sleeper_sees_its_deadline_even_when_advance_goes_further(
    clock: FakeClock,
) -> None:
    """Timers fire with the clock set to their own deadline, not to the end of the advance."""
    log: list[tuple[str, float]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper(clock, 1.0, log, "a"))
        await clock.advance(5.0)
    assert log == [("a", 1.0)]
    assert clock.now() == 5.0


async def test_timers_fire_in_deadline_order_with_tasks_settling_between(
    clock: FakeClock,
) -> None:
    """Within one advance, timers fire by deadline, and a woken task's next sleep is honoured."""
    log: list[tuple[str, float]] = []

    async def twice() -> None:
        await clock.sleep(1.0)
        log.append(("twice-1", clock.now()))
        await clock.sleep(0.5)  # due at 1.5: before the timer at 2 that is already queued
        log.append(("twice-2", clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper(clock, 3.0, log, "three"))
        tg.start_soon(sleeper(clock, 2.0, log, "two"))
        tg.start_soon(twice)
        await clock.advance(10.0)
    assert log == [("twice-1", 1.0), ("twice-2", 1.5), ("two", 2.0), ("three", 3.0)]


async def test_equal_deadlines_fire_in_the_order_they_were_set(clock: FakeClock) -> None:
    """Two timers due at the same time fire first-come first-served."""
    fired: list[str] = []
    clock.call_at(1.0, lambda: fired.append("first"))
    clock.call_at(1.0, lambda: fired.append("second"))
    clock.call_at(0.5, lambda: fired.append("earlier"))
    await clock.advance(1.0)
    assert fired == ["earlier", "first", "second"]


async def test_sleep_of_zero_or_into_the_past_returns_without_a_timer(clock: FakeClock) -> None:
    """sleep(0), a negative sleep and sleep_until a past deadline return without moving time."""
    await clock.advance(5.0)
    done: list[str] = []

    async def run() -> None:
        await clock.sleep(0)
        await clock.sleep(-1.0)
        await clock.sleep_until(4.0)
        done.append("done")

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await settle()
        assert clock.pending_timers == 0
    assert done == ["done"] and clock.now() == 5.0


async def test_sleep_until_wakes_at_the_absolute_deadline(clock: FakeClock) -> None:
    """sleep_until(t) wakes when the clock reaches t, whatever the time it was called."""
    await clock.advance(2.0)
    woke: list[float] = []

    async def run() -> None:
        await clock.sleep_until(3.5)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await clock.advance(1.0)
        assert woke == []
        await clock.advance(1.0)
    assert woke == [3.5]


async def test_a_cancelled_sleep_leaves_no_live_timer(clock: FakeClock) -> None:
    """Cancelling a sleeping task retires its timer."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 10.0)
        await settle()
        assert clock.pending_timers == 1
        tg.cancel_scope.cancel()
    assert clock.pending_timers == 0
    assert clock.next_deadline() is None


async def test_next_deadline_is_the_earliest_live_timer(clock: FakeClock) -> None:
    """next_deadline() skips retired timers and reports the earliest live one, or None."""
    assert clock.next_deadline() is None
    early = clock.call_at(1.0, lambda: None)
    clock.call_at(2.0, lambda: None)
    assert clock.next_deadline() == 1.0
    early.cancelled = True
    assert clock.next_deadline() == 2.0
    assert clock.pending_timers == 1


# -- fail_after and move_on_after -------------------------------------------------------------


async def test_fail_after_raises_timeout_error_at_the_deadline_and_not_before(
    clock: FakeClock,
) -> None:
    """fail_after(2) lets its body run until t=2 exactly, then raises TimeoutError."""
    outcome: list[tuple[str, float]] = []

    async def run() -> None:
        try:
            with clock.fail_after(2.0):
                await anyio.sleep_forever()
        except TimeoutError:
            outcome.append(("timeout", clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await clock.advance_to(math.nextafter(2.0, 0.0))
        assert outcome == []
        await clock.advance(1.0)
    assert outcome == [("timeout", 2.0)]


async def test_fail_after_does_not_raise_when_the_body_finishes_in_time(clock: FakeClock) -> None:
    """A body that finishes before the deadline leaves fail_after without an error."""
    with clock.fail_after(2.0) as scope:
        await clock.advance(1.0)
    assert not scope.cancelled_caught
    await clock.advance(5.0)
    assert clock.pending_timers == 0


async def test_move_on_after_cancels_its_body_quietly(clock: FakeClock) -> None:
    """move_on_after cancels the body at its deadline without raising."""
    after: list[float] = []

    async def run() -> None:
        with clock.move_on_after(1.0) as scope:
            await anyio.sleep_forever()
        assert scope.cancelled_caught
        after.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await clock.advance(0.5)
        assert after == []
        await clock.advance(0.5)
    assert after == [1.0]


async def test_a_scope_exited_before_its_deadline_leaves_no_live_timer(clock: FakeClock) -> None:
    """Leaving fail_after or move_on_after early retires its timer: it never fires later."""
    with clock.fail_after(5.0):
        assert clock.pending_timers == 1
    with clock.move_on_after(5.0):
        assert clock.pending_timers == 1
    assert clock.pending_timers == 0
    with clock.move_on_after(10.0) as later:
        await clock.advance(6.0)  # past both old deadlines: nothing fires into this scope
    assert not later.cancelled_caught


async def test_scope_with_no_timeout_never_fires(clock: FakeClock) -> None:
    """fail_after(None) and move_on_after(None) set no timer and never cancel their body."""
    release = anyio.Event()
    done: list[str] = []

    async def run() -> None:
        with clock.fail_after(None), clock.move_on_after(None):
            await release.wait()
        done.append("done")

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await settle()
        assert clock.pending_timers == 0
        await clock.advance(1e9)
        assert done == []
        release.set()
    assert done == ["done"]


@pytest.mark.parametrize("seconds", [0.0, -1.0])
async def test_zero_or_negative_timeout_fires_at_the_first_checkpoint(
    clock: FakeClock, seconds: float
) -> None:
    """fail_after(<=0) raises TimeoutError and move_on_after(<=0) cancels, without advance."""
    with pytest.raises(TimeoutError), clock.fail_after(seconds):
        await anyio.lowlevel.checkpoint()
    with clock.move_on_after(seconds) as scope:
        await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert clock.pending_timers == 0


async def test_fail_after_cancelled_from_outside_is_not_a_timeout(clock: FakeClock) -> None:
    """An outer cancellation passes through fail_after as a cancellation, not a TimeoutError."""
    timeouts: list[BaseException] = []
    with anyio.CancelScope() as outer:
        outer.cancel()
        try:
            with clock.fail_after(10.0):
                await anyio.sleep_forever()
        except TimeoutError as exc:
            timeouts.append(exc)
    assert outer.cancelled_caught
    assert timeouts == []


async def test_fail_after_scope_cancelled_by_hand_is_not_a_timeout(clock: FakeClock) -> None:
    """Cancelling fail_after's own scope by hand ends the body quietly, as in anyio."""
    with clock.fail_after(10.0) as scope:
        scope.cancel()
        await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert clock.pending_timers == 0


async def test_a_timeout_error_raised_by_the_body_passes_through(clock: FakeClock) -> None:
    """A TimeoutError the body raises itself is not confused with the scope's own deadline."""
    with pytest.raises(TimeoutError, match="from the body"), clock.fail_after(10.0):
        raise TimeoutError("from the body")


# -- advance ----------------------------------------------------------------------------------


async def test_negative_advance_raises_value_error(clock: FakeClock) -> None:
    """advance() refuses to move time backwards, naming the bad value."""
    with pytest.raises(ValueError, match=r"seconds must be >= 0, got -1"):
        await clock.advance(-1)
    assert clock.now() == 0.0


async def test_advance_to_moves_to_an_absolute_time_and_fires_what_is_due(
    clock: FakeClock,
) -> None:
    """advance_to(t) fires the timers due by t and leaves the clock at t; a past t is a no-op."""
    fired: list[float] = []
    clock.call_at(3.0, lambda: fired.append(clock.now()))
    clock.call_at(7.0, lambda: fired.append(clock.now()))
    await clock.advance_to(4.0)
    assert (fired, clock.now()) == ([3.0], 4.0)
    await clock.advance_to(1.0)
    assert (fired, clock.now()) == ([3.0], 4.0)
    assert clock.pending_timers == 1


async def test_a_timer_set_in_the_past_fires_on_the_next_advance(clock: FakeClock) -> None:
    """call_at with a deadline already passed fires on the next advance, even advance(0)."""
    await clock.advance(5.0)
    fired: list[float] = []
    clock.call_at(1.0, lambda: fired.append(clock.now()))
    await clock.advance(0)
    assert fired == [5.0]


# -- settle -----------------------------------------------------------------------------------


async def test_settle_runs_other_tasks_until_they_all_wait() -> None:
    """settle() returns only once every other task is blocked, however many steps it took."""
    steps: list[int] = []
    gate = anyio.Event()

    async def walker() -> None:
        for i in range(200):
            steps.append(i)
            await anyio.lowlevel.checkpoint()
        await gate.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(walker)
        await settle()
        assert len(steps) == 200
        gate.set()


async def test_settle_runs_queued_callbacks() -> None:
    """settle() also waits for callbacks already queued on the loop."""
    ran: list[str] = []
    loop = asyncio.get_running_loop()
    loop.call_soon(lambda: loop.call_soon(lambda: ran.append("nested")))
    await settle()
    assert ran == ["nested"]


async def test_concurrent_settles_take_turns_and_do_not_deadlock() -> None:
    """Several tasks settling at once all return, each after the others are blocked."""
    finished: list[int] = []

    async def settler(n: int) -> None:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
            await settle()
        finished.append(n)

    with anyio.fail_after(10):  # a guard: a deadlock fails here instead of hanging
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(settler, n)
            await settle()
    assert sorted(finished) == [0, 1, 2, 3]


async def test_settle_with_a_busy_task_raises_runtime_error() -> None:
    """A task that never blocks makes settle() give up with RuntimeError after max_rounds."""

    async def spin() -> None:
        while True:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(spin)
        with pytest.raises(RuntimeError, match="did not settle within 50 rounds"):
            await settle(max_rounds=50)
        tg.cancel_scope.cancel()
    await settle()  # the turn was released: the next settle works


# -- the real clock ---------------------------------------------------------------------------


async def test_real_clock_reads_the_monotonic_and_wall_clocks() -> None:
    """RealClock.now() is time.monotonic (never goes back) and wall() is time.time."""
    clock: Clock = RealClock()
    before = time.monotonic()
    first, second = clock.now(), clock.now()
    assert before <= first <= second <= time.monotonic()
    assert abs(clock.wall() - time.time()) < 1.0


async def test_real_clock_sleeps_and_scopes() -> None:
    """RealClock sleeps for real; fail_after raises TimeoutError and move_on_after is quiet."""
    clock = RealClock()
    start = clock.now()
    await clock.sleep(0.01)
    assert clock.now() - start >= 0.009
    await clock.sleep(-1.0)
    await clock.sleep_until(clock.now() - 1.0)
    with pytest.raises(TimeoutError), clock.fail_after(0.01):
        await anyio.sleep_forever()
    with clock.move_on_after(0.01) as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught
    with clock.fail_after(None):
        await clock.sleep(0)
