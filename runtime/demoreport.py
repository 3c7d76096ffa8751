"""The demo's measurements and its final table.

``Observer`` follows the run (samples for CPU and memory, alert events); ``summarize`` reads
the runtime's own statistics at the end (the profiler's latency per class, the scheduler's
deadline misses, the cache's and the quotas' counts, the supervisors' restarts) into a
``Summary``, which ``runtime.demotable`` renders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import msgspec

from .config import PluginQuota
from .events import AlertFiring

if TYPE_CHECKING:
    from .app import Runtime
    from .demowork import Workload
    from .supervisor import SupervisorStatistics

__all__ = [
    "CacheRow",
    "ClassRow",
    "Observer",
    "PluginRow",
    "Resources",
    "Summary",
    "summarize",
]

MB = 1024 * 1024
# Latency as the assistant feels it: from submission to the result.
STAGE: Final[Literal["end_to_end"]] = "end_to_end"
CACHE_TARGET = 0.90  # DESIGN.md: hit rate > 90 % on the assistant's repeated requests


class ClassRow(msgspec.Struct, frozen=True, kw_only=True):
    """One task class: end-to-end latency (ms) against its deadline, and how tasks ended."""

    name: str
    target_ms: float | None  # None: no deadline (background): the target is progress
    measured: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    completed: int
    deadline_misses: int
    refused: int
    failed: int

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None when no task of the class ended.

        With a deadline: p99 within it (every task refused or failed: False). Without one
        (background): the class progressed, some task completed.
        """
        ended = self.measured + self.refused + self.failed
        if ended == 0:
            return None
        if self.target_ms is None:
            return self.completed > 0
        return self.measured > 0 and self.p99_ms <= self.target_ms


class CacheRow(msgspec.Struct, frozen=True, kw_only=True):
    """One cache namespace: the cache's own counts, and repeated requests from the demo's side."""

    namespace: str
    hits: int
    misses: int
    hit_rate: float
    repeats: int
    repeat_hit_rate: float | None

    @property
    def passed(self) -> bool | None:
        return None if self.repeat_hit_rate is None else self.repeat_hit_rate > CACHE_TARGET


class PluginRow(msgspec.Struct, frozen=True, kw_only=True):
    """One plugin's quota and what it did to the plugin's calls."""

    name: str
    quota: str
    calls: int
    completed: int
    throttled: int
    refused: int
    terminated: int


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """The runtime's process and its worker processes, from the sampler's samples.

    CPU is in percent of the machine (of the cgroup's CPU limit when one is set).
    """

    samples: int
    cpu_avg_percent: float
    cpu_peak_percent: float
    rss_peak_mb: float
    machine_cpu_avg_percent: float
    cpu_budget_percent: float
    memory_budget_mb: float


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the final table shows."""

    config: str
    duration_s: float
    load: float
    seed: int
    classes: list[ClassRow]
    plugins: list[PluginRow]
    caches: list[CacheRow] | None  # None: the cache is not running
    resources: Resources | None  # None: no sample (the sampler is off, or the run too short)
    alerts: dict[str, int]  # alerts that fired, by name
    pending: list[str]  # alert names pending at the end
    restarts: dict[str, int]  # actor restarts, by actor
    unfinished: int  # requests still running when the demo stopped waiting
    log_file: str | None


class Observer:
    """Follows a running demo: the sampler's samples and the Alerter's firing alerts.

    ``poll()`` takes what arrived since the last call (it never waits); ``close()`` ends the
    subscriptions. Services the runtime does not run are left out.
    """

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        enabled = rt.config
        self._samples = rt.sampler.subscribe(capacity=1000) if enabled.sampler.enabled else None
        self._alerts = rt.alerts.subscribe(capacity=1000) if enabled.alerts.enabled else None
        self.cpu_percents: list[float] = []
        self.machine_percents: list[float] = []
        self.rss_peak_bytes = 0
        self.fired: dict[str, int] = {}

    def poll(self) -> None:
        """Account for the samples and alert events that arrived since the last poll."""
        if self._samples is not None:
            while len(self._samples):
                sample = self._samples.receive_nowait()
                cores = sample.cpu_limit_cores or sample.cpu_count or 1
                own = sample.process_cpu_percent + sample.children_cpu_percent
                self.cpu_percents.append(own / cores)
                self.machine_percents.append(sample.cpu_percent)
                rss = sample.process_rss_bytes + sample.children_rss_bytes
                self.rss_peak_bytes = max(self.rss_peak_bytes, rss)
        if self._alerts is not None:
            while len(self._alerts):
                event = self._alerts.receive_nowait()
                if isinstance(event, AlertFiring):
                    self.fired[event.name] = self.fired.get(event.name, 0) + 1

    @property
    def cpu_now_percent(self) -> float | None:
        return self.cpu_percents[-1] if self.cpu_percents else None

    def resources(self) -> Resources | None:
        """The run's CPU and memory against the budget; None before the first sample."""
        if not self.cpu_percents:
            return None
        budget = self._rt.config.quotas.budget
        return Resources(
            samples=len(self.cpu_percents),
            cpu_avg_percent=sum(self.cpu_percents) / len(self.cpu_percents),
            cpu_peak_percent=max(self.cpu_percents),
            rss_peak_mb=self.rss_peak_bytes / MB,
            machine_cpu_avg_percent=sum(self.machine_percents) / len(self.machine_percents),
            cpu_budget_percent=budget.cpu_percent,
            memory_budget_mb=budget.memory_mb,
        )

    def close(self) -> None:
        for subscription in (self._samples, self._alerts):
            if subscription is not None:
                subscription.close()


# -- reading the runtime ----------------------------------------------------------------------


def class_rows(rt: Runtime) -> list[ClassRow]:
    """Every configured task class: the profiler's latency, the scheduler's outcomes."""
    classes = rt.scheduler.statistics().classes
    rows = []
    for name, config in rt.config.scheduler.classes.items():
        stats = classes.get(name)
        try:
            latency = rt.profiler.histogram(name, STAGE).summary()
        except KeyError:  # no task of the class has finished yet
            latency = None
        rows.append(
            ClassRow(
                name=name,
                target_ms=None if config.deadline_ms is None else float(config.deadline_ms),
                measured=0 if latency is None else latency.count,
                p50_ms=0.0 if latency is None else latency.p50_ms,
                p95_ms=0.0 if latency is None else latency.p95_ms,
                p99_ms=0.0 if latency is None else latency.p99_ms,
                completed=0 if stats is None else stats.completed,
                deadline_misses=0 if stats is None else stats.deadline_misses,
                refused=0 if stats is None else stats.refused,
                failed=0 if stats is None else stats.failed + stats.expired,
            )
        )
    return rows


def plugin_rows(rt: Runtime) -> list[PluginRow]:
    """Each plugin with a quota; none when quotas are not running."""
    if not rt.config.quotas.enabled:
        return []
    quotas = rt.quotas.statistics()
    return [
        PluginRow(
            name=name,
            quota=_describe_quota(p.quota),
            calls=p.calls,
            completed=p.completed,
            throttled=p.throttled,
            refused=p.refused,
            terminated=p.terminated,
        )
        for name, p in sorted(quotas.plugins.items())
    ]


def _describe_quota(quota: PluginQuota) -> str:
    parts = []
    if quota.rate is not None:
        parts.append(f"{quota.rate:g}/s" + (f" burst {quota.burst}" if quota.burst else ""))
    if quota.max_concurrency is not None:
        parts.append(f"{quota.max_concurrency} at once")
    if quota.timeout_s is not None:
        parts.append(f"{quota.timeout_s:g} s max")
    return ", ".join(parts) or "no limits"


def cache_rows(rt: Runtime, workload: Workload) -> list[CacheRow] | None:
    """The namespaces the demo used: the cache's counts and the demo's repeated requests."""
    if not workload.cache_running:
        return None
    cache = rt.cache.statistics()
    rows = []
    for namespace, tally in workload.caches.items():
        counts = cache.namespaces.get(namespace)
        rows.append(
            CacheRow(
                namespace=namespace,
                hits=0 if counts is None else counts.hits,
                misses=0 if counts is None else counts.misses,
                hit_rate=0.0 if counts is None else counts.hit_rate,
                repeats=tally.repeats,
                repeat_hit_rate=tally.repeat_hit_rate,
            )
        )
    return rows


def restarts(statistics: SupervisorStatistics) -> dict[str, int]:
    """Restarts by actor, over the whole supervision tree (actors never restarted left out)."""
    out = {a.name: a.restarts for a in statistics.actors if a.restarts}
    for child in statistics.supervisors:
        for name, count in restarts(child).items():
            out[name] = out.get(name, 0) + count
    return out


def summarize(
    rt: Runtime,
    workload: Workload,
    observer: Observer,
    *,
    config: str,
    duration_s: float,
    load: float,
    seed: int,
) -> Summary:
    """Read the runtime's statistics into the final table's ``Summary`` (while it runs)."""
    observer.poll()
    return Summary(
        config=config,
        duration_s=duration_s,
        load=load,
        seed=seed,
        classes=class_rows(rt),
        plugins=plugin_rows(rt),
        caches=cache_rows(rt, workload),
        resources=observer.resources(),
        alerts=dict(observer.fired),
        pending=sorted({a.name for a in rt.alerts.pending()}) if rt.config.alerts.enabled else [],
        restarts=restarts(rt.statistics().supervisor),
        unfinished=sum(o.in_flight for o in workload.outcomes.values()),
        log_file=rt.config.logging.file,
    )
