"""The dispatch queue: which waiting task starts next, and whether a new one is let in.

Pure and synchronous: every decision takes ``now`` as an argument and nothing here awaits, so
the service can call it on the hot path and tests can drive it step by step.

Ordering. Waiting tasks sit in lanes, one per (class, executor), each an earliest-deadline-first
heap (tasks without a deadline after those with one, in arrival order). The next task to start
is the lane head with the lowest *effective* priority — the class's priority, less one level per
``aging_ms`` its head has waited, so background work always progresses — then the earliest
deadline, then arrival. Only heads that may start now compete.

Slots. Each executor ("loop", "thread", "process") has a number of slots. A class may start a
task when it runs fewer than its limit (``max_concurrency``, or lower while an adaptive limit
holds it back) and the executor has a slot that no other class has reserved: a class's
``reserved`` slots in its own executor stay free for it until it uses them, so urgent classes
find a slot even when background work fills everything else.

Admission and shedding. ``enqueue`` refuses (``Overloaded``) when the class's queue is full, when
the task is background work (a class without a deadline) and load is being shed, and when the task
would have to wait and the estimate from the queue ahead and the class's recent run time says its
deadline cannot be met, or, for a class without a deadline that ages, that it would wait longer than
its aging bound (``aging_ms``) for a slot: under sustained overload the queue of such a class stays
as short as its promise, instead of growing without end. Load is shed when the service reports
overload (CPU or loop lag) and, per executor, while urgent work waits there for a slot: ``shed``
then hands back the queued background tasks to refuse, lowest classes first (under slot pressure,
only those that have not aged ahead of the waiting urgent work).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from runtime.config import TaskClassConfig
from runtime.exceptions import Overloaded

from .lanes import EXECUTORS, ClassState, Lane
from .task import Executor, Task

__all__ = ["EXECUTORS", "DispatchQueue", "check_slots"]

_INF = math.inf
_WAIT_HEADROOM = 0.5  # the share of its aging bound a new task may expect to wait


class DispatchQueue:
    """Per-class EDF lanes, priority with aging, reserved slots, admission and shedding.

    Raises ``ValueError`` when the reserved slots of the classes in an executor do not fit in
    it, or a class's executor has no slots.
    """

    def __init__(
        self, classes: Mapping[str, TaskClassConfig], slots: Mapping[Executor, int]
    ) -> None:
        self._classes: dict[str, ClassState] = {}
        self._reserving: list[ClassState] = []  # the classes with reserved slots
        self._slots: dict[Executor, int] = {}
        self._busy: dict[Executor, int] = dict.fromkeys(EXECUTORS, 0)
        self.overloaded = False  # set by the service from CPU and loop-lag measurements
        # Executors where background classes start nothing for now (the service pauses the
        # background work running there while urgent work is active).
        self.held: frozenset[Executor] = frozenset()
        # Executors where urgent work waits for a slot -> the most urgent level waiting there.
        self._pressured: dict[Executor, int] = {}
        self.configure(classes, slots)

    # -- configuration ------------------------------------------------------------------------

    def configure(
        self, classes: Mapping[str, TaskClassConfig], slots: Mapping[Executor, int]
    ) -> None:
        """Apply new class settings and slot counts live; waiting and running tasks stay.

        A class may be added, not removed (``ValueError``: removing one needs a restart).
        Raises ``ValueError`` (and changes nothing) when reservations do not fit.
        """
        missing = sorted(set(self._classes) - set(classes))
        if missing:
            raise ValueError(f"classes cannot be removed while running: {', '.join(missing)}")
        check_slots(classes, slots)
        self._slots = {executor: slots.get(executor, 0) for executor in EXECUTORS}
        for name, config in classes.items():
            state = self._classes.get(name)
            if state is None:
                self._classes[name] = ClassState(name, config)
            else:
                if state.config.max_concurrency != config.max_concurrency:
                    state.limit = config.max_concurrency  # an adaptive limit is set again after
                state.config = config
        self._reserving = [state for state in self._classes.values() if state.config.reserved]

    def set_limit(self, name: str, limit: int) -> None:
        """Hold class ``name`` below its ``max_concurrency`` (adaptive concurrency); >= 1."""
        state = self._classes[name]
        state.limit = max(1, min(limit, state.config.max_concurrency))

    # -- admission ----------------------------------------------------------------------------

    def enqueue(self, task: Task, now: float, *, run_estimate_s: float | None = None) -> None:
        """Put ``task`` in its lane, or refuse it.

        ``run_estimate_s``: the class's recent run time, for the deadline estimate (``None``:
        no estimate). Raises ``KeyError`` for an unknown class and ``Overloaded`` when the
        class's queue is full, background work is being shed, or the deadline cannot be met.
        """
        state = self._classes[task.task_class]
        config = state.config
        if state.queued >= config.queue_capacity:
            raise Overloaded(
                f"task_class {state.name!r} has {config.queue_capacity} tasks waiting "
                f"(queue_capacity); retry later or raise its queue_capacity"
            )
        if not state.urgent and (self.overloaded or self._outranked(state, task.run_in)):
            why = "the runtime is overloaded" if self.overloaded else "urgent work is waiting"
            raise Overloaded(
                f"background task_class {state.name!r} is being shed: {why}; retry later"
            )
        if task.deadline_s is not None and run_estimate_s is not None:
            self._check_deadline(state, task, run_estimate_s)
        elif task.deadline_s is None and config.aging_ms is not None:
            self._check_wait(state, task, run_estimate_s)
        task.state = "queued"
        state.lanes[task.run_in].push(task)

    def _check_deadline(self, state: ClassState, task: Task, run_estimate_s: float) -> None:
        """Refuse a task that must wait and, by the estimate, would finish past its deadline.

        A task that can start at once is always let in: refusing on run time alone would shut
        a slow class out for good, with no new run times to show it recovered.
        """
        width = max(1, min(state.limit, self._slots[task.run_in]))
        ahead = state.queued + state.running
        if ahead < width:
            return
        # Pessimistic by part of a run: the tasks running now are partly done.
        expected_s = run_estimate_s * (1 + ahead // width)
        assert task.deadline_s is not None
        if expected_s > task.deadline_s:
            raise Overloaded(
                f"task_class {state.name!r} cannot meet deadline {task.deadline_s:.3f}s: "
                f"~{expected_s:.3f}s expected ({ahead} ahead, {run_estimate_s:.3f}s per task, "
                f"{width} at once); retry later or give it a longer deadline"
            )

    def _check_wait(self, state: ClassState, task: Task, run_estimate_s: float | None) -> None:
        """Refuse a task without a deadline that, by the estimate, would wait longer than its
        class's aging bound (``aging_ms``) before it starts. With no run time measured yet
        (``None``), only one round of tasks may wait beyond those running: a burst at start
        would otherwise queue without bound before the first runs end (it did, with a 2.5 s
        backlog, in bench/scheduler.py)."""
        width = max(1, min(state.limit, self._slots[task.run_in]))
        ahead = state.queued + state.running
        if ahead < width:
            return
        assert state.config.aging_ms is not None
        bound_s = state.config.aging_ms / 1000
        if run_estimate_s is None:
            if ahead < 2 * width:
                return
            raise Overloaded(
                f"task_class {state.name!r} has {ahead} tasks ahead ({width} at once) and no "
                f"run time measured yet to keep its wait within its aging bound "
                f"({bound_s:.3f}s: aging_ms); retry later"
            )
        # Pessimistic by part of a run, as above: the tasks running now are partly done. Half
        # the bound, so that the wait stays within it when runs turn out up to twice as slow as
        # the recent mean (other programs taking the CPU): a task let in cannot be taken back.
        expected_s = run_estimate_s * (ahead // width)
        if expected_s > bound_s * _WAIT_HEADROOM:
            raise Overloaded(
                f"task_class {state.name!r} would wait ~{expected_s:.3f}s for a slot, too close "
                f"to its aging bound ({bound_s:.3f}s: aging_ms) ({ahead} ahead, "
                f"{run_estimate_s:.3f}s per task, {width} at once); retry later"
            )

    # -- dispatch -----------------------------------------------------------------------------

    def pop_ready(self, now: float) -> Task | None:
        """The next task to start now (its slot taken, state ``running``), or ``None``."""
        unused = self._unused_reservations()
        best: tuple[int, float, int] | None = None
        best_state: ClassState | None = None
        best_lane: Lane | None = None
        for state, executor, lane, head in self._heads():
            if not state.urgent and executor in self.held:
                continue
            if not self._may_start(state, executor, unused):
                continue
            deadline = _INF if head.deadline_at is None else head.deadline_at
            key = (state.effective_priority(head, now), deadline, head.id)
            if best is None or key < best:
                best, best_state, best_lane = key, state, lane
        if best_state is None or best_lane is None:
            return None
        task = best_lane.pop()
        self._occupy(best_state, task)
        return task

    def _heads(self) -> Iterator[tuple[ClassState, Executor, Lane, Task]]:
        for state in self._classes.values():
            if not state.queued:
                continue
            for executor, lane in state.lanes.items():
                if lane.live and (head := lane.head()) is not None:
                    yield state, executor, lane, head

    def _unused_reservations(self) -> dict[Executor, int]:
        unused = dict.fromkeys(EXECUTORS, 0)
        for state in self._reserving:
            executor = state.config.executor
            unused[executor] += state.unused_reservation(executor)
        return unused

    def _may_start(
        self, state: ClassState, executor: Executor, unused: dict[Executor, int]
    ) -> bool:
        if state.running >= state.limit:
            return False
        others_reserved = unused[executor] - state.unused_reservation(executor)
        return self._busy[executor] + 1 + others_reserved <= self._slots[executor]

    def _occupy(self, state: ClassState, task: Task) -> None:
        task.state = "running"
        state.running += 1
        state.running_in[task.run_in] += 1
        self._busy[task.run_in] += 1

    def finish(self, task: Task) -> None:
        """Give back the slot of a task that was ``running``."""
        state = self._classes[task.task_class]
        state.running -= 1
        state.running_in[task.run_in] -= 1
        self._busy[task.run_in] -= 1

    def remove(self, task: Task) -> bool:
        """Take a ``queued`` task out (cancelled); ``False`` if it was not queued."""
        if task.state != "queued":
            return False
        task.state = "new"
        self._classes[task.task_class].lanes[task.run_in].discard(task)
        return True

    def drain(self) -> list[Task]:
        """Take out every queued task (the scheduler is stopping), in class order."""
        drained: list[Task] = []
        for state in self._classes.values():
            for lane in state.lanes.values():
                while lane.live:
                    lane.head()  # drops dead entries, so pop() returns a live one
                    drained.append(lane.pop())
        for task in drained:
            task.state = "new"
        return drained

    # -- deadlines and shedding ---------------------------------------------------------------

    def expire(self, now: float) -> list[Task]:
        """Take out the queued tasks whose deadline has come, in classes with ``on_late: fail``."""
        expired: list[Task] = []
        for state in self._classes.values():
            if state.config.on_late != "fail" or not state.queued:
                continue
            for lane in state.lanes.values():
                while lane.live and (head := lane.head()) is not None:
                    if head.deadline_at is None or head.deadline_at > now:
                        break
                    expired.append(lane.pop())
        for task in expired:
            task.state = "new"
        return expired

    def next_expiry(self) -> float | None:
        """When the next queued task of an ``on_late: fail`` class reaches its deadline."""
        soonest: float | None = None
        for state in self._classes.values():
            if state.config.on_late != "fail" or not state.queued:
                continue
            for lane in state.lanes.values():
                head = lane.head() if lane.live else None
                due = None if head is None else head.deadline_at
                if due is not None and (soonest is None or due < soonest):
                    soonest = due
        return soonest

    def shed(self, now: float) -> list[Task]:
        """Take out the queued background tasks to refuse under the current pressure.

        While ``overloaded``, all queued background work goes. In an executor where urgent
        work waits for a slot, the background tasks behind it go, but not those that have
        aged ahead of it: aging keeps its promise that background work progresses.
        Lowest classes come first.
        """
        self._pressured = self._executors_under_pressure(now)
        if not (self.overloaded or self._pressured):
            return []
        shed: list[Task] = []
        lowest_first = sorted(self._classes.values(), key=lambda s: -s.config.priority)
        for state in lowest_first:
            if state.urgent:
                continue
            for executor, lane in state.lanes.items():
                if lane.live and (self.overloaded or executor in self._pressured):
                    level = None if self.overloaded else self._pressured[executor]
                    shed += self._shed_lane(state, lane, now, level)
        for task in shed:
            task.state = "new"
        return shed

    def _shed_lane(
        self, state: ClassState, lane: Lane, now: float, level: int | None
    ) -> list[Task]:
        """The lane's tasks ranked below ``level`` (all of them for ``None``), taken out."""
        kept: list[tuple[float, int, Task]] = []
        shed: list[Task] = []
        for entry in lane.heap:
            task = entry[2]
            if task.state != "queued":
                continue
            if level is None or state.effective_priority(task, now) > level:
                shed.append(task)
            else:
                kept.append(entry)
        if shed:
            lane.replace(kept)
        return shed

    def _executors_under_pressure(self, now: float) -> dict[Executor, int]:
        """Executors where an urgent lane head may not start for want of a slot (not for its
        class limit), with the most urgent effective priority waiting there."""
        pressured: dict[Executor, int] = {}
        if not any(state.urgent and state.queued for state in self._classes.values()):
            return pressured
        unused = self._unused_reservations()
        for state, executor, _lane, head in self._heads():
            blocked_by_slots = not self._may_start(state, executor, unused)
            if state.urgent and state.running < state.limit and blocked_by_slots:
                level = state.effective_priority(head, now)
                pressured[executor] = min(level, pressured.get(executor, level))
        return pressured

    def _outranked(self, state: ClassState, executor: Executor) -> bool:
        """Whether a new task of ``state`` would rank behind urgent work waiting there."""
        level = self._pressured.get(executor)
        return level is not None and state.config.priority > level

    # -- introspection ------------------------------------------------------------------------

    @property
    def classes(self) -> dict[str, TaskClassConfig]:
        return {name: state.config for name, state in self._classes.items()}

    @property
    def urgent_active(self) -> bool:
        """Whether work of a class with a deadline is waiting or running."""
        return any(s.urgent and (s.running or s.queued) for s in self._classes.values())

    @property
    def pressured(self) -> frozenset[Executor]:
        """The executors where background work is being shed (as of the last ``shed``)."""
        return frozenset(self._pressured)

    def depth(self, name: str) -> int:
        return self._classes[name].queued

    def running(self, name: str) -> int:
        return self._classes[name].running

    def limit(self, name: str) -> int:
        return self._classes[name].limit

    def busy(self, executor: Executor) -> int:
        return self._busy[executor]

    def slots(self, executor: Executor) -> int:
        return self._slots[executor]

    def __len__(self) -> int:
        return sum(state.queued for state in self._classes.values())


def check_slots(classes: Mapping[str, TaskClassConfig], slots: Mapping[Executor, int]) -> None:
    """Raise ``ValueError`` unless every executor in use has slots for the reservations in it."""
    for executor in EXECUTORS:
        size = slots.get(executor, 0)
        users = {name: c for name, c in classes.items() if c.executor == executor}
        if users and size < 1:
            raise ValueError(
                f"executor {executor!r} has no slots but class(es) {', '.join(users)} use it; "
                f"give it at least 1"
            )
        reserved = sum(c.reserved for c in users.values())
        if reserved > size:
            raise ValueError(
                f"classes reserve {reserved} {executor!r} slots but there are {size}; "
                f"lower their reserved or add slots"
            )
