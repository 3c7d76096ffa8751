"""Scheduler: assistant work first, latency targets held under load.

Task classes from config (wake_word, voice, command, background, ...) each with a priority, a
deadline, a concurrency limit and reserved capacity; earliest deadline first within a class;
aging so background work progresses; coroutines on the loop, blocking I/O in threads, CPU-bound
work in worker processes; admission control, load shedding and adaptive background concurrency.

``task`` holds the task record and handle, ``queue`` the pure dispatch logic, ``aimd`` the
adaptive limit, ``stats`` the statistics, ``executors`` where tasks run, ``pool`` the worker
processes, ``watch`` a process call's limits and usage, ``engine`` how a task is started, run
and ended, and ``service`` the ``Scheduler``.

The names load lazily: a worker process imports ``actors.scheduler._worker`` through this
package, and must not pay for anyio, psutil and structlog to do so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ClassStatistics",
    "LatencySummary",
    "ProcessWatch",
    "Scheduler",
    "SchedulerHooks",
    "SchedulerStatistics",
    "TaskCancelled",
    "TaskHandle",
]

_HOMES = {
    "ClassStatistics": ".stats",
    "LatencySummary": ".stats",
    "ProcessWatch": ".watch",
    "Scheduler": ".service",
    "SchedulerHooks": ".engine",
    "SchedulerStatistics": ".stats",
    "TaskCancelled": ".task",
    "TaskHandle": ".task",
}

if TYPE_CHECKING:
    from .engine import SchedulerHooks as SchedulerHooks
    from .service import Scheduler as Scheduler
    from .stats import ClassStatistics as ClassStatistics
    from .stats import LatencySummary as LatencySummary
    from .stats import SchedulerStatistics as SchedulerStatistics
    from .task import TaskCancelled as TaskCancelled
    from .task import TaskHandle as TaskHandle
    from .watch import ProcessWatch as ProcessWatch


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'actors.scheduler' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
