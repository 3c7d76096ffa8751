"""The waiting side of one task class: its lanes (one EDF heap per executor) and its counts.

The dispatch queue's building blocks, kept apart so that ``queue`` reads as the policy.
"""

from __future__ import annotations

import heapq
import math
from typing import get_args

from runtime.config import TaskClassConfig

from .task import Executor, Task

__all__ = ["EXECUTORS", "ClassState", "Lane"]

EXECUTORS: tuple[Executor, ...] = get_args(Executor)
_INF = math.inf
_COMPACT_MIN_DEAD = 32  # rebuild a lane's heap when its dead entries pass this and its live ones


class Lane:
    """The waiting tasks of one class in one executor: an EDF heap with lazy removal.

    Keeps its class's ``queued`` count in step with its own ``live`` count.
    """

    __slots__ = ("dead", "heap", "live", "owner")

    def __init__(self, owner: ClassState) -> None:
        self.owner = owner
        self.heap: list[tuple[float, int, Task]] = []
        self.live = 0
        self.dead = 0  # removed tasks still in the heap

    def _count(self, delta: int) -> None:
        self.live += delta
        self.owner.queued += delta

    def push(self, task: Task) -> None:
        deadline = _INF if task.deadline_at is None else task.deadline_at
        heapq.heappush(self.heap, (deadline, task.id, task))
        self._count(1)

    def head(self) -> Task | None:
        """The next task (earliest deadline), dropping removed ones on the way; or None."""
        heap = self.heap
        while heap and heap[0][2].state != "queued":
            heapq.heappop(heap)
            self.dead -= 1
        return heap[0][2] if heap else None

    def pop(self) -> Task:
        task = heapq.heappop(self.heap)[2]
        self._count(-1)
        return task

    def replace(self, entries: list[tuple[float, int, Task]]) -> None:
        """Keep only ``entries`` (live ones), as a fresh heap."""
        heapq.heapify(entries)
        self._count(len(entries) - self.live)
        self.heap, self.dead = entries, 0

    def discard(self, task: Task) -> None:
        """Forget a task that left the queue some other way; its heap entry goes lazily."""
        self._count(-1)
        self.dead += 1
        if self.dead > _COMPACT_MIN_DEAD and self.dead > self.live:
            self.heap = [entry for entry in self.heap if entry[2].state == "queued"]
            heapq.heapify(self.heap)
            self.dead = 0


class ClassState:
    """One task class: its configuration, limit, lanes and counts."""

    __slots__ = ("config", "lanes", "limit", "name", "queued", "running", "running_in")

    def __init__(self, name: str, config: TaskClassConfig) -> None:
        self.name = name
        self.config = config
        self.limit = config.max_concurrency
        self.queued = 0  # kept by the lanes
        self.lanes: dict[Executor, Lane] = {executor: Lane(self) for executor in EXECUTORS}
        self.running = 0
        self.running_in: dict[Executor, int] = dict.fromkeys(EXECUTORS, 0)

    @property
    def urgent(self) -> bool:
        """Urgent classes have a deadline; the others are background work."""
        return self.config.deadline_ms is not None

    def unused_reservation(self, executor: Executor) -> int:
        """Reserved slots of this class in ``executor`` that it does not use now."""
        if self.config.executor != executor:
            return 0
        return max(0, self.config.reserved - self.running_in[executor])

    def effective_priority(self, task: Task, now: float) -> int:
        """The class's priority less one level per ``aging_ms`` that ``task`` has waited."""
        aging_ms = self.config.aging_ms
        if aging_ms is None:
            return self.config.priority
        return self.config.priority - int((now - task.submitted_at) * 1000 // aging_ms)
