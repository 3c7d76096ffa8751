"""The evaluator actor: runs an evaluation round on a fixed, drift-free grid.

Round ``i`` is due at ``start + i·interval`` (integer milliseconds on the injected clock): a
slow round delays only itself, and rounds missed meanwhile are skipped rather than run in a
burst. The actor sends itself a tick from a clock timer, so a round runs as a message in the
actor's loop: a round that raises crashes the actor and its supervisor restarts it (the rule
state lives in the service and survives).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from runtime.actor import Actor
from runtime.clock import TimerHandle
from runtime.exceptions import ActorStopped, ChannelFull

__all__ = ["EvaluatorActor"]


class _Tick:
    """The evaluator's reminder to itself that a round is due."""


_TICK = _Tick()


class EvaluatorActor(Actor):
    """Calls ``run_round()`` every ``interval_ms()`` (read each round: a reload may change it)."""

    def __init__(self, run_round: Callable[[], object], interval_ms: Callable[[], int]) -> None:
        self._run_round = run_round
        self._interval_ms = interval_ms
        self._timer: TimerHandle | None = None
        self._grid: tuple[int, int] = (0, 0)  # (start_ms, interval_ms)

    async def on_start(self) -> None:
        self._grid = (self._now_ms(), self._interval_ms())
        self._timer = self.clock.call_later(0.0, self._due)  # the first round at once

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def receive(self, message: Any) -> None:
        if message is not _TICK:
            raise TypeError(f"the evaluator takes no messages, got {message!r}")
        self._schedule()  # first: a slow round delays only itself, a failing one still ticks on
        self._run_round()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # one tick pending at most, even when a round is retried
        now_ms = self._now_ms()
        start_ms, interval_ms = self._grid
        if interval_ms != self._interval_ms():  # reloaded: a new grid from now
            start_ms, interval_ms = now_ms, self._interval_ms()
            self._grid = (start_ms, interval_ms)
        due_ms = start_ms + ((now_ms - start_ms) // interval_ms + 1) * interval_ms
        self._timer = self.clock.call_later(due_ms / 1000 - self.clock.now(), self._due)

    def _due(self) -> None:
        # Stopping, or a tick is already waiting: either way no round is lost.
        with contextlib.suppress(ActorStopped, ChannelFull):
            self.ref.tell_nowait(_TICK)

    def _now_ms(self) -> int:
        return round(self.clock.now() * 1000)
