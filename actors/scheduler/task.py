"""A scheduled task: the record the dispatch queue orders, and the handle its submitter holds.

A ``Task`` is plain data plus its outcome. The dispatch queue reads ``task_class``, ``run_in``,
``deadline_at``, ``submitted_at`` and ``id`` (the arrival order) and writes ``state``; the
service writes the timings and the outcome. A policy such as plugin quotas may hold a task
out of the queue while it is admitted (state ``held``), end it with an error of its own
(``cancel_error``) and watch its worker process (``watch``). A ``TaskHandle`` is the
submitter's view: wait for the result, ask whether it is done, cancel it.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import anyio

if TYPE_CHECKING:
    from .watch import ProcessWatch

__all__ = ["Executor", "Task", "TaskHandle", "TaskState"]

T = TypeVar("T")
Executor = Literal["loop", "thread", "process"]
TaskState = Literal["new", "held", "queued", "running", "done"]


class Task:
    """One unit of work: what to call, where, by when, and how it ended.

    ``deadline_s`` is relative to ``submitted_at``; ``deadline_at`` is the same instant on the
    scheduler's clock (``None``: no deadline).
    """

    __slots__ = (
        "args",
        "call",
        "cancel_error",
        "cancel_requested",
        "deadline_at",
        "deadline_s",
        "error",
        "finished",
        "finished_at",
        "fn",
        "id",
        "kwargs",
        "missed",
        "plugin",
        "priority",
        "run_in",
        "scope",
        "started_at",
        "state",
        "submitted_at",
        "task_class",
        "value",
        "watch",
    )

    def __init__(
        self,
        id: int,
        task_class: str,
        *,
        fn: Callable[..., Any] | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        run_in: Executor = "loop",
        priority: int = 0,
        submitted_at: float = 0.0,
        deadline_s: float | None = None,
        plugin: str | None = None,
    ) -> None:
        self.id = id
        self.task_class = task_class
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or {}
        self.run_in: Executor = run_in
        self.priority = priority
        self.submitted_at = submitted_at
        self.deadline_s = deadline_s
        self.deadline_at = None if deadline_s is None else submitted_at + deadline_s
        self.plugin = plugin
        self.state: TaskState = "new"
        self.call: Any = None  # the pool's prepared call, for process tasks
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.missed = False  # its deadline miss is counted (once per task)
        self.cancel_requested = False
        self.cancel_error: BaseException | None = None  # what a cancelled task ends with
        self.watch: ProcessWatch | None = None  # limits and usage of its process call
        self.scope: anyio.CancelScope | None = None  # set while it runs
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished: anyio.Event | None = None  # set by the service, which has a loop

    @property
    def queue_wait_s(self) -> float:
        """Seconds from submission to start (0 until it starts)."""
        return 0.0 if self.started_at is None else self.started_at - self.submitted_at

    @property
    def run_s(self) -> float:
        """Seconds from start to finish (0 if it never ran)."""
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.started_at

    def settle(self, *, value: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome and wake whoever waits for it (once: later calls are ignored)."""
        if self.state == "done":
            return
        self.state = "done"
        self.value, self.error = value, error
        self.fn, self.args, self.kwargs, self.call = None, (), {}, None  # free what it held
        if self.finished is not None:
            self.finished.set()

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.task_class} {self.run_in} {self.state}>"


class TaskHandle(Generic[T]):
    """The submitter's side of a spawned task: ``await h.result()``, ``h.done()``, ``h.cancel()``.

    Cancelling a queued task removes it without running it; cancelling a running one cancels
    its coroutine, abandons its thread (which finishes in the background, result discarded) or
    kills its worker process.
    """

    __slots__ = ("_cancel", "_task")

    def __init__(self, task: Task, cancel: Callable[[Task], None]) -> None:
        self._task = task
        self._cancel = cancel

    @property
    def id(self) -> int:
        return self._task.id

    @property
    def task_class(self) -> str:
        return self._task.task_class

    @property
    def plugin(self) -> str | None:
        return self._task.plugin

    def done(self) -> bool:
        """Whether the task has finished: returned, raised, was refused, expired or cancelled."""
        return self._task.state == "done"

    def cancel(self) -> None:
        """Cancel the task (a no-op once it is done)."""
        if self._task.state != "done":
            self._cancel(self._task)

    async def result(self) -> T:
        """Wait for the task and return its value.

        Raises what the task raised; ``DeadlineExceeded`` when it expired in the queue or was
        cancelled at its deadline; ``concurrent.futures.CancelledError`` after ``cancel()``;
        ``ActorStopped`` when the scheduler stopped before it finished.
        """
        task = self._task
        if task.state != "done":
            assert task.finished is not None, "a task in flight has a finished event"
            await task.finished.wait()
        if task.error is not None:
            raise task.error
        value: T = task.value
        return value

    def __repr__(self) -> str:
        return f"<TaskHandle {self._task.id} {self._task.task_class} {self._task.state}>"


# The error a cancelled task's ``result()`` raises: not asyncio's, which would cancel the waiter.
TaskCancelled = concurrent.futures.CancelledError
