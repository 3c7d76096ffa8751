"""The bottleneck report: the worst class, the worst blocking call, and what to do about them.

Pure: it reads the per-class latencies, the blocking sites, the loop lag and the scheduler's
class settings, and ranks. A class's verdict is its end-to-end p99 over its deadline (the
scheduler's ``deadline_ms``, else the deadline its tasks carried): the worst class is the one
furthest over (without deadlines anywhere: the slowest). The worst blocking call is the place
that cost the loop the most blocked time. Recommendations name the function, the file and line,
the class and the setting to change.
"""

from __future__ import annotations

import msgspec

from runtime.config import SchedulerSection, TaskClassConfig

from .blocking import BlockingSite
from .histogram import LatencySummary
from .tasks import ClassLatency

__all__ = ["BottleneckReport", "ClassVerdict", "build_report"]

NO_BOTTLENECK = "no bottleneck: every class is within its deadline and nothing blocks the loop"


class ClassVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """One class against its deadline: ``ratio`` is end-to-end p99 / deadline (``None``
    without a deadline); above 1 the class misses its target."""

    task_class: str
    deadline_ms: float | None
    p99_ms: float
    ratio: float | None
    queue_wait_p99_ms: float
    run_p99_ms: float
    finished: int
    deadline_misses: int
    max_concurrency: int | None = None
    executor: str | None = None


class BottleneckReport(msgspec.Struct, frozen=True, kw_only=True):
    """What is slow and why: classes worst first, blocking places worst first, loop lag, and
    recommendations in order of impact."""

    generated_at: float
    worst_class: ClassVerdict | None
    worst_blocking_call: BlockingSite | None
    classes: list[ClassVerdict]
    blocking_calls: list[BlockingSite]
    loop_lag: LatencySummary
    recommendations: list[str]

    def render(self) -> str:
        """The report as text for people."""
        lines = ["bottleneck report", "", "task classes (end-to-end p99 against deadline):"]
        lines += [f"  {_describe_class(v)}" for v in self.classes] or ["  no task finished yet"]
        lines += ["", "blocking calls on the event loop (worst first):"]
        lines += [f"  {_describe_site(s)}" for s in self.blocking_calls] or ["  none"]
        lag = self.loop_lag
        lines += [
            "",
            f"loop lag: p50 {lag.p50_ms:.2f} ms, p99 {lag.p99_ms:.2f} ms, max {lag.max_ms:.2f} ms "
            f"over {lag.count} heartbeats",
            "",
            "what to do:",
        ]
        lines += [f"  {i}. {r}" for i, r in enumerate(self.recommendations, 1)]
        return "\n".join(lines)


def _describe_class(v: ClassVerdict) -> str:
    target = "no deadline" if v.deadline_ms is None else f"deadline {v.deadline_ms:g} ms"
    ratio = "" if v.ratio is None else f" ({v.ratio:.2f}x)"
    return (
        f"{v.task_class}: p99 {v.p99_ms:.2f} ms, {target}{ratio}; queue wait p99 "
        f"{v.queue_wait_p99_ms:.2f} ms, run p99 {v.run_p99_ms:.2f} ms; {v.finished} finished, "
        f"{v.deadline_misses} missed"
    )


def _describe_site(s: BlockingSite) -> str:
    kind = {True: ", computing", False: ", waiting", None: ""}[s.computing]
    return (
        f"{s.function} at {s.where}: {s.count}x, max {s.max_ms:.1f} ms, "
        f"total {s.total_ms:.1f} ms{kind}"
    )


def build_report(
    classes: dict[str, ClassLatency],
    sites: list[BlockingSite],
    loop_lag: LatencySummary,
    *,
    scheduler: SchedulerSection | None,
    threshold_ms: float,
    generated_at: float,
) -> BottleneckReport:
    """Rank the classes and the blocking places and say what to do (``sites`` worst first)."""
    configs = scheduler.classes if scheduler is not None else {}
    verdicts = [_verdict(c, configs.get(name)) for name, c in classes.items() if c.finished]
    verdicts.sort(key=_severity, reverse=True)
    return BottleneckReport(
        generated_at=generated_at,
        worst_class=verdicts[0] if verdicts else None,
        worst_blocking_call=sites[0] if sites else None,
        classes=verdicts,
        blocking_calls=sites,
        loop_lag=loop_lag,
        recommendations=_recommend(verdicts, sites, loop_lag, threshold_ms),
    )


def _verdict(c: ClassLatency, config: TaskClassConfig | None) -> ClassVerdict:
    deadline_ms: float | None = c.deadline_ms
    if config is not None and config.deadline_ms is not None:
        deadline_ms = float(config.deadline_ms)
    p99_ms = c.end_to_end.p99_ms
    return ClassVerdict(
        task_class=c.task_class,
        deadline_ms=deadline_ms,
        p99_ms=p99_ms,
        ratio=None if deadline_ms is None else p99_ms / deadline_ms,
        queue_wait_p99_ms=c.queue_wait.p99_ms,
        run_p99_ms=c.run.p99_ms,
        finished=c.finished,
        deadline_misses=c.deadline_misses,
        max_concurrency=None if config is None else config.max_concurrency,
        executor=None if config is None else config.executor,
    )


def _severity(v: ClassVerdict) -> tuple[bool, float]:
    """Classes with a deadline rank by how far over it they are, above those without one
    (which rank by their p99)."""
    return (v.ratio is not None, v.ratio if v.ratio is not None else v.p99_ms)


def _recommend(
    verdicts: list[ClassVerdict],
    sites: list[BlockingSite],
    loop_lag: LatencySummary,
    threshold_ms: float,
) -> list[str]:
    advice = [_move_off_the_loop(s) for s in sites[:3]]
    advice += [_fix_class(v) for v in verdicts if _late(v)]
    if not sites and loop_lag.p99_ms > threshold_ms:
        advice.append(
            f"the event loop lags {loop_lag.p99_ms:.1f} ms (p99; threshold {threshold_ms:g} ms) "
            "without one long block: too much work runs on the loop; move CPU-heavy work to "
            "run_in='process' or lower scheduler.loop_workers"
        )
    return advice or [NO_BOTTLENECK]


def _late(v: ClassVerdict) -> bool:
    return v.deadline_misses > 0 or (v.ratio is not None and v.ratio > 1.0)


def _move_off_the_loop(s: BlockingSite) -> str:
    seen = (
        f"it blocked the event loop {s.count}x, up to {s.max_ms:.0f} ms "
        f"({s.total_ms:.0f} ms in all)"
    )
    if s.computing is None:
        return (
            f"move {s.function} at {s.where} off the event loop: run_in='thread' if it waits "
            f"(I/O, sleep, a lock), run_in='process' if it computes; {seen}"
        )
    if s.computing:
        return (
            f"move {s.function} at {s.where} to run_in='process': {seen}, computing; "
            "in a thread it would still hold the GIL"
        )
    return (
        f"move {s.function} at {s.where} to run_in='thread' (or make it async): {seen}, "
        "waiting (I/O, a sleep or a lock)"
    )


def _fix_class(v: ClassVerdict) -> str:
    deadline = "its deadline" if v.deadline_ms is None else f"its {v.deadline_ms:g} ms deadline"
    if v.queue_wait_p99_ms >= v.run_p99_ms:
        limit = "" if v.max_concurrency is None else f" (now {v.max_concurrency})"
        return (
            f"raise max_concurrency of {v.task_class}{limit} or its reserved slots: its tasks "
            f"wait {v.queue_wait_p99_ms:.1f} ms (p99) for a slot, against {deadline}"
        )
    if v.executor == "loop":
        where = "run it off the loop (executor: thread for I/O, process for CPU-bound work)"
    elif v.executor == "thread":
        where = "use executor: process if it is CPU-bound (threads share the GIL)"
    else:
        where = "cache its results or split the work"
    return (
        f"speed up {v.task_class}: it runs {v.run_p99_ms:.1f} ms (p99) against {deadline} "
        f"({v.deadline_misses} missed); {where}"
    )
