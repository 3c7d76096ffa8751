"""What a scrape reads of a Runtime, and the families it exposes.

``take_snapshot(rt)`` runs on the runtime's event loop (the loop owns the structures it reads)
and is cheap: statistics, gauges and histogram copies. ``metric_families(snapshot)`` runs in the
HTTP server's thread. Families (``jarvis_``-prefixed but the registry's):

- every gauge of ``rt.metrics`` under its own name, so alert rules read the same in Prometheus
  as in the Alerter (names made Prometheus-conventional: ``exposition.exported_name``);
- ``jarvis_task_latency_seconds{task_class, stage}`` histograms with sub-millisecond buckets,
  ``jarvis_loop_lag_seconds``, and each class's deadline, queue, counts and deadline misses;
- actors (restarts, mailbox depths), dead letters, the event bus, the runtime's budget;
- the cache's and the quotas' statistics, whatever their shape, and one
  ``jarvis_alerts{alertname, alertstate, ...}`` series per pending or firing alert.

A service missing from ``rt.statistics().services`` has no families. The actors are read by
duck typing: ``runtime`` never imports ``actors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.metrics_core import Metric

from .exposition import (
    Families,
    Histogram,
    add_registry_gauges,
    as_dict,
    by_name,
    walk_statistics,
)
from .metrics import Labels

if TYPE_CHECKING:
    from .app import Runtime

__all__ = ["STAGES", "Snapshot", "metric_families", "take_snapshot"]

STAGES = ("queue_wait", "run", "end_to_end")


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What a scrape reads of a Runtime, taken on its event loop in one go.

    ``statistics`` is ``msgspec.to_builtins(rt.statistics())``; ``latency`` maps task class ->
    stage -> histogram (copies: the families are built in another thread); ``alerts`` holds
    the pending and firing alerts as dicts (``name``, ``state``, ``labels``, ``value``), or
    None when there is no Alerter.
    """

    name: str
    uptime_s: float
    statistics: dict[str, Any]
    gauges: list[tuple[str, Labels, float]] = []
    help: dict[str, str] = {}
    latency: dict[str, dict[str, Histogram]] = {}
    loop_lag: Histogram | None = None
    deadlines_s: dict[str, float] = {}
    budget: dict[str, float] = {}
    alerts: list[dict[str, Any]] | None = None


def metric_families(snapshot: Snapshot) -> list[Metric]:
    """Every family of ``snapshot``, ours first, then the registry's gauges."""
    families = Families()
    services = as_dict(snapshot.statistics.get("services"))
    families.add("jarvis_runtime_info", "gauge", "The runtime's name", 1, runtime=snapshot.name)
    _rows(families, _RUNTIME_ROWS, {"uptime_s": snapshot.uptime_s, **snapshot.budget})
    _task_families(families, snapshot, as_dict(services.get("scheduler")))
    _kernel_families(families, snapshot.statistics)
    for section, prefix in (("cache", "jarvis_cache"), ("quotas", "jarvis_quota")):
        if isinstance(services.get(section), dict):
            walk_statistics(families, prefix, services[section], {}, section=section)
    _alert_families(families, snapshot.alerts, services.get("alerts"))
    add_registry_gauges(families, snapshot.gauges, snapshot.help)
    about = "Series left out because their name was taken by another family"
    families.add("jarvis_exporter_conflicts", "gauge", about, families.conflicts)
    return families.metrics()


Row = tuple[str, str, str, str]
"""``(statistics field, family name, gauge or counter, help text)``."""


def _rows(
    families: Families, rows: tuple[Row, ...], stats: Mapping[str, Any], **labels: str
) -> None:
    for field, name, kind, help_text in rows:
        families.add(name, kind, help_text, stats.get(field), **labels)


_RUNTIME_ROWS: tuple[Row, ...] = (
    ("uptime_s", "jarvis_runtime_uptime_seconds", "gauge", "Seconds since the runtime started"),
    ("memory_bytes", "jarvis_budget_memory_bytes", "gauge", "Memory budget (quotas.budget)"),
    ("cpu_percent", "jarvis_budget_cpu_percent", "gauge", "CPU budget, % of the machine"),
)
_CLASS_ROWS: tuple[Row, ...] = (
    ("queue_depth", "jarvis_task_queue_depth", "gauge", "Tasks of the class waiting to start"),
    ("running", "jarvis_task_running", "gauge", "Tasks of the class running"),
    ("limit", "jarvis_task_concurrency_limit", "gauge", "Tasks of the class allowed at once"),
    ("admitted", "jarvis_tasks_admitted", "counter", "Tasks admitted"),
    ("completed", "jarvis_tasks_completed", "counter", "Tasks that returned"),
    ("failed", "jarvis_tasks_failed", "counter", "Tasks that raised or were cancelled"),
    ("expired", "jarvis_tasks_expired", "counter", "Tasks whose deadline passed in the queue"),
    ("cancelled", "jarvis_tasks_cancelled", "counter", "Tasks cancelled by their submitter"),
    ("refused", "jarvis_tasks_refused", "counter", "Tasks refused with Overloaded"),
    ("shed", "jarvis_tasks_shed", "counter", "Tasks refused by load shedding (in refused)"),
    ("deadline_misses", "jarvis_task_deadline_misses", "counter", "Tasks late for deadline"),
)
_SCHEDULER_ROWS: tuple[Row, ...] = (
    ("queued", "jarvis_scheduler_queued", "gauge", "Tasks waiting, all classes"),
    ("active", "jarvis_scheduler_active", "gauge", "Tasks running, all classes"),
    ("overloaded", "jarvis_scheduler_overloaded", "gauge", "1 while background work is refused"),
    ("background_paused", "jarvis_scheduler_background_paused", "gauge", "1 while paused"),
    ("loop_lag_s", "jarvis_scheduler_loop_lag_seconds", "gauge", "Loop lag the scheduler saw"),
)
_ACTOR_ROWS: tuple[Row, ...] = (
    ("restarts", "jarvis_actor_restarts", "counter", "Actor restarts"),
    ("handled", "jarvis_actor_messages_handled", "counter", "Messages the actor handled"),
    ("failed", "jarvis_actor_messages_failed", "counter", "Messages whose handler raised"),
)
_MAILBOX_ROWS: tuple[Row, ...] = (
    ("depth", "jarvis_mailbox_depth", "gauge", "Messages waiting in the actor's mailbox"),
    ("capacity", "jarvis_mailbox_capacity", "gauge", "Capacity of the actor's mailbox"),
    ("high_water", "jarvis_mailbox_high_water", "gauge", "Most messages the mailbox held"),
    ("waiting_senders", "jarvis_mailbox_waiting_senders", "gauge", "Senders waiting for room"),
    ("dropped", "jarvis_mailbox_dropped", "counter", "Messages the mailbox's policy dropped"),
)
_ALERTER_ROWS: tuple[Row, ...] = (
    ("rules", "jarvis_alert_rules", "gauge", "Alert rules evaluated"),
    ("pending", "jarvis_alert_pending", "gauge", "Alerts pending"),
    ("firing", "jarvis_alert_firing", "gauge", "Alerts firing"),
    ("evaluations", "jarvis_alert_evaluations", "counter", "Rule evaluation rounds"),
)


def _task_families(families: Families, snapshot: Snapshot, scheduler: dict[str, Any]) -> None:
    about = "The class's default deadline: its latency target"
    for task_class, deadline_s in snapshot.deadlines_s.items():
        families.add(
            "jarvis_task_deadline_seconds", "gauge", about, deadline_s, task_class=task_class
        )
    for task_class, stats in by_name(scheduler.get("classes")).items():
        _rows(families, _CLASS_ROWS, stats, task_class=task_class)
    about = "Task latency by class and stage: queue_wait (submitted to started), run, end_to_end"
    for task_class, stages in snapshot.latency.items():
        for stage, data in stages.items():
            families.histogram(
                "jarvis_task_latency_seconds", about, data, task_class=task_class, stage=stage
            )
    if snapshot.loop_lag is not None:
        about = "Event-loop heartbeat lateness"
        families.histogram("jarvis_loop_lag_seconds", about, snapshot.loop_lag)
    if not scheduler:
        return
    _rows(families, _SCHEDULER_ROWS, scheduler)
    for key in ("slots", "busy"):
        for executor, value in as_dict(scheduler.get(key)).items():
            about = f"Worker {key} per executor"
            families.add(f"jarvis_executor_{key}", "gauge", about, value, executor=executor)
    pools = {"pools": scheduler.get("pools")}
    walk_statistics(families, "jarvis_scheduler", pools, {}, section="scheduler")


def _kernel_families(families: Families, statistics: Mapping[str, Any]) -> None:
    _supervisor_families(families, as_dict(statistics.get("supervisor")))
    dead = as_dict(statistics.get("dead_letters"))
    families.add("jarvis_dead_letters", "counter", "Messages never delivered", dead.get("total"))
    about = "Messages never delivered, by reason"
    for reason, count in as_dict(dead.get("by_reason")).items():
        families.add("jarvis_dead_letters_by_reason", "counter", about, count, reason=reason)
    events = as_dict(statistics.get("events"))
    for event, count in as_dict(events.get("published")).items():
        families.add("jarvis_events_published", "counter", "Events published", count, event=event)
    about = "Events slow subscribers lost"
    families.add("jarvis_events_dropped", "counter", about, events.get("dropped"))
    about = "Events waiting in a subscription"
    for sub in events.get("subscriptions") or []:
        if isinstance(sub, dict):
            name = str(sub.get("name") or "unnamed")
            families.add(
                "jarvis_event_subscription_depth",
                "gauge",
                about,
                sub.get("depth"),
                subscription=name,
            )


def _supervisor_families(families: Families, tree: dict[str, Any]) -> None:
    supervisor = str(tree.get("name", ""))
    about = "Restarts the supervisor performed"
    families.add(
        "jarvis_supervisor_restarts", "counter", about, tree.get("restarts"), supervisor=supervisor
    )
    for actor in tree.get("actors") or []:
        if isinstance(actor, dict):
            labels = {"supervisor": supervisor, "actor": str(actor.get("name", ""))}
            _rows(families, _ACTOR_ROWS, actor, **labels)
            _rows(families, _MAILBOX_ROWS, as_dict(actor.get("mailbox")), **labels)
    for child in tree.get("supervisors") or []:
        if isinstance(child, dict):
            _supervisor_families(families, child)


def _alert_families(families: Families, alerts: list[dict[str, Any]] | None, stats: Any) -> None:
    _rows(families, _ALERTER_ROWS, as_dict(stats))
    about = "One series per pending or firing alert, like Prometheus's ALERTS"
    for alert in alerts or []:
        labels = {str(k): str(v) for k, v in as_dict(alert.get("labels")).items()}
        labels["alertname"] = str(alert.get("name", labels.get("alertname", "")))
        labels["alertstate"] = str(alert.get("state", ""))
        families.add("jarvis_alerts", "gauge", about, 1, **labels)


def take_snapshot(rt: Runtime) -> Snapshot:
    """What a scrape reads of ``rt``. Call it on the runtime's event loop."""
    statistics = rt.statistics()
    builtins = msgspec.to_builtins(statistics, str_keys=True, enc_hook=repr)
    services = builtins.get("services", {})
    config = rt.config
    profiler = _face(rt, "profiler") if "profiler" in services else None
    alerts = _face(rt, "alerts") if "alerts" in services else None
    return Snapshot(
        name=statistics.name,
        uptime_s=statistics.uptime_s,
        statistics=builtins,
        gauges=sorted((g.name, g.labels, g.value) for g in rt.metrics),
        help={n: t for n in rt.metrics.names() if (t := rt.metrics.help_text(n)) is not None},
        latency=_latency(profiler, services.get("profiler")),
        loop_lag=profiler.loop_lag.copy() if profiler is not None else None,
        deadlines_s={
            name: task_class.deadline_ms / 1000
            for name, task_class in config.scheduler.classes.items()
            if task_class.deadline_ms is not None
        },
        budget={
            "memory_bytes": config.quotas.budget.memory_mb * 2**20,
            "cpu_percent": config.quotas.budget.cpu_percent,
        },
        alerts=_alerts(alerts) if alerts is not None else None,
    )


def _face(rt: Runtime, name: str) -> Any:
    """``rt.<name>``, or None when the Runtime has no such service face (yet)."""
    try:
        return getattr(rt, name)
    except (AttributeError, RuntimeError):
        return None


def _latency(profiler: Any, stats: Any) -> dict[str, dict[str, Histogram]]:
    """A copy of each class's histogram at each stage, for the classes the profiler has seen
    (copies are cheaper on the loop than cumulative counts, which the scrape thread makes)."""
    if profiler is None or not isinstance(stats, dict):
        return {}
    classes = stats.get("classes")
    return {
        task_class: {stage: profiler.histogram(task_class, stage).copy() for stage in STAGES}
        for task_class in (classes if isinstance(classes, dict) else {})
    }


def _alerts(alerts: Any) -> list[dict[str, Any]]:
    found = [*alerts.pending(), *alerts.active()]
    return [
        a for a in msgspec.to_builtins(found, str_keys=True, enc_hook=repr) if isinstance(a, dict)
    ]
