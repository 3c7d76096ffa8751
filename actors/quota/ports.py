"""What the quota enforcer needs of the scheduler, as protocols (actors never import each other).

The Runtime hands the enforcer its ``Scheduler``, which has all of this: hooks called with
each task, holding a task out of its queue while it waits for a quota, ending a task with a
quota's error, and watching a task's worker process. Tasks are passed around as ``Any`` in
the scheduler's methods (the enforcer only hands back what it was given) and read through
``TaskView``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["HooksView", "SchedulerPort", "TaskView", "WatchView"]


class WatchView(Protocol):
    """A watched process call (``actors.scheduler.watch.ProcessWatch``)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def running(self) -> bool: ...

    @property
    def start_rss_bytes(self) -> int | None: ...

    @property
    def cpu_s(self) -> float | None: ...

    @property
    def peak_rss_bytes(self) -> int | None: ...

    def pause(self) -> bool: ...

    def resume(self) -> bool: ...


class TaskView(Protocol):
    """What the enforcer reads of a scheduler task."""

    @property
    def id(self) -> int: ...

    @property
    def task_class(self) -> str: ...

    @property
    def plugin(self) -> str | None: ...

    @property
    def run_in(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def deadline_at(self) -> float | None: ...

    @property
    def started_at(self) -> float | None: ...

    @property
    def error(self) -> BaseException | None: ...


class HooksView(Protocol):
    """The scheduler's hook lists: each callable gets the task."""

    admission: list[Callable[[Any], None]]
    start: list[Callable[[Any], None]]
    finish: list[Callable[[Any], None]]


class SchedulerPort(Protocol):
    """The scheduler's seam for policies."""

    @property
    def hooks(self) -> HooksView: ...

    def hold(self, task: Any) -> None: ...

    def release(self, task: Any, error: BaseException | None = None) -> bool: ...

    def cancel(self, task: Any, error: BaseException | None = None) -> None: ...

    def watch(
        self, task: Any, *, memory_limit_bytes: int | None = None, cpu_limit_s: int | None = None
    ) -> WatchView: ...
