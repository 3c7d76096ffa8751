"""The scheduler's statistics: latency summaries, per-class counts, the whole snapshot.

Latency: percentiles over a window of recent samples, plus all-time count and max. A ring of
the last ``size`` samples keeps memory fixed and the percentiles about *recent* behaviour; a
smoothed mean (EWMA) gives the admission estimate in O(1) on the hot path.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from runtime.config import TaskClassConfig

__all__ = [
    "ClassRecord",
    "ClassStatistics",
    "LatencySummary",
    "LatencyWindow",
    "SchedulerStatistics",
]


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles (nearest rank) of the recent window; ``count`` and ``max_s`` are all-time."""

    count: int = 0
    p50_s: float = 0.0
    p95_s: float = 0.0
    p99_s: float = 0.0
    max_s: float = 0.0


class LatencyWindow:
    """Recent latency samples in seconds.

    ``smoothing`` is the EWMA weight of a new sample. Raises ``ValueError`` for a ``size``
    below 1 or a ``smoothing`` outside (0, 1].
    """

    __slots__ = ("_next", "_ring", "count", "max_s", "mean_s", "size", "smoothing")

    def __init__(self, size: int = 1024, *, smoothing: float = 0.2) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.size = size
        self.smoothing = smoothing
        self._ring: list[float] = []
        self._next = 0
        self.count = 0
        self.max_s = 0.0
        self.mean_s = 0.0  # EWMA; meaningful once count > 0

    def add(self, seconds: float) -> None:
        """Record one sample (negative values, from clock quirks, count as 0)."""
        seconds = max(0.0, seconds)
        if len(self._ring) < self.size:
            self._ring.append(seconds)
        else:
            self._ring[self._next] = seconds
        self._next = (self._next + 1) % self.size
        self.mean_s = (
            seconds if self.count == 0 else self.mean_s + self.smoothing * (seconds - self.mean_s)
        )
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def estimate(self, min_samples: int = 3) -> float | None:
        """The smoothed recent mean, or ``None`` before ``min_samples`` samples."""
        return self.mean_s if self.count >= min_samples else None

    def percentile(self, q: float) -> float:
        """The nearest-rank ``q``-th percentile (0 < q <= 100) of the window; 0.0 when empty.

        Raises ``ValueError`` for ``q`` outside (0, 100].
        """
        if not 0 < q <= 100:
            raise ValueError(f"q must be in (0, 100], got {q}")
        if not self._ring:
            return 0.0
        ordered = sorted(self._ring)
        return ordered[self._rank(q, len(ordered))]

    def summary(self) -> LatencySummary:
        """p50/p95/p99 of the window and the all-time count and max."""
        if not self._ring:
            return LatencySummary()
        ordered = sorted(self._ring)
        n = len(ordered)
        return LatencySummary(
            count=self.count,
            p50_s=ordered[self._rank(50, n)],
            p95_s=ordered[self._rank(95, n)],
            p99_s=ordered[self._rank(99, n)],
            max_s=self.max_s,
        )

    @staticmethod
    def _rank(q: float, n: int) -> int:
        return max(0, math.ceil(q / 100 * n) - 1)


class ClassStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One task class: its settings in force, its queue, and how its tasks ended.

    ``completed`` returned; ``failed`` raised (or were cancelled at their deadline);
    ``expired`` reached their deadline still queued; ``cancelled`` by their submitter;
    ``refused`` with ``Overloaded`` at admission or later (``shed``, a subset).
    ``deadline_misses`` counts every task that did not finish by its deadline, once.
    ``wait`` is submission to start; ``run`` is start to finish.
    """

    priority: int
    deadline_s: float | None
    executor: str
    limit: int
    queue_depth: int
    running: int
    admitted: int
    completed: int
    failed: int
    expired: int
    cancelled: int
    refused: int
    shed: int
    deadline_misses: int
    wait: LatencySummary
    run: LatencySummary


class SchedulerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the scheduler.

    ``slots`` and ``busy`` are per executor. ``shedding`` lists the executors where
    background work is refused because urgent work waits there; ``overloaded`` means it is
    refused everywhere (CPU or loop lag past the shed thresholds).
    """

    running: bool
    queued: int
    active: int
    classes: dict[str, ClassStatistics]
    slots: dict[str, int]
    busy: dict[str, int]
    loop_lag_s: float
    cpu_percent: float | None
    overloaded: bool
    shedding: list[str]
    background_paused: bool
    pools: dict[str, Any]


class ClassRecord:
    """The running counts and latency windows of one class (the service updates them)."""

    __slots__ = (
        "admitted",
        "cancelled",
        "completed",
        "deadline_misses",
        "expired",
        "failed",
        "refused",
        "runs",
        "shed",
        "waits",
    )

    def __init__(self) -> None:
        self.admitted = self.completed = self.failed = self.expired = 0
        self.cancelled = self.refused = self.shed = self.deadline_misses = 0
        self.waits = LatencyWindow()
        self.runs = LatencyWindow()

    def snapshot(
        self, config: TaskClassConfig, *, limit: int, queue_depth: int, running: int
    ) -> ClassStatistics:
        deadline_ms = config.deadline_ms
        return ClassStatistics(
            priority=config.priority,
            deadline_s=None if deadline_ms is None else deadline_ms / 1000,
            executor=config.executor,
            limit=limit,
            queue_depth=queue_depth,
            running=running,
            admitted=self.admitted,
            completed=self.completed,
            failed=self.failed,
            expired=self.expired,
            cancelled=self.cancelled,
            refused=self.refused,
            shed=self.shed,
            deadline_misses=self.deadline_misses,
            wait=self.waits.summary(),
            run=self.runs.summary(),
        )
