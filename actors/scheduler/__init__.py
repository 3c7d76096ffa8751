"""Scheduler: assistant work first, latency targets held under load.

Task classes from config (wake_word, voice, command, background, ...) each with a priority, a
deadline, a concurrency limit and reserved capacity; earliest deadline first within a class;
aging so background work progresses; coroutines on the loop, blocking I/O in threads, CPU-bound
work in worker processes; admission control, load shedding and adaptive background concurrency.

``task`` holds the task record and handle, ``queue`` the pure dispatch logic (on ``lanes``),
``aimd`` the adaptive limit, ``stats`` the statistics, ``executors`` where tasks run, ``pool`` the
worker processes, ``engine`` how a task is started, run and ended, ``service`` the ``Scheduler``.
"""

from .engine import SchedulerHooks as SchedulerHooks
from .service import Scheduler as Scheduler
from .stats import ClassStatistics as ClassStatistics
from .stats import LatencySummary as LatencySummary
from .stats import SchedulerStatistics as SchedulerStatistics
from .task import TaskCancelled as TaskCancelled
from .task import TaskHandle as TaskHandle

__all__ = [
    "ClassStatistics",
    "LatencySummary",
    "Scheduler",
    "SchedulerHooks",
    "SchedulerStatistics",
    "TaskCancelled",
    "TaskHandle",
]
