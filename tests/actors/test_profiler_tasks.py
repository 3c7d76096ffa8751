"""Per-class latency from task events, and blocking calls grouped by place."""

from __future__ import annotations

import math

import pytest

from actors.profiler.blocking import BlockingSites
from actors.profiler.lag import BlockingCall
from actors.profiler.stacks import StackFrame
from actors.profiler.tasks import TaskLatencies
from runtime.events import (
    CacheHit,
    DeadlineMissed,
    TaskFinished,
    TaskId,
    TaskQueued,
    TaskStarted,
)


def queued(
    task_id: TaskId, task_class: str = "voice", deadline_s: float | None = 1.0
) -> TaskQueued:
    return TaskQueued(
        at=0.0, actor="scheduler", task_id=task_id, task_class=task_class, priority=1,
        deadline_s=deadline_s,
    )  # fmt: skip


def started(task_id: TaskId, wait_s: float, task_class: str = "voice") -> TaskStarted:
    return TaskStarted(
        at=0.0, actor="scheduler", task_id=task_id, task_class=task_class, queue_wait_s=wait_s
    )


def finished(
    task_id: TaskId, wait_s: float, run_s: float, task_class: str = "voice", ok: bool = True
) -> TaskFinished:
    return TaskFinished(
        at=0.0, actor="scheduler", task_id=task_id, task_class=task_class, queue_wait_s=wait_s,
        run_s=run_s, ok=ok, error=None if ok else "ValueError: bad audio",
    )  # fmt: skip


def run_task(
    latencies: TaskLatencies, task_id: TaskId, wait_s: float, run_s: float, **kwargs: object
) -> None:
    task_class = str(kwargs.get("task_class", "voice"))
    latencies.ingest(queued(task_id, task_class))
    latencies.ingest(started(task_id, wait_s, task_class))
    latencies.ingest(finished(task_id, wait_s, run_s, task_class, bool(kwargs.get("ok", True))))


def test_events_fill_queue_wait_run_and_end_to_end_per_class() -> None:
    """Queue wait comes from TaskStarted, run time and end to end from TaskFinished, each in
    the task's class, with sub-millisecond values resolved."""
    latencies = TaskLatencies()
    for i in range(100):
        run_task(latencies, i, wait_s=0.0002, run_s=0.0004)
    run_task(latencies, 100, wait_s=0.003, run_s=0.050, task_class="command")
    voice = latencies.snapshot("voice")
    assert (voice.queued, voice.started, voice.finished, voice.failed) == (100, 100, 100, 0)
    assert voice.queue_wait.p50_ms == pytest.approx(0.2)
    assert voice.run.p50_ms == pytest.approx(0.4)
    assert voice.end_to_end.p50_ms == pytest.approx(0.6)
    assert voice.deadline_ms == 1000.0
    command = latencies.snapshot("command")
    assert command.end_to_end.max_ms == pytest.approx(53.0) and command.finished == 1
    assert latencies.classes == ["voice", "command"]


def test_a_task_that_never_started_has_no_run_time() -> None:
    """A TaskFinished without a TaskStarted (expired or cancelled in the queue) counts in end
    to end, not in run time or queue wait."""
    latencies = TaskLatencies()
    latencies.ingest(queued(1))
    latencies.ingest(finished(1, wait_s=1.2, run_s=0.0, ok=False))
    voice = latencies.snapshot("voice")
    assert (voice.finished, voice.failed) == (1, 1)
    assert voice.end_to_end.count == 1 and voice.end_to_end.max_ms == pytest.approx(1200.0)
    assert voice.run.count == 0 and voice.queue_wait.count == 0


def test_deadline_misses_are_counted_with_the_worst_lateness() -> None:
    """DeadlineMissed events count per class, keeping how late the worst one was."""
    latencies = TaskLatencies()
    for task_id, late_s in ((1, 0.02), (2, 0.31), (3, 0.1)):
        latencies.ingest(
            DeadlineMissed(
                at=0.0,
                actor="scheduler",
                task_id=task_id,
                task_class="voice",
                deadline_s=1.0,
                late_by_s=late_s,
            )
        )
    voice = latencies.snapshot("voice")
    assert voice.deadline_misses == 3 and voice.worst_late_ms == pytest.approx(310.0)


def test_other_events_are_ignored() -> None:
    """Events that are not about tasks change nothing."""
    latencies = TaskLatencies()
    latencies.ingest(CacheHit(at=0.0, actor="cache", key="k", namespace="response", tier="l1"))
    assert latencies.classes == [] and latencies.snapshots() == {}


def test_invalid_latencies_are_counted_as_rejected() -> None:
    """A negative or NaN latency is not recorded; it is counted in ``rejected``."""
    latencies = TaskLatencies()
    latencies.ingest(started(1, wait_s=-0.5))
    latencies.ingest(finished(1, wait_s=-0.5, run_s=math.nan))
    voice = latencies.snapshot("voice")
    assert latencies.rejected == 3
    assert voice.queue_wait.count == voice.run.count == voice.end_to_end.count == 0
    assert voice.finished == 1


def test_the_started_tasks_remembered_are_bounded() -> None:
    """Past max_running starts without a finish, the oldest start is forgotten: its finish
    then has no run time."""
    latencies = TaskLatencies(max_running=2)
    for task_id in (1, 2, 3):
        latencies.ingest(started(task_id, 0.001))
    for task_id in (1, 2, 3):
        latencies.ingest(finished(task_id, 0.001, 0.01))
    assert latencies.snapshot("voice").run.count == 2


def test_a_class_histogram_is_live_and_errors_name_the_problem() -> None:
    """histogram() returns the live histogram; an unknown class raises KeyError listing the
    known ones, a bad stage ValueError listing the stages."""
    latencies = TaskLatencies()
    run_task(latencies, 1, 0.001, 0.002)
    histogram = latencies.histogram("voice", "run")
    run_task(latencies, 2, 0.001, 0.004)
    assert histogram.count == 2
    with pytest.raises(KeyError, match=r"'music'.*known: voice"):
        latencies.histogram("music", "run")
    with pytest.raises(ValueError, match="stage must be one of queue_wait, run, end_to_end"):
        latencies.histogram("voice", "total")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_running must be >= 1"):
        TaskLatencies(max_running=0)


def test_an_unknown_class_snapshot_is_empty() -> None:
    """snapshot() of a class no event named is all zeros."""
    snapshot = TaskLatencies().snapshot("music")
    assert snapshot.finished == 0 and snapshot.end_to_end.count == 0


# -- blocking sites ----------------------------------------------------------------------------


def block(function: str, line: int, ms: float, computing: bool | None = None) -> BlockingCall:
    return BlockingCall(
        at=1.0, blocked_ms=ms, function=function, file="/app/skills.py", line=line,
        stack=[StackFrame(function, "/app/skills.py", line)], computing=computing,
        cpu_percent=None if computing is None else (95.0 if computing else 1.0),
    )  # fmt: skip


def test_blocking_calls_group_by_place_worst_total_first() -> None:
    """Calls from one place add up (count, total, max, mean CPU, mostly computing or not);
    places rank by the blocked time they cost in all."""
    sites = BlockingSites()
    for ms in (60.0, 80.0):
        sites.add(block("parse", 10, ms, computing=True))
    sites.add(block("fetch", 20, 120.0, computing=False))
    top = sites.top()
    assert [(s.function, s.count, s.total_ms, s.max_ms) for s in top] == [
        ("parse", 2, 140.0, 80.0),
        ("fetch", 1, 120.0, 120.0),
    ]
    assert (top[0].computing, top[0].cpu_percent, top[0].where) == (True, 95.0, "/app/skills.py:10")
    assert (top[1].computing, top[1].cpu_percent) == (False, 1.0)
    assert (
        sites.total == 3 and len(sites) == 2 and [c.function for c in sites.recent][-1] == "fetch"
    )


def test_a_place_with_no_measured_blocks_has_unknown_kind() -> None:
    """Without a thread state or CPU measure, a place's kind and CPU use are unknown."""
    sites = BlockingSites()
    sites.add(block("mystery", 1, 70.0))
    [site] = sites.top()
    assert site.computing is None and site.cpu_percent is None


def test_the_cheapest_place_is_forgotten_when_full() -> None:
    """Past max_sites, the place that cost the least blocked time is dropped; recent calls
    are a bounded ring."""
    sites = BlockingSites(max_sites=2, recent=2)
    sites.add(block("a", 1, 100.0))
    sites.add(block("b", 2, 60.0))
    sites.add(block("c", 3, 70.0))
    assert [s.function for s in sites.top()] == ["a", "c"]
    assert [c.function for c in sites.recent] == ["b", "c"]
    assert [s.function for s in sites.top(1)] == ["a"]
    with pytest.raises(ValueError, match="max_sites and recent must be >= 1"):
        BlockingSites(max_sites=0)
