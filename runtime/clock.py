"""Time, injected: every timeout, interval, deadline, backoff and TTL reads a ``Clock``.

``RealClock`` is the event loop's monotonic clock. ``FakeClock`` only moves when a test calls
``advance``; it fires due timers in deadline order and lets the woken tasks run to their next
wait between timers, so tests order events without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import anyio

__all__ = ["Clock", "FakeClock", "RealClock", "TimerHandle", "settle"]


class Clock(Protocol):
    """What the runtime needs of time."""

    def now(self) -> float:
        """Monotonic seconds; only differences mean anything."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for timestamps that people read."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, deadline: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on the loop after ``seconds``; ``cancel()`` the handle to stop it."""
        ...

    def fail_after(self, seconds: float | None) -> AbstractContextManager[anyio.CancelScope]:
        """A scope that raises ``TimeoutError`` when its body runs past ``seconds``."""
        ...

    def move_on_after(self, seconds: float | None) -> AbstractContextManager[anyio.CancelScope]:
        """A scope whose body is cancelled quietly after ``seconds``."""
        ...


class TimerHandle(Protocol):
    """What ``call_later`` returns."""

    def cancel(self) -> None: ...


class RealClock:
    """The event loop's clock (monotonic) and the system's wall clock."""

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - time.monotonic()))

    def fail_after(self, seconds: float | None) -> AbstractContextManager[anyio.CancelScope]:
        return anyio.fail_after(seconds)

    def move_on_after(self, seconds: float | None) -> AbstractContextManager[anyio.CancelScope]:
        return anyio.move_on_after(seconds)


class _Timer:
    __slots__ = ("callback", "cancelled", "deadline", "seq")

    def __init__(self, deadline: float, seq: int, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _Timer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class FakeClock:
    """A clock that moves only when told to. Starts at ``start`` (monotonic) and ``wall_start``."""

    def __init__(self, start: float = 0.0, *, wall_start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    @property
    def pending_timers(self) -> int:
        """How many timers wait for the clock to move (for tests' assertions)."""
        return sum(not t.cancelled for t in self._timers)

    def next_deadline(self) -> float | None:
        """The earliest pending timer's deadline, or ``None``."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].deadline if self._timers else None

    def call_at(self, deadline: float, callback: Callable[[], None]) -> _Timer:
        """Run ``callback`` at the first ``advance`` that reaches ``deadline`` (even
        ``advance(0)`` when it is already due)."""
        timer = _Timer(deadline, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, seconds: float, callback: Callable[[], None]) -> _Timer:
        return self.call_at(self._now + max(0.0, seconds), callback)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + seconds)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        woken = anyio.Event()
        timer = self.call_at(deadline, woken.set)
        try:
            await woken.wait()
        finally:
            timer.cancelled = True

    @contextmanager
    def fail_after(self, seconds: float | None) -> Iterator[anyio.CancelScope]:
        with self._scope(seconds) as (scope, fired):
            yield scope
        if fired[0] and scope.cancelled_caught:
            raise TimeoutError

    @contextmanager
    def move_on_after(self, seconds: float | None) -> Iterator[anyio.CancelScope]:
        with self._scope(seconds) as (scope, _):
            yield scope

    @contextmanager
    def _scope(self, seconds: float | None) -> Iterator[tuple[anyio.CancelScope, list[bool]]]:
        fired = [False]
        with anyio.CancelScope() as scope:
            if seconds is None:
                yield scope, fired
                return

            def expire() -> None:
                fired[0] = True
                scope.cancel()

            timer = self.call_at(self._now + max(0.0, seconds), expire)
            if seconds <= 0:
                expire()
            try:
                yield scope, fired
            finally:
                timer.cancelled = True

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing timers in order and letting woken tasks run after each."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        target = self._now + seconds
        await settle()
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.deadline)
            timer.cancelled = True
            timer.callback()
            await settle()
        self._now = target
        await settle()

    async def advance_to(self, when: float) -> None:
        """Move time forward to ``when`` (no-op if it is already past)."""
        await self.advance(max(0.0, when - self._now))


_settling: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}


async def settle(max_rounds: int = 100_000) -> None:
    """Let every other task run until all of them wait on something (asyncio backend).

    The fake-clock counterpart of trio's ``wait_all_tasks_blocked``, without its real sleeps.
    Concurrent calls take turns: a task waiting for its turn counts as blocked.
    """
    loop = asyncio.get_running_loop()
    while (turn := _settling.get(loop)) is not None:
        await turn
    _settling[loop] = loop.create_future()
    try:
        await _settle(loop, max_rounds)
    finally:
        _settling.pop(loop).set_result(None)


async def _settle(loop: asyncio.AbstractEventLoop, max_rounds: int) -> None:
    me = asyncio.current_task()
    for _ in range(max_rounds):
        await asyncio.sleep(0)
        if loop._ready:  # type: ignore[attr-defined]  # callbacks still queued
            continue
        if all(_blocked(task) for task in asyncio.all_tasks(loop) if task is not me):
            return
    raise RuntimeError(f"tasks did not settle within {max_rounds} rounds (a busy loop?)")


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = task._fut_waiter  # type: ignore[attr-defined]
    return waiter is not None and not waiter.done()
