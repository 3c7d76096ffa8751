"""The runtime's own budget as a quota: memory and average CPU, recovered before breached.

``RuntimeBudget`` is pure: it takes measurements (resident bytes and cumulative CPU seconds
of the runtime's process and its children) and says, per resource, when to run the recovery
actions (at ``recover_ratio`` of the limit, at most once per ``cooldown_s``) and when the
budget is breached or back within it. ``measure_runtime`` takes the measurement with psutil
(blocking: call it in a thread), and ``RuntimeProbe`` does so cheaply once a second.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple

import psutil

__all__ = [
    "BudgetReading",
    "Pressure",
    "Resource",
    "RuntimeBudget",
    "RuntimeProbe",
    "measure_runtime",
]

Resource = Literal["memory", "cpu"]
MIB = 1024 * 1024


class BudgetReading(NamedTuple):
    """One measurement of the runtime: resident bytes, and CPU seconds used since it began
    (its children's included, reaped ones too)."""

    rss_bytes: int
    cpu_s: float


class Pressure(NamedTuple):
    """What one measurement calls for about one resource.

    ``recover``: run the recovery actions now. ``breached``: the budget has just been
    exceeded; ``restored``: it is back within it after a breach.
    """

    resource: Resource
    measured: float
    limit: float
    recover: bool = False
    breached: bool = False
    restored: bool = False


class RuntimeBudget:
    """Memory (MB) and average CPU (% of the machine over ``cpu_window_s``) against limits.

    Raises ``ValueError`` for limits or a window that are not > 0, a ratio outside (0, 1],
    a negative cooldown or fewer than one CPU.
    """

    def __init__(
        self,
        *,
        memory_mb: float,
        cpu_percent: float,
        cpu_window_s: float,
        recover_ratio: float,
        cooldown_s: float,
        cpus: int,
    ) -> None:
        self.configure(memory_mb=memory_mb, cpu_percent=cpu_percent, cpu_window_s=cpu_window_s,
                       recover_ratio=recover_ratio, cooldown_s=cooldown_s)  # fmt: skip
        if cpus < 1:
            raise ValueError(f"cpus must be >= 1; got {cpus!r}")
        self.cpus = cpus
        self.memory_mb = 0.0
        self.cpu_percent: float | None = None  # unknown until the window is half covered
        self.breaches: dict[Resource, int] = {"memory": 0, "cpu": 0}
        self._samples: deque[tuple[float, float]] = deque()
        self._recovered_at: dict[Resource, float] = {}
        self._breached: set[Resource] = set()

    def configure(
        self,
        *,
        memory_mb: float,
        cpu_percent: float,
        cpu_window_s: float,
        recover_ratio: float,
        cooldown_s: float,
    ) -> None:
        """Change the limits live. Raises as the constructor."""
        for name, value in (("memory_mb", memory_mb), ("cpu_percent", cpu_percent),
                            ("cpu_window_s", cpu_window_s)):  # fmt: skip
            if not value > 0:
                raise ValueError(f"{name} must be > 0; got {value!r}")
        if not 0 < recover_ratio <= 1:
            raise ValueError(f"recover_ratio must be in (0, 1]; got {recover_ratio!r}")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0; got {cooldown_s!r}")
        self.memory_limit_mb = memory_mb
        self.cpu_limit_percent = cpu_percent
        self.cpu_window_s = cpu_window_s
        self.recover_ratio = recover_ratio
        self.cooldown_s = cooldown_s

    def observe(self, now: float, reading: BudgetReading) -> list[Pressure]:
        """Take a measurement; the pressures it calls for (none while well within budget)."""
        self.memory_mb = reading.rss_bytes / MIB
        self.cpu_percent = self._cpu_share(now, reading.cpu_s)
        found: list[Pressure] = []
        measurements: tuple[tuple[Resource, float | None, float], ...] = (
            ("memory", self.memory_mb, self.memory_limit_mb),
            ("cpu", self.cpu_percent, self.cpu_limit_percent),
        )
        for resource, measured, limit in measurements:
            if measured is not None and (pressure := self._judge(resource, measured, limit, now)):
                found.append(pressure)
        return found

    def _cpu_share(self, now: float, cpu_s: float) -> float | None:
        samples = self._samples
        samples.append((now, cpu_s))
        while len(samples) > 2 and samples[1][0] <= now - self.cpu_window_s:
            samples.popleft()
        first_at, first_cpu_s = samples[0]
        span_s = now - first_at
        if span_s < self.cpu_window_s / 2:
            return None
        return max(0.0, cpu_s - first_cpu_s) / (span_s * self.cpus) * 100.0

    def _judge(
        self, resource: Resource, measured: float, limit: float, now: float
    ) -> Pressure | None:
        breached = restored = recover = False
        if measured > limit and resource not in self._breached:
            self._breached.add(resource)
            self.breaches[resource] += 1
            breached = True
        elif measured <= limit and resource in self._breached:
            self._breached.discard(resource)
            restored = True
        if measured >= self.recover_ratio * limit:
            last = self._recovered_at.get(resource)
            if last is None or now - last >= self.cooldown_s:
                self._recovered_at[resource] = now
                recover = True
        if not (breached or restored or recover):
            return None
        return Pressure(resource, measured, limit, recover=recover, breached=breached,
                        restored=restored)  # fmt: skip

    def breached(self, resource: Resource) -> bool:
        """Whether ``resource`` is over its limit now."""
        return resource in self._breached


def measure_runtime(
    process: psutil.Process, children: list[psutil.Process] | None = None
) -> BudgetReading:
    """The runtime's resident memory and CPU seconds, its live children's included (blocking:
    it reads /proc). ``children``: the ones to read (default: found now, which walks every
    process on the machine)."""
    times = process.cpu_times()
    cpu_s = times.user + times.system + times.children_user + times.children_system
    rss = process.memory_info().rss
    for child in process.children(recursive=True) if children is None else children:
        try:
            child_times = child.cpu_times()
            rss += child.memory_info().rss
        except psutil.Error:  # gone meanwhile: its time shows in children_* once it is reaped
            continue
        cpu_s += child_times.user + child_times.system
    return BudgetReading(rss, cpu_s)


class RuntimeProbe:
    """Measures the runtime (``measure_runtime``) for its budget, finding its children only
    every ``refresh_s``: finding them walks every process on the machine (milliseconds of
    work holding the GIL), while reading the known ones is cheap. A child started since the
    last refresh is counted from the next one. Blocking: call it in a thread.
    """

    def __init__(
        self,
        process: psutil.Process | None = None,
        *,
        refresh_s: float = 10.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process = process or psutil.Process()
        self._refresh_s = refresh_s
        self._now = now
        self._children: list[psutil.Process] = []
        self._found_at = -math.inf

    def __call__(self) -> BudgetReading:
        now = self._now()
        if now - self._found_at >= self._refresh_s:
            self._children = self._process.children(recursive=True)
            self._found_at = now
        reading = measure_runtime(self._process, self._children)
        self._children = [child for child in self._children if child.is_running()]
        return reading
