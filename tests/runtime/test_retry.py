"""Backoff delays, retrying calls and retrying sends to a full channel."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from runtime.channel import open_channel
from runtime.clock import FakeClock, settle
from runtime.deadletters import DeadLetters
from runtime.exceptions import ChannelClosed
from runtime.retry import RetryPolicy, backoff_delays, retry, send_with_retry


class UpperBoundRandom(random.Random):
    """Always draws the upper bound, so every backoff delay equals its cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


POLICY = RetryPolicy()  # 50 ms, 100 ms, 200 ms caps


async def run_in_background(
    clock: FakeClock, make: Callable[[], Awaitable[Any]], advance_s: float
) -> dict[str, Any]:
    """Run ``make()`` in a task, advance the fake clock, and return its value or error."""
    outcome: dict[str, Any] = {}

    async def runner() -> None:
        try:
            outcome["value"] = await make()
        except Exception as error:
            outcome["error"] = error

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await clock.advance(advance_s)
        tg.cancel_scope.cancel()  # still running: the caller's assertions fail, nothing hangs
    return outcome


# -- RetryPolicy and backoff_delays ---------------------------------------------------------


def test_policy_defaults_match_the_design() -> None:
    """The default policy is 50 ms initial, 500 ms max, factor 2.0, 3 retries."""
    assert (POLICY.initial_s, POLICY.max_s, POLICY.factor, POLICY.retries) == (0.05, 0.5, 2.0, 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_s": -0.1}, "initial_s"),
        ({"max_s": -1.0, "initial_s": 0.0}, "max_s"),
        ({"retries": -1}, "retries"),
        ({"initial_s": math.nan}, "initial_s"),
        ({"factor": 0.5}, "factor"),
        ({"initial_s": 2.0, "max_s": 1.0}, "initial_s"),
    ],
)
def test_policy_rejects_bad_values_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    """An invalid policy raises ValueError whose message names the offending field."""
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_backoff_yields_one_delay_per_retry() -> None:
    """There are exactly ``retries`` delays; zero retries means none."""
    assert len(list(backoff_delays(RetryPolicy(retries=5)))) == 5
    assert list(backoff_delays(RetryPolicy(retries=0))) == []


def test_backoff_caps_grow_by_factor_up_to_max() -> None:
    """The upper bound of delay n is min(max_s, initial_s * factor**n)."""
    policy = RetryPolicy(initial_s=0.05, max_s=0.5, factor=2.0, retries=6)
    caps = list(backoff_delays(policy, UpperBoundRandom()))
    assert caps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])


@pytest.mark.parametrize("seed", range(20))
def test_every_delay_is_within_its_full_jitter_bounds(seed: int) -> None:
    """Each delay lies in [0, min(max_s, initial_s * factor**n)]."""
    policy = RetryPolicy(initial_s=0.01, max_s=0.3, factor=3.0, retries=8)
    for n, delay in enumerate(backoff_delays(policy, random.Random(seed))):
        assert 0.0 <= delay <= min(policy.max_s, policy.initial_s * policy.factor**n)


def test_jitter_varies_between_draws() -> None:
    """Full jitter spreads the same retry's delay out instead of repeating one value."""
    rng = random.Random(7)
    first_delays = {next(backoff_delays(POLICY, rng)) for _ in range(50)}
    assert len(first_delays) > 40
    assert min(first_delays) < 0.01 and max(first_delays) > 0.04


def test_seeded_rng_reproduces_delays() -> None:
    """The same seed gives the same delays; another seed gives others."""
    once = list(backoff_delays(POLICY, random.Random(42)))
    again = list(backoff_delays(POLICY, random.Random(42)))
    other = list(backoff_delays(POLICY, random.Random(43)))
    assert once == again
    assert once != other


# -- retry --------------------------------------------------------------------------------


async def test_retry_returns_at_once_when_the_first_call_succeeds(clock: FakeClock) -> None:
    """A call that succeeds is awaited once, with its arguments, and no timer is set."""

    async def add(a: int, b: int) -> int:
        return a + b

    assert await retry(add, 2, 3, policy=POLICY, clock=clock) == 5
    assert clock.pending_timers == 0


async def test_retry_succeeds_after_failures_sleeping_on_the_clock(clock: FakeClock) -> None:
    """Failed attempts are retried after the backoff delays, measured on the injected clock."""
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise OSError("flaky")
        return "ok"

    outcome = await run_in_background(
        clock, lambda: retry(flaky, policy=POLICY, clock=clock, rng=UpperBoundRandom()), 1.0
    )
    assert outcome == {"value": "ok"}
    assert calls == pytest.approx([0.0, 0.05, 0.15])


async def test_retry_waits_for_the_clock_to_move(clock: FakeClock) -> None:
    """No retry happens until the fake clock reaches the delay: the sleep is the clock's."""
    calls = 0

    async def failing_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("once")
        return "done"

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: retry(failing_once, policy=POLICY, clock=clock, rng=UpperBoundRandom())
        )
        await settle()
        assert calls == 1
        await clock.advance(0.049)
        assert calls == 1
        await clock.advance(0.001)
        assert calls == 2
        tg.cancel_scope.cancel()


async def test_retry_reraises_the_last_error_when_retries_run_out(clock: FakeClock) -> None:
    """After 1 + retries attempts the last attempt's error propagates."""
    attempts = 0

    async def always_fails() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError(f"attempt {attempts}")

    outcome = await run_in_background(
        clock, lambda: retry(always_fails, policy=POLICY, clock=clock), 1.0
    )
    assert isinstance(outcome["error"], OSError)
    assert str(outcome["error"]) == "attempt 4"
    assert attempts == 4


async def test_retry_raises_unlisted_errors_at_once(clock: FakeClock) -> None:
    """An error outside ``retry_on`` is not retried."""
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("no")

    with pytest.raises(KeyError):
        await retry(broken, policy=POLICY, clock=clock, retry_on=(OSError,))
    assert calls == 1
    assert clock.pending_timers == 0


async def test_retry_reports_each_retry_to_on_retry(clock: FakeClock) -> None:
    """on_retry gets the attempt number, the error and the delay before each retry."""
    seen: list[tuple[int, str, float]] = []

    async def always_fails() -> None:
        raise OSError("down")

    outcome = await run_in_background(
        clock,
        lambda: retry(
            always_fails,
            policy=POLICY,
            clock=clock,
            rng=UpperBoundRandom(),
            on_retry=lambda n, error, delay_s: seen.append((n, str(error), delay_s)),
        ),
        1.0,
    )
    assert isinstance(outcome["error"], OSError)
    assert seen == [(1, "down", 0.05), (2, "down", 0.1), (3, "down", 0.2)]


async def test_retry_never_retries_cancellation(clock: FakeClock) -> None:
    """Cancelling a retrying call ends it, even when retry_on would match the cancellation."""
    calls = 0

    async def hangs_first_time() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()
        return "retried"

    policy = RetryPolicy(initial_s=0.0, max_s=0.0)
    task = asyncio.create_task(
        retry(hangs_first_time, policy=policy, clock=clock, retry_on=BaseException)
    )
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


# -- send_with_retry ------------------------------------------------------------------------


async def test_send_with_retry_sends_at_once_when_there_is_room(clock: FakeClock) -> None:
    """A channel with room takes the item at once: True, no dead letter, no timer."""
    channel = open_channel(2)
    dead = DeadLetters(clock=clock)
    sent = await send_with_retry(channel, "hi", policy=POLICY, clock=clock, dead_letters=dead)
    assert sent is True
    assert channel.receive_nowait() == "hi"
    assert dead.total == 0
    assert clock.pending_timers == 0


async def test_send_with_retry_succeeds_once_a_consumer_makes_room(clock: FakeClock) -> None:
    """A send that found the channel full gets in on a later retry after a receive."""
    channel = open_channel(1)
    channel.send_nowait("first")
    dead = DeadLetters(clock=clock)
    outcome: dict[str, Any] = {}

    async def sender() -> None:
        outcome["sent"] = await send_with_retry(
            channel,
            "second",
            policy=POLICY,
            clock=clock,
            dead_letters=dead,
            rng=UpperBoundRandom(),
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await clock.advance(0.05)  # first retry: still full
        assert "sent" not in outcome
        assert channel.receive_nowait() == "first"
        await clock.advance(0.1)  # second retry finds room
        tg.cancel_scope.cancel()
    assert outcome == {"sent": True}
    assert channel.receive_nowait() == "second"
    assert dead.total == 0


async def test_send_with_retry_dead_letters_after_the_last_retry(clock: FakeClock) -> None:
    """A channel that stays full gets the item dead-lettered as channel_full after all retries."""
    channel = open_channel(1, name="mailbox")
    channel.send_nowait("blocker")
    dead = DeadLetters(clock=clock)
    outcome: dict[str, Any] = {}

    async def sender() -> None:
        outcome["sent"] = await send_with_retry(
            channel,
            {"n": 1},
            policy=POLICY,
            clock=clock,
            dead_letters=dead,
            source="sampler",
            rng=UpperBoundRandom(),
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await clock.advance(0.349)
        assert "sent" not in outcome  # 50 + 100 + 200 ms of backoff not yet over
        await clock.advance(0.002)
        tg.cancel_scope.cancel()  # a sender still waiting fails the test instead of hanging it
    assert outcome == {"sent": False}
    assert dead.total == 1
    assert dead.by_reason == {"channel_full": 1}
    [letter] = dead.entries()
    assert (letter.message, letter.reason, letter.source) == ({"n": 1}, "channel_full", "sampler")
    assert channel.statistics().depth == 1


async def test_send_with_retry_dead_letters_a_closed_channel(clock: FakeClock) -> None:
    """A closed channel is not retried: the item is dead-lettered as channel_closed."""
    channel = open_channel(1)
    channel.close()
    dead = DeadLetters(clock=clock)
    sent = await send_with_retry(channel, "x", policy=POLICY, clock=clock, dead_letters=dead)
    assert sent is False
    assert dead.by_reason == {"channel_closed": 1}
    assert clock.pending_timers == 0


async def test_send_with_retry_dead_letters_a_channel_closed_while_retrying(
    clock: FakeClock,
) -> None:
    """A channel closed during the backoff dead-letters the item at the next attempt."""
    channel = open_channel(1)
    channel.send_nowait("blocker")
    dead = DeadLetters(clock=clock)
    outcome: dict[str, Any] = {}

    async def sender() -> None:
        outcome["sent"] = await send_with_retry(
            channel, "x", policy=POLICY, clock=clock, dead_letters=dead, rng=UpperBoundRandom()
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        channel.close()
        await clock.advance(0.05)
        tg.cancel_scope.cancel()
    assert outcome == {"sent": False}
    assert dead.by_reason == {"channel_closed": 1}
    assert channel.receive_nowait() == "blocker"
    with pytest.raises(ChannelClosed):
        channel.receive_nowait()


async def test_send_with_retry_keeps_the_priority(clock: FakeClock) -> None:
    """The item is sent with the given priority, so it overtakes less urgent messages."""
    channel = open_channel(2)
    channel.send_nowait("routine")
    dead = DeadLetters(clock=clock)
    await send_with_retry(
        channel, "urgent", policy=POLICY, clock=clock, dead_letters=dead, priority=1
    )
    assert channel.receive_nowait() == "urgent"
