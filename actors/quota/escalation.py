"""Measured quotas over time: escalation (warn, throttle, terminate), a CPU share over a
sliding window, and the duty cycle that holds a throttled process under its share.

All pure: measurements and times come from the caller.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

__all__ = ["CpuShare", "DutyCycle", "Escalation", "Level", "Step"]

Step = Literal["warn", "throttle", "terminate", "recover"]
Level = Literal["ok", "warned", "throttled", "terminated"]


class Escalation:
    """Warn, then throttle, then terminate, for one measured quota of one call.

    Each ``observe`` compares a measurement with its limit and returns the steps to take now,
    in order: ``warn`` once it reaches ``warn_ratio`` of the limit; ``throttle`` once it is
    over the limit (only when ``throttles``); ``terminate`` once it has been over the limit
    for ``terminate_after_s`` without a break (counted from the throttle when it throttles);
    ``recover`` when a warned quota falls back under ``warn_ratio``. A throttled quota is
    measured throttled, which says little about what it would do free: it recovers only under
    ``release_ratio`` of the limit (``None``: never; the caller resets it). Terminated is
    final. Raises ``ValueError`` for a ratio outside (0, 1] or a negative time.
    """

    __slots__ = ("_over_since", "level", "release_ratio", "terminate_after_s", "throttles",
                 "warn_ratio")  # fmt: skip

    def __init__(
        self,
        *,
        warn_ratio: float,
        throttles: bool,
        terminate_after_s: float,
        release_ratio: float | None = None,
    ) -> None:
        for name, ratio in (("warn_ratio", warn_ratio), ("release_ratio", release_ratio)):
            if ratio is not None and not 0 < ratio <= 1:
                raise ValueError(f"{name} must be in (0, 1]; got {ratio!r}")
        if not terminate_after_s >= 0:
            raise ValueError(f"terminate_after_s must be >= 0; got {terminate_after_s!r}")
        self.warn_ratio = warn_ratio
        self.release_ratio = release_ratio
        self.throttles = throttles
        self.terminate_after_s = terminate_after_s
        self.level: Level = "ok"
        self._over_since: float | None = None

    def observe(self, measured: float, limit: float, now: float) -> list[Step]:
        """The steps a measurement at ``now`` calls for (often none)."""
        if self.level == "terminated":
            return []
        steps: list[Step] = []
        if measured > limit:
            self._over(now, steps)
        else:
            self._over_since = None
            release = self.release_ratio
            if self.level == "throttled" and release is not None and measured < release * limit:
                self.level = "ok"
                steps.append("recover")
            elif measured >= self.warn_ratio * limit:
                if self.level == "ok":
                    self.level = "warned"
                    steps.append("warn")
            elif self.level == "warned":
                self.level = "ok"
                steps.append("recover")
        return steps

    def _over(self, now: float, steps: list[Step]) -> None:
        if self.level == "ok":
            self.level = "warned"
            steps.append("warn")
        if self.level == "warned" and self.throttles:
            self.level = "throttled"
            self._over_since = None  # the throttle gets its full chance
            steps.append("throttle")
        if self._over_since is None:
            self._over_since = now
        if now - self._over_since >= self.terminate_after_s:
            self.level = "terminated"
            steps.append("terminate")


class CpuShare:
    """A process's share of the machine's CPU over a sliding window, in percent.

    ``add`` takes the process's cumulative CPU seconds at a time and returns the share over
    the window once measurements span at least half of it (else ``None``).
    Raises ``ValueError`` for a window that is not > 0 or fewer than one CPU.
    """

    __slots__ = ("_samples", "cpus", "window_s")

    def __init__(self, window_s: float, cpus: int) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0; got {window_s!r}")
        if cpus < 1:
            raise ValueError(f"cpus must be >= 1; got {cpus!r}")
        self.window_s = window_s
        self.cpus = cpus
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, cpu_s: float) -> float | None:
        """Record a measurement; the share over the window, or ``None`` while too short."""
        samples = self._samples
        samples.append((now, cpu_s))
        # Keep one sample at or before the window's start, so the window is always covered.
        while len(samples) > 2 and samples[1][0] <= now - self.window_s:
            samples.popleft()
        first_at, first_cpu_s = samples[0]
        span_s = now - first_at
        if span_s < self.window_s / 2:
            return None
        return max(0.0, cpu_s - first_cpu_s) / (span_s * self.cpus) * 100.0

    def reset(self) -> None:
        """Forget the measurements (the process changed, e.g. throttled from now on)."""
        self._samples.clear()


class DutyCycle:
    """The fraction of each period a throttled plugin's processes may run, between them.

    It starts at ``margin`` times what the limit allows (its limit in cores, at most a whole
    period) and, when the plugin still measures over its limit (a process using more than one
    core), shrinks by ``shrink`` at each ``adapt``, down to ``floor``.
    Raises ``ValueError`` for a limit that is not > 0 or fewer than one CPU.
    """

    __slots__ = ("floor", "fraction", "shrink")

    def __init__(
        self,
        limit_percent: float,
        cpus: int,
        *,
        margin: float = 0.8,
        shrink: float = 0.7,
        floor: float = 0.02,
    ) -> None:
        if not (math.isfinite(limit_percent) and limit_percent > 0):
            raise ValueError(f"limit_percent must be > 0; got {limit_percent!r}")
        if cpus < 1:
            raise ValueError(f"cpus must be >= 1; got {cpus!r}")
        self.floor = floor
        self.shrink = shrink
        self.fraction = max(floor, min(1.0, limit_percent / 100.0 * cpus) * margin)

    def adapt(self, measured_percent: float, limit_percent: float) -> float:
        """Run less when the throttled process still measures over its limit."""
        if measured_percent > limit_percent:
            self.fraction = max(self.floor, self.fraction * self.shrink)
        return self.fraction

    def split(self, period_s: float, calls: int = 1) -> tuple[float, float]:
        """(seconds running, seconds stopped) of one period for each of ``calls`` processes
        sharing the fraction."""
        running_s = period_s * self.fraction / max(1, calls)
        return running_s, period_s - running_s
