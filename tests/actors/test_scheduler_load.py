"""What the scheduler counts as load, how it keeps background waits bounded, when it pauses.

The changes that bench/scheduler.py asked for: CPU at normal priority only (niced work, such as
the scheduler's own background workers, yields and is not load), admission within a background
class's aging bound, and pausing background processes only while the loop lags.
"""

from __future__ import annotations

import inspect
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psutil
import pytest

from actors.scheduler import Scheduler
from actors.scheduler.queue import DispatchQueue
from actors.scheduler.service import ContendingCpu, contending_cpu_percent
from actors.scheduler.task import Task
from runtime.actor import ActorContext
from runtime.clock import FakeClock, settle
from runtime.config import SchedulerSection, TaskClassConfig
from runtime.exceptions import Overloaded

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait guest guest_nice")

AGING = TaskClassConfig(priority=9, executor="process", aging_ms=1000)


# -- CPU that counts as load ------------------------------------------------------------------


@pytest.fixture
def cpu_times(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CpuTimes]]:
    """Readings that psutil.cpu_times() returns in turn (seconds since boot)."""
    readings: list[CpuTimes] = []
    monkeypatch.setattr(psutil, "cpu_times", lambda: readings.pop(0))
    yield readings


def test_niced_cpu_is_not_load(cpu_times: list[CpuTimes]) -> None:
    """Of 10 s of CPU, 2 s busy at normal priority and 6 s niced read as 20%."""
    cpu_times += [CpuTimes(0, 0, 0, 0, 0, 0, 0), CpuTimes(1.5, 6, 0.5, 1.5, 0.5, 0, 0)]
    probe = ContendingCpu()
    assert probe() == 0.0  # the first call only takes the starting point
    assert probe() == pytest.approx(20.0)


def test_guest_time_is_not_counted_twice(cpu_times: list[CpuTimes]) -> None:
    """Guest time is already in user time (as psutil counts it): 4 s busy of 8 s is 50%."""
    cpu_times += [CpuTimes(0, 0, 0, 0, 0, 0, 0), CpuTimes(4, 0, 0, 4, 0, 2, 0)]
    probe = ContendingCpu()
    probe()
    assert probe() == pytest.approx(50.0)


def test_no_time_passed_reads_as_no_load(cpu_times: list[CpuTimes]) -> None:
    """Two identical readings (no tick in between) give 0.0, not a division by zero."""
    same = CpuTimes(1, 1, 1, 1, 1, 0, 0)
    cpu_times += [same, same]
    probe = ContendingCpu()
    probe()
    assert probe() == 0.0


def test_the_scheduler_measures_contending_cpu_by_default() -> None:
    """Without a cpu_probe, the load monitor reads CPU at normal priority."""
    default = inspect.signature(Scheduler).parameters["cpu_probe"].default
    assert default is contending_cpu_percent


# -- background waits within the aging bound --------------------------------------------------


def background_queue(config: TaskClassConfig = AGING) -> tuple[DispatchQueue, Callable[[], Task]]:
    """A queue with one background class in 2 process slots, and a maker of its tasks."""
    queue = DispatchQueue({"bg": config}, {"loop": 4, "thread": 2, "process": 2})
    ids = iter(range(1, 10_000))
    return queue, lambda: Task(next(ids), "bg", run_in="process")


def test_background_work_is_let_in_up_to_half_its_aging_bound() -> None:
    """With 0.1 s runs and 2 slots, tasks are let in while the expected wait is <= 0.5 s."""
    queue, task = background_queue()
    for _ in range(11):  # 11 ahead: 0.1 * (11 // 2) = 0.5 s
        queue.enqueue(task(), 0.0, run_estimate_s=0.1)
    queue.enqueue(task(), 0.0, run_estimate_s=0.1)
    with pytest.raises(Overloaded, match=r"would wait ~0.600s for a slot, too close to its aging"):
        queue.enqueue(task(), 0.0, run_estimate_s=0.1)
    assert queue.depth("bg") == 12


def test_without_a_run_time_one_round_may_wait() -> None:
    """Before any run time is known, at most 2 x the slots are let in; then Overloaded."""
    queue, task = background_queue()
    for _ in range(4):
        queue.enqueue(task(), 0.0)
    with pytest.raises(Overloaded, match="no run time measured yet"):
        queue.enqueue(task(), 0.0)
    assert queue.depth("bg") == 4


def test_a_free_slot_always_lets_background_work_in() -> None:
    """A task that can start at once is let in however slow the class's runs are."""
    queue, task = background_queue()
    queue.enqueue(task(), 0.0, run_estimate_s=60.0)
    assert queue.depth("bg") == 1


def test_without_aging_the_queue_is_bounded_by_its_capacity_only() -> None:
    """A background class without aging_ms queues up to queue_capacity, slow or not."""
    queue, task = background_queue(TaskClassConfig(priority=9, executor="process"))
    for _ in range(50):
        queue.enqueue(task(), 0.0, run_estimate_s=10.0)
    assert queue.depth("bg") == 50


def test_a_background_task_with_a_deadline_is_held_to_its_deadline() -> None:
    """A deadline given at submit replaces the aging bound: the deadline estimate applies."""
    queue, task = background_queue()
    for _ in range(2):
        queue.enqueue(task(), 0.0, run_estimate_s=0.1)
    late = Task(100, "bg", run_in="process", deadline_s=0.15)
    with pytest.raises(Overloaded, match="cannot meet deadline"):
        queue.enqueue(late, 0.0, run_estimate_s=0.1)
    patient = Task(101, "bg", run_in="process", deadline_s=60.0)
    for _ in range(20):
        queue.enqueue(task(), 0.0, run_estimate_s=0.01)
    queue.enqueue(patient, 0.0, run_estimate_s=0.1)  # 22 ahead, 0.1 s each: ~1.2 s < 60 s
    assert queue.depth("bg") == 23


# -- pausing only while the loop lags ---------------------------------------------------------


class CountingPool:
    """A process pool stand-in that runs calls on the loop and counts pauses and resumes."""

    def __init__(self, size: int, *, niceness: int = 0, name: str = "pool") -> None:
        self.name = name
        self.gate = anyio.Event()
        self.pauses = self.resumes = 0

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def prepare(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return (fn, args, kwargs)

    async def run(self, call: Any, *, preemptible: bool = False, watch: Any = None) -> Any:
        await self.gate.wait()
        fn, args, kwargs = call
        return fn(*args, **kwargs)

    def pause_preemptible(self) -> int:
        self.pauses += 1
        return 1

    def resume_preemptible(self) -> int:
        self.resumes += 1
        return 1

    def statistics(self) -> dict[str, int]:
        return {}


@asynccontextmanager
async def running(clock: FakeClock) -> AsyncIterator[tuple[Scheduler, dict[str, CountingPool]]]:
    """A scheduler with a wake_word class on the loop and a background class in processes."""
    pools: dict[str, CountingPool] = {}

    def factory(size: int, *, niceness: int = 0, name: str = "pool") -> CountingPool:
        pools[name] = CountingPool(size, niceness=niceness, name=name)
        return pools[name]

    classes = {"wake_word": TaskClassConfig(priority=0, deadline_ms=500), "background": AGING}
    config = SchedulerSection(classes=classes, process_workers=2)
    scheduler = Scheduler(config, ActorContext(clock=clock), pool_factory=factory, cpu_probe=None)
    async with scheduler.running():
        yield scheduler, pools


async def urgent_work_with_background_running(scheduler: Scheduler, lag_s: float) -> Any:
    """Run a background task, measure ``lag_s`` of loop lag, then hold a wake_word task."""
    background = scheduler.spawn(abs, -1, task_class="background")
    scheduler.observe_load(loop_lag_s=lag_s)
    hold = anyio.Event()

    async def wake() -> None:
        await hold.wait()

    scheduler.spawn(wake, task_class="wake_word")
    await settle()
    return background, hold


async def test_background_keeps_running_beside_urgent_work_on_a_calm_loop(
    clock: FakeClock,
) -> None:
    """With the loop keeping up, urgent work does not pause background processes."""
    async with running(clock) as (scheduler, pools):
        background, hold = await urgent_work_with_background_running(scheduler, lag_s=0.0)
        assert pools["scheduler.background"].pauses == 0
        assert not scheduler.statistics().background_paused
        hold.set()
        pools["scheduler.background"].gate.set()
        assert await background.result() == 1


async def test_background_pauses_beside_urgent_work_while_the_loop_lags(
    clock: FakeClock,
) -> None:
    """Loop lag above lag_target_ms: urgent work pauses background processes until it ends."""
    async with running(clock) as (scheduler, pools):
        background, hold = await urgent_work_with_background_running(scheduler, lag_s=0.05)
        pool = pools["scheduler.background"]
        assert (pool.pauses, pool.resumes) == (1, 0)
        assert scheduler.statistics().background_paused
        hold.set()
        await settle()
        assert (pool.pauses, pool.resumes) == (1, 1)
        pool.gate.set()
        assert await background.result() == 1


async def test_the_loop_catching_up_resumes_paused_background_work(clock: FakeClock) -> None:
    """A calm measurement while urgent work still runs lets background processes go on."""
    async with running(clock) as (scheduler, pools):
        _, hold = await urgent_work_with_background_running(scheduler, lag_s=0.05)
        scheduler.observe_load(loop_lag_s=0.001)
        pool = pools["scheduler.background"]
        assert (pool.pauses, pool.resumes) == (1, 1)
        assert not scheduler.statistics().background_paused
        hold.set()
