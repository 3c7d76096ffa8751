"""A drift-free schedule: slot i is due at ``start + i * interval``, whatever happened before.

The naive loop (``while True: work(); sleep(interval)``) drifts: every tick starts late by
the work's duration plus the sleep's overshoot, and the errors add up. Here each due time is
computed from the start, never from the previous tick, so a late tick does not move the ones
after it. When a tick overruns a whole slot, the slots it covered are skipped (and counted):
the next tick runs in the slot the clock is in, not in a queue of stale ones.

Pure and synchronous: the caller passes the time in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["DriftFreeSchedule", "Slot", "percentile"]

# Float rounding must not push a tick that is exactly on time into the previous slot.
_EPSILON = 1e-9


class Slot(NamedTuple):
    """One tick: its number, when it is due, and how many slots were skipped to reach it."""

    number: int
    due_s: float
    skipped: int


class DriftFreeSchedule:
    """Slots ``first_index, first_index + 1, ...`` of ``interval_s`` from ``start_s``.

    Raises ``ValueError`` for an interval that is not a positive finite number.
    """

    def __init__(self, start_s: float, interval_s: float, *, first_index: int = 1) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        self.start_s = start_s
        self.interval_s = interval_s
        self._next_index = first_index
        self.skipped = 0

    def due_s(self, index: int) -> float:
        """When slot ``index`` is due: a product, never a running sum, so no error adds up."""
        return self.start_s + index * self.interval_s

    def next_slot(self, now_s: float) -> Slot:
        """The slot to run next, given that it is ``now_s``; consumes it.

        The next unconsumed slot if it is not over yet (it may be due in the future: wait for
        ``due_s``); otherwise the slot ``now_s`` falls in, counting the ones in between as
        skipped.
        """
        number = self._next_index
        current = math.floor((now_s - self.start_s) / self.interval_s + _EPSILON)
        skipped = max(0, current - number)
        number += skipped
        self.skipped += skipped
        self._next_index = number + 1
        return Slot(number, self.due_s(number), skipped)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of ``values`` by nearest rank; 0.0 when empty.

    Raises ``ValueError`` for a fraction outside 0..1.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction!r}")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
