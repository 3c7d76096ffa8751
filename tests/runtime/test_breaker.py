"""The circuit breaker: every transition, refusals, and guarded calls."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from runtime.breaker import CircuitBreaker
from runtime.clock import FakeClock, settle
from runtime.exceptions import CircuitOpen


class Transitions(list[tuple[str, str, str]]):
    """Records on_state_change calls."""

    def __call__(self, name: str, old: str, new: str) -> None:
        self.append((name, old, new))


def make_breaker(clock: FakeClock, **kwargs: Any) -> tuple[CircuitBreaker, Transitions]:
    transitions = Transitions()
    options: dict[str, Any] = {
        "failure_threshold": 3,
        "reset_timeout_s": 30.0,
        "success_threshold": 2,
    }
    options.update(kwargs)
    breaker = CircuitBreaker("sink", clock=clock, on_state_change=transitions, **options)
    return breaker, transitions


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


async def test_starts_closed_and_allows_calls(clock: FakeClock) -> None:
    """A new breaker is closed, lets calls through and has no wait."""
    breaker, transitions = make_breaker(clock)
    assert breaker.state == "closed"
    assert breaker.allow() is True
    assert breaker.retry_after_s() == 0.0
    assert transitions == []


async def test_opens_after_threshold_consecutive_failures(clock: FakeClock) -> None:
    """failure_threshold failures in a row open the breaker and report the transition."""
    breaker, transitions = make_breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert transitions == [("sink", "closed", "open")]


async def test_a_success_resets_the_failure_streak(clock: FakeClock) -> None:
    """Failures only count while consecutive: a success in between starts over."""
    breaker, _ = make_breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"


async def test_open_refuses_calls_and_counts_refusals(clock: FakeClock) -> None:
    """While open, allow() is False, each refusal is counted, retry_after_s counts down."""
    breaker, _ = make_breaker(clock)
    open_breaker(breaker)
    assert breaker.allow() is False
    await clock.advance(10.0)
    assert breaker.allow() is False
    assert breaker.retry_after_s() == pytest.approx(20.0)
    assert breaker.statistics().rejected == 2


async def test_becomes_half_open_once_the_timeout_has_passed(clock: FakeClock) -> None:
    """The first look at or after reset_timeout_s moves open to half_open."""
    breaker, transitions = make_breaker(clock)
    open_breaker(breaker)
    await clock.advance(29.999)
    assert breaker.state == "open"
    await clock.advance(0.001)
    assert breaker.allow() is True
    assert breaker.state == "half_open"
    assert breaker.retry_after_s() == 0.0
    assert transitions[-1] == ("sink", "open", "half_open")


async def test_half_open_closes_after_enough_successes(clock: FakeClock) -> None:
    """success_threshold successes in half_open close the breaker."""
    breaker, transitions = make_breaker(clock)
    open_breaker(breaker)
    await clock.advance(30.0)
    breaker.record_success()
    assert breaker.state == "half_open"
    breaker.record_success()
    assert breaker.state == "closed"
    assert transitions == [
        ("sink", "closed", "open"),
        ("sink", "open", "half_open"),
        ("sink", "half_open", "closed"),
    ]


async def test_closing_starts_a_fresh_failure_streak(clock: FakeClock) -> None:
    """After closing, it takes a full failure_threshold of new failures to open again."""
    breaker, _ = make_breaker(clock)
    open_breaker(breaker)
    await clock.advance(30.0)
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"


async def test_a_failure_in_half_open_reopens_and_restarts_the_timeout(clock: FakeClock) -> None:
    """One failure in half_open reopens at once, for a whole new reset_timeout_s."""
    breaker, transitions = make_breaker(clock)
    open_breaker(breaker)
    await clock.advance(30.0)
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.retry_after_s() == pytest.approx(30.0)
    assert transitions[-1] == ("sink", "half_open", "open")
    await clock.advance(29.0)
    assert breaker.state == "open"
    await clock.advance(1.0)
    assert breaker.state == "half_open"
    assert breaker.statistics().half_open_successes == 0


async def test_late_outcomes_while_open_change_nothing(clock: FakeClock) -> None:
    """Results of calls started before opening are counted but neither extend nor close it."""
    breaker, transitions = make_breaker(clock)
    open_breaker(breaker)
    await clock.advance(10.0)
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state == "open"
    assert breaker.retry_after_s() == pytest.approx(20.0)
    assert len(transitions) == 1
    stats = breaker.statistics()
    assert (stats.failures, stats.successes) == (4, 1)


async def test_zero_reset_timeout_goes_half_open_at_once(clock: FakeClock) -> None:
    """With reset_timeout_s=0 an opened breaker allows a trial call right away."""
    breaker, transitions = make_breaker(clock, reset_timeout_s=0.0)
    open_breaker(breaker)
    assert breaker.allow() is True
    assert [new for _, _, new in transitions] == ["open", "half_open"]


async def test_statistics_snapshot(clock: FakeClock) -> None:
    """statistics() reports the state, streaks, totals, refusals, openings and the wait."""
    breaker, _ = make_breaker(clock)
    breaker.record_success()
    open_breaker(breaker)
    breaker.allow()
    stats = breaker.statistics()
    assert stats.name == "sink"
    assert stats.state == "open"
    assert (stats.successes, stats.failures, stats.rejected) == (1, 3, 1)
    assert stats.consecutive_failures == 3
    assert stats.times_opened == 1
    assert stats.retry_after_s == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"reset_timeout_s": -1.0}, "reset_timeout_s"),
    ],
)
def test_rejects_bad_settings_naming_them(
    clock: FakeClock, kwargs: dict[str, Any], field: str
) -> None:
    """Invalid thresholds or timeout raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match=field):
        CircuitBreaker("x", clock=clock, **kwargs)


# -- call -----------------------------------------------------------------------------------


async def test_call_returns_the_result_and_records_success(clock: FakeClock) -> None:
    """A successful guarded call returns fn's result, with its arguments, counted as success."""
    breaker, _ = make_breaker(clock)

    async def double(n: int) -> int:
        return 2 * n

    assert await breaker.call(double, 21) == 42
    assert breaker.statistics().successes == 1


async def test_call_counts_an_exception_as_failure_and_reraises(clock: FakeClock) -> None:
    """An exception from fn propagates and counts toward opening the breaker."""
    breaker, _ = make_breaker(clock)

    async def broken() -> None:
        raise OSError("down")

    for _ in range(3):
        with pytest.raises(OSError, match="down"):
            await breaker.call(broken)
    assert breaker.state == "open"


async def test_call_raises_circuit_open_without_calling_fn(clock: FakeClock) -> None:
    """While open, call raises CircuitOpen with the name and the time left; fn is not run."""
    breaker, _ = make_breaker(clock)
    open_breaker(breaker)
    await clock.advance(12.0)
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(fn)
    assert caught.value.name == "sink"
    assert caught.value.retry_after_s == pytest.approx(18.0)
    assert calls == 0


async def test_call_does_not_count_cancellation(clock: FakeClock) -> None:
    """A cancelled guarded call counts as neither success nor failure."""
    breaker, _ = make_breaker(clock, failure_threshold=1)
    task = asyncio.create_task(breaker.call(anyio.sleep_forever))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = breaker.statistics()
    assert (stats.state, stats.failures, stats.successes) == ("closed", 0, 0)
