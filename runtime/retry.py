"""Retry with exponential backoff and full jitter, for failed calls and sends to a full channel.

Full jitter (each delay drawn uniformly from ``[0, cap]``) spreads retries out, so senders that
failed together do not all come back together. Every wait goes through the injected clock, so
tests move time instead of sleeping. What still fails after the last retry is re-raised (for
calls) or handed to the dead letters (for sends): never silently lost.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import msgspec

from .channel import DEFAULT_PRIORITY, Channel
from .clock import Clock
from .deadletters import DeadLetters
from .exceptions import ChannelClosed, ChannelFull

__all__ = ["RetryPolicy", "backoff_delays", "retry", "send_with_retry"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# One shared generator: creating a ``Random()`` per retry would read the OS entropy pool each time.
_DEFAULT_RNG = random.Random()


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long to wait between attempts: ``retries`` delays, growing by ``factor`` up to ``max_s``.

    Raises ``ValueError`` (naming the field) for a negative value, ``factor < 1`` or
    ``initial_s > max_s``.
    """

    initial_s: float = 0.05
    max_s: float = 0.5
    factor: float = 2.0
    retries: int = 3

    def __post_init__(self) -> None:
        # ``not x >= 0`` also rejects NaN, which every ordered comparison lets through.
        for field in ("initial_s", "max_s", "retries"):
            value = getattr(self, field)
            if not value >= 0:
                raise ValueError(f"{field} must be >= 0, got {value!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}; use 1 for a flat delay")
        if self.initial_s > self.max_s:
            raise ValueError(
                f"initial_s ({self.initial_s!r}) must be <= max_s ({self.max_s!r}); "
                "raise max_s or lower initial_s"
            )


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """Yield ``policy.retries`` delays in seconds; delay ``n`` is uniform in ``[0, cap_n]``.

    ``cap_n = min(max_s, initial_s * factor**n)``. Pass a seeded ``rng`` for reproducible delays.
    """
    rng = rng or _DEFAULT_RNG
    cap = policy.initial_s
    for _ in range(policy.retries):
        yield rng.uniform(0.0, min(policy.max_s, cap))
        # Grow the cap step by step (not ``factor**n``): no float overflow on long retry runs.
        cap = min(policy.max_s, cap * policy.factor)


OnRetry = Callable[[int, BaseException, float], None]
"""Called before each retry with (attempt number from 1, the error, the delay in seconds)."""


async def retry(
    fn: Callable[[Unpack[Ts]], Awaitable[T]],
    *args: *Ts,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    on_retry: OnRetry | None = None,
) -> T:
    """Await ``fn(*args)``; on a ``retry_on`` error sleep the next backoff delay and try again.

    Returns what ``fn`` returns. After the last retry the last error is re-raised; errors not in
    ``retry_on`` are raised at once. Cancellation is never retried, even if ``retry_on`` would
    match it.
    """
    cancelled = anyio.get_cancelled_exc_class()
    delays = backoff_delays(policy, rng)
    attempt = 0
    while True:
        try:
            return await fn(*args)
        except retry_on as error:
            if isinstance(error, cancelled):
                raise
            delay_s = next(delays, None)
            if delay_s is None:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, error, delay_s)
        await clock.sleep(delay_s)


async def send_with_retry(
    channel: Channel[T],
    item: T,
    *,
    policy: RetryPolicy,
    clock: Clock,
    dead_letters: DeadLetters,
    priority: int = DEFAULT_PRIORITY,
    source: str | None = None,
    rng: random.Random | None = None,
) -> bool:
    """Send ``item`` without blocking; while the channel is full, back off and try again.

    Returns ``True`` once sent. Returns ``False`` after putting the item in ``dead_letters``:
    with reason ``"channel_full"`` when the last retry still found no room, ``"channel_closed"``
    when the channel is closed. Raises nothing for a full or closed channel.
    """
    delays = backoff_delays(policy, rng)
    while True:
        try:
            channel.send_nowait(item, priority=priority)
            return True
        except ChannelClosed:
            dead_letters.add(item, reason="channel_closed", source=source)
            return False
        except ChannelFull:
            delay_s = next(delays, None)
            if delay_s is None:
                dead_letters.add(item, reason="channel_full", source=source)
                return False
        await clock.sleep(delay_s)
