"""The time limits of running plugin calls, behind one clock timer for the earliest of them.

A loop timer per call would cost every plugin task a timer handle pushed on the loop's heap
(compared in Python) and cancelled again, and the loop's heap would fill with cancelled ones.
Here a call's limit is a tuple pushed on a heap of our own (compared in C), a call that ends
costs nothing (its entry is skipped when its time comes), and one clock timer is armed for the
earliest limit, re-armed only when a nearer one arrives. Entries of ended calls are swept out
when the heap has doubled since the last sweep (and holds at least 16), so it stays within
twice the live calls: keeping hundreds of ended calls (and their tasks) between sweeps would
push the garbage collector's allocation count over its threshold, and a collection costs far
more than a sweep.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from runtime.clock import Clock, TimerHandle

from .plugins import Call

__all__ = ["Deadlines"]

_MIN_SWEEP = 16  # more ended calls kept between sweeps make the garbage collector run
_TOLERANCE_S = 1e-9  # a timer may fire a rounding error before the time it was armed for


class Deadlines:
    """Calls with a time limit; ``expire`` is called with each one still active at its limit."""

    def __init__(self, clock: Clock, expire: Callable[[Call], None]) -> None:
        self._clock = clock
        self._expire = expire
        self._heap: list[tuple[float, int, Call]] = []
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        """Entries held, those of ended calls included until swept or due."""
        return len(self._heap)

    def add(self, at: float, call: Call) -> None:
        """Expire ``call`` at ``at`` (clock time) unless it has ended by then."""
        heap = self._heap
        heapq.heappush(heap, (at, call.task.id, call))
        if at < self._timer_at:
            self._arm(at)
        if len(heap) >= self._sweep_at:
            self._sweep()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._clock.call_later(at - self._clock.now(), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        now = self._clock.now() + _TOLERANCE_S
        while heap and (heap[0][0] <= now or heap[0][2].phase == "done"):
            _, _, call = heapq.heappop(heap)
            if call.phase == "active" and not call.terminated:
                self._expire(call)
        if heap:
            self._arm(heap[0][0])

    def _sweep(self) -> None:
        self._heap = [entry for entry in self._heap if entry[2].phase != "done"]
        heapq.heapify(self._heap)
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._heap))

    def close(self) -> None:
        """Cancel the timer and forget every entry."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        self._heap.clear()
