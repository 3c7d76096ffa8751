"""Latency per task class, fed by the scheduler's events.

Three histograms per class: queue wait (from ``TaskStarted``: how long a task waited for a
slot), run time and end to end (from ``TaskFinished``: run time only for tasks that started,
end to end for every task, failed or not, since that is what the caller waited). Counts of
queued, started, finished, failed and deadline misses ride along. Pure and synchronous: the
profiler feeds it whatever events it drained.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import msgspec

from runtime.events import DeadlineMissed, Event, TaskFinished, TaskQueued, TaskStarted

from .histogram import LatencyHistogram, LatencySummary

__all__ = ["STAGES", "ClassLatency", "Stage", "TaskLatencies"]

Stage = Literal["queue_wait", "run", "end_to_end"]
STAGES: tuple[Stage, ...] = ("queue_wait", "run", "end_to_end")
TASK_EVENTS: tuple[type[Event], ...] = (TaskQueued, TaskStarted, TaskFinished, DeadlineMissed)


class ClassLatency(msgspec.Struct, frozen=True, kw_only=True):
    """One task class: its counts and its latency at each stage (milliseconds).

    ``deadline_ms`` is the last deadline a ``TaskQueued`` of the class carried (``None``: none
    seen); ``worst_late_ms`` the furthest past its deadline a task finished.
    """

    task_class: str
    queued: int = 0
    started: int = 0
    finished: int = 0
    failed: int = 0
    deadline_misses: int = 0
    worst_late_ms: float = 0.0
    deadline_ms: float | None = None
    queue_wait: LatencySummary = LatencySummary()
    run: LatencySummary = LatencySummary()
    end_to_end: LatencySummary = LatencySummary()


class _ClassRecord:
    __slots__ = (
        "deadline_misses",
        "deadline_s",
        "failed",
        "finished",
        "histograms",
        "queued",
        "started",
        "worst_late_s",
    )

    def __init__(self) -> None:
        self.histograms: dict[Stage, LatencyHistogram] = {s: LatencyHistogram() for s in STAGES}
        self.queued = self.started = self.finished = self.failed = self.deadline_misses = 0
        self.worst_late_s = 0.0
        self.deadline_s: float | None = None


class TaskLatencies:
    """Per-class histograms and counts from task events.

    Tasks that started are remembered (up to ``max_running``, the oldest forgotten first) so a
    ``TaskFinished`` knows whether it has a run time. Values a histogram refuses (negative,
    NaN) are counted in ``rejected``, not recorded. Raises ``ValueError`` for a
    ``max_running`` below 1.
    """

    def __init__(self, *, max_running: int = 100_000) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        self.max_running = max_running
        self.rejected = 0
        self._classes: dict[str, _ClassRecord] = {}
        self._running: dict[tuple[str, int | str], None] = {}

    def ingest(self, event: Event) -> None:
        """Account for one event; events other than the task events are ignored."""
        match event:
            case TaskStarted():
                record = self._record(event.task_class)
                record.started += 1
                self._record_value(record, "queue_wait", event.queue_wait_s)
                self._remember(event.actor, event.task_id)
            case TaskFinished():
                self._finished(event)
            case TaskQueued():
                record = self._record(event.task_class)
                record.queued += 1
                if event.deadline_s is not None:
                    record.deadline_s = event.deadline_s
            case DeadlineMissed():
                record = self._record(event.task_class)
                record.deadline_misses += 1
                record.worst_late_s = max(record.worst_late_s, event.late_by_s)

    def _finished(self, event: TaskFinished) -> None:
        record = self._record(event.task_class)
        record.finished += 1
        record.failed += not event.ok
        key = (event.actor, event.task_id)
        if key in self._running:  # a task that never started has no run time
            del self._running[key]
            self._record_value(record, "run", event.run_s)
        self._record_value(record, "end_to_end", event.queue_wait_s + event.run_s)

    def _record(self, task_class: str) -> _ClassRecord:
        record = self._classes.get(task_class)
        if record is None:
            record = self._classes[task_class] = _ClassRecord()
        return record

    def _record_value(self, record: _ClassRecord, stage: Stage, seconds: float) -> None:
        try:
            record.histograms[stage].record(seconds)
        except ValueError:
            self.rejected += 1

    def _remember(self, actor: str, task_id: int | str) -> None:
        running = self._running
        running[(actor, task_id)] = None
        if len(running) > self.max_running:  # finishes were lost: forget the oldest starts
            del running[next(iter(running))]

    # -- reading ----------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def histogram(self, task_class: str, stage: Stage) -> LatencyHistogram:
        """The live histogram of ``task_class`` at ``stage``. Raises ``KeyError`` for a class
        no event has named (the message lists the known ones), ``ValueError`` for a bad
        ``stage``."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
        record = self._classes.get(task_class)
        if record is None:
            known = ", ".join(self._classes) or "none yet"
            raise KeyError(f"no task events seen for task_class {task_class!r} (known: {known})")
        return record.histograms[stage]

    def snapshot(self, task_class: str) -> ClassLatency:
        """The counts and percentile summaries of one class (empty for an unknown class)."""
        record = self._classes.get(task_class)
        if record is None:
            return ClassLatency(task_class=task_class)
        summaries = {stage: h.summary() for stage, h in record.histograms.items()}
        return ClassLatency(
            task_class=task_class,
            queued=record.queued,
            started=record.started,
            finished=record.finished,
            failed=record.failed,
            deadline_misses=record.deadline_misses,
            worst_late_ms=record.worst_late_s * 1000.0,
            deadline_ms=None if record.deadline_s is None else record.deadline_s * 1000.0,
            **summaries,
        )

    def snapshots(self) -> dict[str, ClassLatency]:
        """Every class seen, by name."""
        return {name: self.snapshot(name) for name in self._classes}

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)
