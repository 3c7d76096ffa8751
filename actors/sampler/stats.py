"""What the Sampler counts, and the snapshot ``Sampler.statistics()`` returns."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

__all__ = ["Counts", "SamplerStatistics"]


class SamplerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the Sampler; percentiles cover the last 1024 ticks.

    ``lateness_*``: how long after its due time each tick started (the scheduling error);
    ``collect_*``: wall time of a collection, thread hop included; ``watched``: pids by plugin;
    ``vanished`` / ``forbidden``: watched pids dropped for exiting or refusing to be read;
    ``cgroup``: the cgroup v2 directory read for limits (``None``: host figures).
    """

    running: bool
    interval_s: float
    samples: int
    skipped: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    collect_p50_ms: float
    collect_max_ms: float
    watched: dict[str, list[int]]
    vanished: int
    forbidden: int
    subscribers: int
    subscriber_drops: int
    history_path: str | None
    history_errors: int
    cgroup: str | None


@dataclass
class Counts:
    """Running totals, kept by the service across actor restarts."""

    samples: int = 0
    skipped: int = 0
    vanished: int = 0
    forbidden: int = 0
    history_errors: int = 0
    subscriber_drops: int = 0  # of subscriptions already closed
