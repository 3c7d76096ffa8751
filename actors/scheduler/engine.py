"""The scheduler's engine: let tasks in, start them, run them, record how each one ended.

Everything here but running a task is synchronous, so ``submit`` and ``spawn`` act on the
dispatch queue directly and a task that finds a free slot starts at once. Each task runs in its
own task of the scheduler's task group; when it ends it gives back its slot and starts the
next ones. Every task that was queued gets exactly one ``TaskFinished`` (when someone listens),
and every deadline miss is counted once, with a ``DeadlineMissed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from runtime.clock import Clock
from runtime.config import SchedulerSection, TaskClassConfig
from runtime.events import DeadlineMissed, Event, EventBus, TaskFinished, TaskQueued, TaskStarted
from runtime.exceptions import ActorStopped, DeadlineExceeded, Overloaded

from .executors import Executors, Tier
from .queue import DispatchQueue
from .stats import ClassRecord
from .task import Task, TaskCancelled

__all__ = ["Engine", "SchedulerHooks", "tier_of"]

Hook = Callable[[Task], None]
Ending = Literal["expired", "shed", "cancelled", "refused"]


@dataclass
class SchedulerHooks:
    """Seams for policies such as plugin quotas; each list is called in order with the Task.

    ``admission``: before a task is queued; raising refuses it (the error goes to the
    submitter, counted as refused); calling ``Scheduler.hold`` keeps it out of the queue until
    ``Scheduler.release``. ``start``: just before it runs; raising fails it. ``finish``: after
    its outcome is recorded (``task.error``, ``task.run_s``); also for a task refused after an
    admission hook let it in (by a later hook or by the queue), so that a hook can give back
    what it counted at admission.
    """

    admission: list[Hook] = field(default_factory=list)
    start: list[Hook] = field(default_factory=list)
    finish: list[Hook] = field(default_factory=list)


def tier_of(config: TaskClassConfig) -> Tier:
    """Which process pool a class's tasks use: urgent classes have a deadline."""
    return "urgent" if config.deadline_ms is not None else "background"


class Engine:
    """Admits, starts, runs and ends tasks; owned by the ``Scheduler``.

    ``config`` is the configuration in force (the service replaces it on reload); ``tg`` is
    the task group tasks run in, ``None`` while the scheduler is not running.
    """

    def __init__(
        self,
        config: SchedulerSection,
        queue: DispatchQueue,
        executors: Executors,
        *,
        clock: Clock,
        bus: EventBus | None,
        name: str,
    ) -> None:
        self.config = config
        self.queue = queue
        self.executors = executors
        self.records = {name: ClassRecord() for name in config.classes}
        self.hooks = SchedulerHooks()
        self.tg: anyio.abc.TaskGroup | None = None
        self.held: set[Task] = set()  # admitted, kept out of the queue by a hook
        self.paused = False  # background worker processes are paused
        # The load monitor's last verdict: the loop lags. Preemption costs background work its
        # throughput, so it is kept for when urgent work is at risk; until the first
        # measurement, assume it is.
        self.under_load = True
        self._clock = clock
        self._bus = bus
        self._name = name

    # -- letting tasks in and out -------------------------------------------------------------

    def admit(self, task: Task) -> None:
        """Queue (or hold) ``task`` and start what may run. Raises ``Overloaded`` or a hook's
        error."""
        record = self.records[task.task_class]
        passed = 0
        try:
            for hook in self.hooks.admission:
                hook(task)
                passed += 1
            if task.state != "held":
                estimate_s = record.runs.estimate()
                self.queue.enqueue(task, task.submitted_at, run_estimate_s=estimate_s)
        except Exception as exc:
            record.refused += 1
            if passed:  # a hook let it in: tell the finish hooks how it ended
                task.state = "new"
                task.settle(error=exc)
                for hook in self.hooks.finish:
                    hook(task)
            raise
        record.admitted += 1
        task.finished = anyio.Event()
        if task.state == "held":
            self.held.add(task)
        if self._wants(TaskQueued):
            depth = self.queue.depth(task.task_class)
            self._emit(TaskQueued, task, priority=task.priority, deadline_s=task.deadline_s,
                       queue_depth=depth)  # fmt: skip
        self.dispatch()

    def cancel(self, task: Task, error: BaseException | None = None) -> None:
        """Remove a held or queued task, or cancel a running one (a no-op once it is done).

        The task ends with ``error`` (default: ``TaskCancelled``).
        """
        if task in self.held:
            self.held.discard(task)
            task.state = "new"
            self._end_unstarted(task, error or _cancelled(task), "cancelled")
        elif self.queue.remove(task):
            self._end_unstarted(task, error or _cancelled(task), "cancelled")
            self.dispatch()
        elif task.state == "running":
            task.cancel_requested = True
            task.cancel_error = error
            if task.scope is not None:
                task.scope.cancel()

    def hold(self, task: Task) -> None:
        """Keep ``task``, which an admission hook is looking at, out of the queue until
        ``release``. Raises ``RuntimeError`` for a task that is not being admitted."""
        if task.state != "new" or task.finished is not None:
            raise RuntimeError(f"only a task being admitted can be held; {task!r} is not")
        task.state = "held"

    def release(self, task: Task, error: BaseException | None = None) -> bool:
        """Queue a held task (refused as the queue would refuse it), or end it with ``error``.

        Returns ``False`` when it was not held (it ended meanwhile: cancelled, stopped).
        """
        if task not in self.held:
            return False
        self.held.discard(task)
        task.state = "new"
        if error is None:
            estimate_s = self.records[task.task_class].runs.estimate()
            try:
                self.queue.enqueue(task, self._clock.now(), run_estimate_s=estimate_s)
            except Exception as exc:
                error = exc
        if error is not None:
            self._end_unstarted(task, error, "refused")
        self.dispatch()
        return True

    def abort(self) -> None:
        """The scheduler stops: admit nothing, fail what waits, cancel what runs."""
        tg, self.tg = self.tg, None
        held, self.held = self.held, set()
        for task in [*sorted(held, key=lambda t: t.id), *self.queue.drain()]:
            task.state = "new"
            self._end_unstarted(task, ActorStopped(self._name), "cancelled")
        if tg is not None:
            tg.cancel_scope.cancel()  # each running task records ActorStopped as it ends

    # -- dispatching --------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Fail what expired, pause or resume, start what may run, shed what must go."""
        tg = self.tg
        if tg is None:
            return
        now = self._clock.now()
        for task in self.queue.expire(now):
            self._expire(task, now)
        self._preempt()
        while (ready := self.queue.pop_ready(now)) is not None:
            self._start(ready, now, tg)
        for task in self.queue.shed(now):
            self._shed(task)

    def _start(self, task: Task, now: float, tg: anyio.abc.TaskGroup) -> None:
        task.started_at = now
        self.records[task.task_class].waits.add(task.queue_wait_s)
        if task.deadline_at is not None and now >= task.deadline_at:
            self._miss(task, now)  # on_late: run (on_late: fail would have expired it)
        if self._wants(TaskStarted):
            self._emit(TaskStarted, task, queue_wait_s=task.queue_wait_s, run_in=task.run_in)
        tg.start_soon(self._execute, task, name=f"scheduler task {task.id}")

    def _preempt(self) -> None:
        """Pause background process work while urgent work is active and the loop lags, and
        start none then. On a calm loop, niceness already gives urgent work the CPU when it
        wakes, and pausing idles cores: with voice turns active 2/3 of the time it cost
        background work ~80% of its throughput in bench/scheduler.py, while voice latency met
        its targets without it."""
        pause = self.config.preempt_background and self.under_load and self.queue.urgent_active
        if pause != self.paused:
            self.paused = pause
            self.queue.held = frozenset({"process"}) if pause else frozenset()
            if pause:
                self.executors.pause_background()
            else:
                self.executors.resume_background()

    # -- running a task -----------------------------------------------------------------------

    async def _execute(self, task: Task) -> None:
        """Run a started task and record its outcome; the scheduler stopping fails it."""
        value: Any = None
        error: BaseException | None = ActorStopped(self._name)
        try:
            value, error = await self._run(task)
        finally:
            self._finish(task, value, error)

    async def _run(self, task: Task) -> tuple[Any, BaseException | None]:
        config = self.config.classes[task.task_class]
        if task.cancel_requested:  # cancelled between its start and now: do not call it
            return None, task.cancel_error or _cancelled(task)
        with anyio.CancelScope() as task.scope:
            cancel_after_s = self._cancel_after_s(task, config)
            if cancel_after_s is None:
                return await self._call(task, config)
            with self._clock.move_on_after(cancel_after_s):
                return await self._call(task, config)
            self._miss(task, self._clock.now())  # here only when cancelled at the deadline
            return None, DeadlineExceeded(
                f"task {task.id} of class {task.task_class!r} was cancelled at its "
                f"deadline ({task.deadline_s:.3f}s; the class has cancel_at_deadline)"
            )
        return None, task.cancel_error or _cancelled(task)

    async def _call(self, task: Task, config: TaskClassConfig) -> tuple[Any, BaseException | None]:
        try:
            for hook in self.hooks.start:
                hook(task)
            return await self.executors.run(task, tier_of(config)), None
        except Exception as exc:
            return None, exc

    def _cancel_after_s(self, task: Task, config: TaskClassConfig) -> float | None:
        """Seconds until a running task is cancelled: only with cancel_at_deadline, and only
        if it started in time (a late task that on_late lets run is not cancelled at once)."""
        if not config.cancel_at_deadline or task.deadline_at is None:
            return None
        remaining_s = task.deadline_at - self._clock.now()
        return remaining_s if remaining_s > 0 else None

    def _finish(self, task: Task, value: Any, error: BaseException | None) -> None:
        now = self._clock.now()
        task.finished_at = now
        task.scope = None
        self.queue.finish(task)
        record = self.records[task.task_class]
        if isinstance(error, TaskCancelled):
            record.cancelled += 1
        else:
            record.runs.add(task.run_s)
            if error is None:
                record.completed += 1
            else:
                record.failed += 1
        if task.deadline_at is not None and now > task.deadline_at:
            self._miss(task, now)
        self._settle(task, value, error)
        self.dispatch()

    # -- tasks that end without running -------------------------------------------------------

    def _expire(self, task: Task, now: float) -> None:
        self._miss(task, now)
        error = DeadlineExceeded(
            f"task {task.id} of class {task.task_class!r} waited past its deadline "
            f"({task.deadline_s:.3f}s) without starting: the class is saturated"
        )
        self._end_unstarted(task, error, "expired")

    def end_shed(self, task: Task) -> None:
        """Refuse a task the queue has already taken out (a recovery action's shedding)."""
        error = Overloaded(
            f"background task {task.id} of class {task.task_class!r} was shed "
            "(a recovery action); retry later"
        )
        self._end_unstarted(task, error, "shed")

    def _shed(self, task: Task) -> None:
        why = "the runtime is overloaded" if self.queue.overloaded else "urgent work is waiting"
        error = Overloaded(
            f"background task {task.id} of class {task.task_class!r} was shed ({why}); retry later"
        )
        self._end_unstarted(task, error, "shed")

    def _end_unstarted(self, task: Task, error: BaseException, ending: Ending) -> None:
        record = self.records[task.task_class]
        if ending == "expired":
            record.expired += 1
        elif ending == "shed":
            record.refused += 1
            record.shed += 1
        elif ending == "refused":
            record.refused += 1
        else:
            record.cancelled += 1
        task.finished_at = self._clock.now()
        self._settle(task, None, error)

    def _settle(self, task: Task, value: Any, error: BaseException | None) -> None:
        if self._wants(TaskFinished):
            ended_waiting = task.started_at if task.started_at is not None else task.finished_at
            wait_s = (ended_waiting or task.submitted_at) - task.submitted_at
            described = None if error is None else f"{type(error).__name__}: {error}"
            self._emit(TaskFinished, task, queue_wait_s=wait_s, run_s=task.run_s,
                       ok=error is None, error=described)  # fmt: skip
        task.settle(value=value, error=error)
        for hook in self.hooks.finish:
            hook(task)

    def _miss(self, task: Task, now: float) -> None:
        if task.missed or task.deadline_at is None or task.deadline_s is None:
            return
        task.missed = True
        self.records[task.task_class].deadline_misses += 1
        if self._wants(DeadlineMissed):
            late_by_s = now - task.deadline_at
            self._emit(DeadlineMissed, task, deadline_s=task.deadline_s, late_by_s=late_by_s)

    # -- events -------------------------------------------------------------------------------

    def _wants(self, event_type: type[Event]) -> bool:
        return self._bus is not None and self._bus.wants(event_type)

    def _emit(self, event_type: type[Event], task: Task, **fields: Any) -> None:
        assert self._bus is not None
        self._bus.emit(event_type, actor=self._name, task_id=task.id,
                       task_class=task.task_class, plugin=task.plugin, **fields)  # fmt: skip


def _cancelled(task: Task) -> TaskCancelled:
    return TaskCancelled(f"task {task.id} of class {task.task_class!r} was cancelled")
