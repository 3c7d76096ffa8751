"""The enforcer's statistics: per plugin counts and usage, the runtime's budget.

The counters are plain attributes bumped on the hot path; ``snapshot`` builds the frozen
records ``statistics()`` returns.
"""

from __future__ import annotations

import msgspec

from runtime.config import PluginQuota

__all__ = ["BudgetStatistics", "PluginRecord", "PluginStatistics", "QuotaStatistics"]

MIB = 1024 * 1024


class PluginStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One plugin's quota and what happened to its calls.

    ``calls``: submitted (refused ones included). ``refused``: turned away at submission (or
    when their wait for a slot ran past their deadline). ``throttled``: delayed for the rate,
    made to wait for a slot, or paused for CPU. ``terminated``: ended for a quota (time,
    memory, CPU). ``warnings``: measured quotas that reached ``warn_ratio`` of their limit.
    ``active``: admitted and not finished; ``waiting``: held back now. ``cpu_s``: CPU seconds
    its process calls used; ``peak_memory_mb``: the most one of its process calls added to its
    worker's resident memory (what ``memory_mb`` limits).
    """

    quota: PluginQuota
    source: str
    calls: int
    refused: int
    throttled: int
    terminated: int
    warnings: int
    completed: int
    failed: int
    active: int
    waiting: int
    cpu_s: float
    peak_memory_mb: float


class BudgetStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The runtime's own use against its budget, and the recovery actions run for it.

    ``cpu_percent`` is the average over the window (``None`` until half of it is measured).
    ``recoveries``: runs per action; ``recovery_failures``: runs that failed or named an
    action nobody registered.
    """

    memory_mb: float
    memory_limit_mb: float
    cpu_percent: float | None
    cpu_limit_percent: float
    breaches: dict[str, int]
    recoveries: dict[str, int]
    recovery_failures: int


class QuotaStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What ``QuotaEnforcer.statistics()`` returns (``rt.statistics().services["quotas"]``)."""

    running: bool
    plugins: dict[str, PluginStatistics]
    watched_processes: int
    budget: BudgetStatistics


class PluginRecord:
    """A plugin's counters, kept across re-registrations."""

    __slots__ = (
        "calls",
        "completed",
        "cpu_s",
        "failed",
        "peak_memory_bytes",
        "refused",
        "terminated",
        "throttled",
        "warnings",
    )

    def __init__(self) -> None:
        self.calls = self.refused = self.throttled = self.terminated = self.warnings = 0
        self.completed = self.failed = 0
        self.cpu_s = 0.0
        self.peak_memory_bytes = 0

    def snapshot(
        self, quota: PluginQuota, *, source: str, active: int, waiting: int
    ) -> PluginStatistics:
        return PluginStatistics(
            quota=quota,
            source=source,
            calls=self.calls,
            refused=self.refused,
            throttled=self.throttled,
            terminated=self.terminated,
            warnings=self.warnings,
            completed=self.completed,
            failed=self.failed,
            active=active,
            waiting=waiting,
            cpu_s=self.cpu_s,
            peak_memory_mb=self.peak_memory_bytes / MIB,
        )
