"""On-demand profile windows: cProfile on the loop's thread, top functions out."""

from __future__ import annotations

import functools
import math
import sys

import anyio
import pytest

from actors.profiler.profile import ProfileReport, profile_window
from runtime.clock import FakeClock, settle


def hot_function(n: int) -> int:
    """A known hot spot, its time all its own: the profile must name it."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def cold_function() -> int:
    return 1


async def profile_while(clock: FakeClock, work: object, seconds: float = 1.0) -> ProfileReport:
    """Open a window of ``seconds`` on the fake clock, run ``work()`` inside it, close it."""
    reports: list[ProfileReport] = []

    async def window() -> None:
        reports.append(await profile_window(seconds, clock=clock, top=10))

    async with anyio.create_task_group() as tg:
        tg.start_soon(window)
        await settle()  # the window is open and waiting on the clock
        work()  # type: ignore[operator]
        await clock.advance(seconds)
    return reports[0]


async def test_a_window_names_the_hot_function_by_own_and_cumulative_time(
    clock: FakeClock,
) -> None:
    """Work done on the loop during the window shows up: the hot function with its call count
    in both lists, first by own time; the loop's machinery does not."""

    def work() -> None:
        for _ in range(30):
            hot_function(5_000)
        cold_function()

    report = await profile_while(clock, work)
    by_cumulative = {s.function: s for s in report.by_cumulative}
    assert by_cumulative["hot_function"].calls == 30
    assert by_cumulative["hot_function"].file == __file__
    assert by_cumulative["hot_function"].line == hot_function.__code__.co_firstlineno
    assert by_cumulative["hot_function"].cumulative_ms > 0
    assert report.by_own[0].function == "hot_function"
    assert report.by_own[0].own_ms == by_cumulative["hot_function"].cumulative_ms
    files = [s.file for s in report.by_cumulative + report.by_own]
    assert not any("asyncio" in f or "anyio" in f for f in files)
    assert report.window_s == 1.0 and report.started_at == clock.wall() - 1.0
    assert report.total_calls >= 31
    assert len(report.by_cumulative) <= 10 and len(report.by_own) <= 10


async def test_the_report_renders_both_tables(clock: FakeClock) -> None:
    """render() shows the window, both rankings and the functions with file and line."""
    report = await profile_while(clock, lambda: hot_function(1000))
    text = report.render()
    assert text.startswith("profile of 1 s:")
    assert "by cumulative time" in text and "by own time" in text
    assert f"hot_function ({__file__}:{hot_function.__code__.co_firstlineno})" in text


async def test_one_window_at_a_time(clock: FakeClock) -> None:
    """A second window while one is open raises RuntimeError; after it closes, a new one
    works."""
    errors: list[BaseException] = []

    def second_window() -> None:
        coroutine = profile_window(1.0, clock=clock)
        try:
            coroutine.send(None)
        except RuntimeError as exc:
            errors.append(exc)

    await profile_while(clock, second_window)
    assert "a profile window is already open" in str(errors[0])
    report = await profile_while(clock, lambda: hot_function(20_000))
    assert "hot_function" in [s.function for s in report.by_cumulative]


async def test_a_window_refuses_to_displace_another_profiler(clock: FakeClock) -> None:
    """With another profiler hooked into the thread (a debugger, coverage), a window raises
    RuntimeError and leaves that profiler in place."""

    def other_profiler(*_args: object) -> None:
        return None

    sys.setprofile(other_profiler)
    try:
        with pytest.raises(RuntimeError, match="another profiler is active"):
            await profile_window(1.0, clock=clock)
        assert sys.getprofile() is other_profiler
    finally:
        sys.setprofile(None)
    await profile_while(clock, lambda: None)  # the lock was released


async def test_a_cancelled_window_turns_the_profiler_off(clock: FakeClock) -> None:
    """Cancelling a window stops profiling at once and frees the slot for the next one."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(profile_window, 10.0, clock=clock))
        await settle()
        assert sys.getprofile() is not None
        tg.cancel_scope.cancel()
    assert sys.getprofile() is None
    await profile_while(clock, lambda: None)


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan, math.inf, "1", True])
async def test_a_window_needs_a_finite_positive_length(clock: FakeClock, seconds: object) -> None:
    """seconds must be a finite number > 0: anything else raises ValueError naming it."""
    with pytest.raises(ValueError, match="seconds must be a"):
        await profile_window(seconds, clock=clock)  # type: ignore[arg-type]
    assert sys.getprofile() is None


async def test_top_must_be_at_least_one(clock: FakeClock) -> None:
    """top < 1 raises ValueError."""
    with pytest.raises(ValueError, match="top must be >= 1, got 0"):
        await profile_window(1.0, clock=clock, top=0)
