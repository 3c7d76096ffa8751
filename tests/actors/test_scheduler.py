"""The Scheduler service on the fake clock: ordering, deadlines, admission, shedding, events."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import pytest

from actors.scheduler import Scheduler, TaskCancelled
from actors.scheduler.pool import ProcessPool
from runtime.actor import ActorContext
from runtime.clock import FakeClock, settle
from runtime.config import Config, SchedulerLoadSection, SchedulerSection, TaskClassConfig
from runtime.events import (
    ActorCrashed,
    DeadlineMissed,
    EventBus,
    TaskFinished,
    TaskQueued,
    TaskStarted,
)
from runtime.exceptions import ActorStopped, DeadlineExceeded, Overloaded
from runtime.supervisor import Supervisor

CLASSES = {
    "wake_word": TaskClassConfig(priority=0, deadline_ms=500),
    "command": TaskClassConfig(priority=2, deadline_ms=2000),
    "background": TaskClassConfig(priority=9),
}


def section(classes: dict[str, TaskClassConfig] | None = None, **fields: Any) -> SchedulerSection:
    """A scheduler section with loop-only classes, 2 threads and 2 (fake) worker processes."""
    settings: dict[str, Any] = {"thread_workers": 2, "process_workers": 2, "loop_workers": 8}
    settings.update(fields)
    return SchedulerSection(classes=classes or CLASSES, **settings)


class FakePool:
    """A process pool stand-in: runs calls on the loop, each once ``gate`` is open."""

    def __init__(self, size: int, *, niceness: int = 0, name: str = "pool") -> None:
        self.size, self.niceness, self.name = size, niceness, name
        self.started = self.closed = False
        self.gate: anyio.Event | None = None
        self.preemptible: list[bool] = []
        self.pauses = self.resumes = 0

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    def prepare(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if getattr(fn, "__name__", "") == "<lambda>":
            raise TypeError(f"{fn!r} cannot be sent to a worker process; use a module function")
        return (fn, args, kwargs)

    async def run(self, call: Any, *, preemptible: bool = False) -> Any:
        self.preemptible.append(preemptible)
        if self.gate is not None:
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
        return {"size": self.size}


class Pools:
    """A pool factory that keeps the pools it made, by name."""

    def __init__(self) -> None:
        self.made: dict[str, FakePool] = {}

    def __call__(self, size: int, *, niceness: int = 0, name: str = "pool") -> FakePool:
        pool = self.made[name] = FakePool(size, niceness=niceness, name=name)
        return pool


@dataclass
class Harness:
    scheduler: Scheduler
    bus: EventBus
    pools: Pools


@asynccontextmanager
async def started(
    clock: FakeClock,
    config: SchedulerSection | None = None,
    *,
    cpu_probe: Callable[[], float] | None = None,
) -> AsyncIterator[Harness]:
    """A running scheduler on the fake clock with an event bus and fake process pools."""
    bus = EventBus(clock=clock)
    pools = Pools()
    context = ActorContext(clock=clock, events=bus)
    scheduler = Scheduler(config or section(), context, pool_factory=pools, cpu_probe=cpu_probe)
    async with scheduler.running():
        yield Harness(scheduler, bus, pools)


@dataclass
class Gates:
    """Coroutines that hold their slot until the test opens their gate; a log of what ran."""

    log: list[str] = field(default_factory=list)
    events: dict[str, anyio.Event] = field(default_factory=dict)

    def hold(self, name: str) -> Callable[[], Any]:
        gate = self.events.setdefault(name, anyio.Event())

        async def held() -> str:
            self.log.append(f"start {name}")
            try:
                await gate.wait()
            finally:
                self.log.append(f"end {name}")
            return name

        return held

    def open(self, name: str) -> None:
        self.events[name].set()


def sleeper(clock: FakeClock, seconds: float, value: Any = None) -> Callable[[], Any]:
    async def sleep() -> Any:
        await clock.sleep(seconds)
        return value

    return sleep


# -- where and in what order work runs ------------------------------------------------------


async def test_coroutines_run_on_the_loop_and_sync_functions_in_the_class_executor(
    clock: FakeClock,
) -> None:
    """A coroutine function runs on the loop; a sync one in its class's executor (a thread)."""
    classes = {**CLASSES, "voice": TaskClassConfig(priority=1, deadline_ms=1000, executor="thread")}
    async with started(clock, section(classes)) as h:

        async def double(x: int) -> int:
            return x * 2

        assert await h.scheduler.submit(double, 21, task_class="voice") == 42
        main = threading.get_ident()
        assert await h.scheduler.submit(threading.get_ident, task_class="voice") != main
        assert await h.scheduler.submit(threading.get_ident, task_class="command") == main
        assert (
            await h.scheduler.submit(threading.get_ident, task_class="command", run_in="thread")
            != main
        )
        assert h.scheduler.statistics().classes["voice"].completed == 2


async def test_a_task_that_finds_a_free_slot_starts_at_once(clock: FakeClock) -> None:
    """spawn starts a task in the same call when a slot is free (no mailbox round trip)."""
    async with started(clock) as h:
        with h.bus.subscribe(TaskStarted) as events:
            task = h.scheduler.spawn(abs, -1, task_class="command")
            assert h.scheduler.statistics().classes["command"].running == 1
            assert events.receive_nowait().task_id == task.id
            assert await task.result() == 1


async def test_the_most_urgent_waiting_task_starts_when_a_slot_frees(clock: FakeClock) -> None:
    """With one slot, waiting tasks start by class priority, not by arrival."""
    # "chore" has a deadline: background work (none) would be shed while urgent work waits.
    classes = {**CLASSES, "chore": TaskClassConfig(priority=5, deadline_ms=60_000)}
    gates = Gates()
    async with started(clock, section(classes, loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("first"), task_class="chore")
        await settle()
        for name in ("chore", "command", "wake_word"):
            h.scheduler.spawn(gates.hold(name), task_class=name)
        for name in ("first", "wake_word", "command", "chore"):
            gates.open(name)
            await settle()
    starts = [line for line in gates.log if line.startswith("start")]
    assert starts == ["start first", "start wake_word", "start command", "start chore"]


async def test_earliest_deadline_first_within_a_class(clock: FakeClock) -> None:
    """Within a class, the waiting task with the earliest deadline starts first."""
    gates = Gates()
    async with started(clock, section(loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("first"), task_class="command")
        for deadline in (9.0, 3.0, 5.0):
            h.scheduler.spawn(gates.hold(f"{deadline:g}"), task_class="command", deadline=deadline)
        for name in ("first", "3", "5", "9"):
            gates.open(name)
            await settle()
    starts = [line for line in gates.log if line.startswith("start")]
    assert starts == ["start first", "start 3", "start 5", "start 9"]


@pytest.mark.parametrize(("aging_ms", "first"), [(100, "old background"), (None, "command")])
async def test_aging_lets_background_work_progress(
    clock: FakeClock, aging_ms: int | None, first: str
) -> None:
    """A background task that waited long enough overtakes newer urgent work (with aging_ms)."""
    classes = {**CLASSES, "background": TaskClassConfig(priority=9, aging_ms=aging_ms)}
    gates = Gates()
    async with started(clock, section(classes, loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("blocker"), task_class="command", deadline=60)
        h.scheduler.spawn(gates.hold("old background"), task_class="background")
        await clock.advance(1.5)  # 15 levels of aging: 9 - 15 < 2
        h.scheduler.spawn(gates.hold("command"), task_class="command")
        gates.open("blocker")
        await settle()
    assert gates.log[2] == f"start {first}"


async def test_reserved_slots_keep_room_for_urgent_work(clock: FakeClock) -> None:
    """Background work cannot fill an urgent class's reserved slot; the urgent task starts."""
    classes = {**CLASSES, "wake_word": TaskClassConfig(priority=0, deadline_ms=500, reserved=1)}
    gates = Gates()
    async with started(clock, section(classes, loop_workers=3)) as h:
        for i in range(3):
            h.scheduler.spawn(gates.hold(f"bg{i}"), task_class="background")
        await settle()
        assert gates.log == ["start bg0", "start bg1"]
        h.scheduler.spawn(gates.hold("wake"), task_class="wake_word")
        await settle()
        assert gates.log[-1] == "start wake"
        stats = h.scheduler.statistics()
        assert stats.busy["loop"] == 3 and stats.classes["background"].queue_depth == 1


async def test_a_class_runs_at_most_its_max_concurrency(clock: FakeClock) -> None:
    """Past max_concurrency a class's tasks wait, even with free slots."""
    classes = {"c": TaskClassConfig(priority=1, max_concurrency=2)}
    gates = Gates()
    async with started(clock, section(classes)) as h:
        for i in range(3):
            h.scheduler.spawn(gates.hold(f"t{i}"), task_class="c")
        await settle()
        assert h.scheduler.statistics().classes["c"].running == 2
        gates.open("t0")
        await settle()
        assert gates.log[-1] == "start t2"


# -- deadlines ------------------------------------------------------------------------------


async def test_a_task_still_queued_at_its_deadline_fails_without_running(clock: FakeClock) -> None:
    """on_late fail: at its deadline a waiting task fails with DeadlineExceeded, never runs."""
    gates, ran = Gates(), list[Any]()
    async with started(clock, section(loop_workers=1)) as h:
        with h.bus.subscribe(DeadlineMissed, TaskFinished) as events:
            h.scheduler.spawn(gates.hold("blocker"), task_class="command")
            late = h.scheduler.spawn(ran.append, "ran", task_class="wake_word")
            await clock.advance(0.499)
            assert not late.done()
            await clock.advance(0.001)
            assert late.done() and ran == []
            with pytest.raises(DeadlineExceeded, match="waited past its deadline"):
                await late.result()
            missed = events.receive_nowait()
            assert isinstance(missed, DeadlineMissed)
            assert (missed.task_class, missed.deadline_s, missed.late_by_s) == ("wake_word", 0.5, 0)
            finished = events.receive_nowait()
            assert isinstance(finished, TaskFinished) and not finished.ok
            assert finished.error is not None and finished.error.startswith("DeadlineExceeded")
        stats = h.scheduler.statistics().classes["wake_word"]
        assert (stats.expired, stats.deadline_misses, stats.queue_depth) == (1, 1, 0)


async def test_on_late_run_runs_a_late_task_and_counts_the_miss(clock: FakeClock) -> None:
    """on_late run: a task that starts past its deadline still runs; the miss counts once."""
    classes = {**CLASSES, "late": TaskClassConfig(priority=1, deadline_ms=500, on_late="run")}
    gates = Gates()
    async with started(clock, section(classes, loop_workers=1)) as h:
        with h.bus.subscribe(DeadlineMissed) as events:
            h.scheduler.spawn(gates.hold("blocker"), task_class="command")
            late = h.scheduler.spawn(abs, -7, task_class="late")
            await clock.advance(1.0)
            gates.open("blocker")
            assert await late.result() == 7
            assert events.receive_nowait().late_by_s == pytest.approx(0.5)
            assert len(events) == 0
        stats = h.scheduler.statistics().classes["late"]
        assert (stats.completed, stats.deadline_misses) == (1, 1)


async def test_cancel_at_deadline_cancels_a_running_task(clock: FakeClock) -> None:
    """cancel_at_deadline: a task still running at its deadline is cancelled and fails."""
    classes = {**CLASSES, "strict": TaskClassConfig(priority=1, deadline_ms=1000,
                                                     cancel_at_deadline=True)}  # fmt: skip
    gates = Gates()
    async with started(clock, section(classes)) as h:
        task = h.scheduler.spawn(gates.hold("slow"), task_class="strict")
        await clock.advance(0.999)
        assert not task.done()
        await clock.advance(0.001)
        assert task.done()
        with pytest.raises(DeadlineExceeded, match="cancelled at its deadline"):
            await task.result()
        assert gates.log == ["start slow", "end slow"]
        stats = h.scheduler.statistics().classes["strict"]
        assert (stats.failed, stats.deadline_misses, stats.running) == (1, 1, 0)


async def test_a_task_finishing_after_its_deadline_counts_a_miss(clock: FakeClock) -> None:
    """Without cancel_at_deadline a late task completes; its miss is counted and published."""
    async with started(clock) as h:
        with h.bus.subscribe(DeadlineMissed) as events:
            task = h.scheduler.spawn(sleeper(clock, 3.0, "done"), task_class="command")
            await clock.advance(3.0)
            assert await task.result() == "done"
            assert events.receive_nowait().late_by_s == pytest.approx(1.0)
        stats = h.scheduler.statistics().classes["command"]
        assert (stats.completed, stats.deadline_misses) == (1, 1)


async def test_a_task_deadline_overrides_its_class_deadline(clock: FakeClock) -> None:
    """deadline= gives a task its own deadline, even in a class without one."""
    gates = Gates()
    async with started(clock, section(loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("blocker"), task_class="command")
        task = h.scheduler.spawn(abs, 1, task_class="background", deadline=0.25)
        await clock.advance(0.25)
        assert task.done()
        with pytest.raises(DeadlineExceeded):
            await task.result()


# -- admission and shedding -----------------------------------------------------------------


async def test_a_full_class_queue_refuses_with_overloaded(clock: FakeClock) -> None:
    """Past queue_capacity waiting tasks, spawn raises Overloaded; the refusal is counted."""
    classes = {"c": TaskClassConfig(priority=1, max_concurrency=1, queue_capacity=1)}
    gates = Gates()
    async with started(clock, section(classes)) as h:
        h.scheduler.spawn(gates.hold("running"), task_class="c")
        h.scheduler.spawn(gates.hold("queued"), task_class="c")
        with pytest.raises(Overloaded, match="queue_capacity"):
            h.scheduler.spawn(gates.hold("refused"), task_class="c")
        stats = h.scheduler.statistics().classes["c"]
        assert (stats.admitted, stats.refused, stats.queue_depth) == (2, 1, 1)


async def test_a_deadline_that_cannot_be_met_is_refused_early(clock: FakeClock) -> None:
    """With the queue ahead and recent run times, a hopeless deadline is refused at once."""
    classes = {"c": TaskClassConfig(priority=1, deadline_ms=1000, max_concurrency=1)}
    async with started(clock, section(classes)) as h:
        for _ in range(3):  # history: 0.6 s per task
            h.scheduler.spawn(sleeper(clock, 0.6), task_class="c", deadline=10)
        await clock.advance(1.8)
        h.scheduler.spawn(sleeper(clock, 0.6), task_class="c", deadline=10)
        with pytest.raises(Overloaded, match=r"cannot meet deadline 1.000s: ~1.200s expected"):
            h.scheduler.spawn(abs, 1, task_class="c")
        assert h.scheduler.spawn(abs, 1, task_class="c", deadline=1.5) is not None
        assert h.scheduler.statistics().classes["c"].refused == 1


async def test_overload_sheds_background_work_until_it_passes(clock: FakeClock) -> None:
    """Loop lag past shed_lag_ms refuses queued and new background work; urgent work goes on."""
    classes = {**CLASSES, "background": TaskClassConfig(priority=9, max_concurrency=1)}
    gates = Gates()
    async with started(clock, section(classes)) as h:
        h.scheduler.spawn(gates.hold("bg"), task_class="background")
        queued = h.scheduler.spawn(abs, -1, task_class="background")
        h.scheduler.observe_load(loop_lag_s=0.3)
        assert queued.done()
        with pytest.raises(Overloaded, match=r"shed \(the runtime is overloaded\)"):
            await queued.result()
        with pytest.raises(Overloaded, match="is being shed"):
            h.scheduler.spawn(abs, -1, task_class="background")
        assert await h.scheduler.submit(abs, -3, task_class="command") == 3
        stats = h.scheduler.statistics()
        assert stats.overloaded and stats.classes["background"].shed == 1
        assert stats.classes["background"].refused == 2
        h.scheduler.observe_load(loop_lag_s=0.0, cpu_percent=10.0)
        later = h.scheduler.spawn(abs, -2, task_class="background")
        gates.open("bg")
        assert await later.result() == 2


async def test_cpu_overload_sheds_background_work(clock: FakeClock) -> None:
    """CPU at shed_cpu_percent or more is overload too."""
    async with started(clock) as h:
        h.scheduler.observe_load(loop_lag_s=0.0, cpu_percent=99.0)
        with pytest.raises(Overloaded):
            h.scheduler.spawn(abs, 1, task_class="background")
        assert h.scheduler.statistics().cpu_percent == 99.0


async def test_urgent_work_waiting_for_a_slot_sheds_queued_background_work(
    clock: FakeClock,
) -> None:
    """While an urgent task waits for a slot, background work queued for it is refused."""
    gates = Gates()
    async with started(clock, section(loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("running bg"), task_class="background")
        queued = h.scheduler.spawn(gates.hold("queued bg"), task_class="background")
        wake = h.scheduler.spawn(abs, -5, task_class="wake_word")
        assert queued.done()
        with pytest.raises(Overloaded, match="urgent work is waiting"):
            await queued.result()
        assert h.scheduler.statistics().shedding == ["loop"]
        gates.open("running bg")
        assert await wake.result() == 5
        await settle()
        assert h.scheduler.statistics().shedding == []
        assert await h.scheduler.spawn(abs, -6).result() == 6


async def test_background_concurrency_adapts_to_load(clock: FakeClock) -> None:
    """Loop lag above lag_target_ms halves background concurrency; calm lets it grow back."""
    gates = Gates()
    async with started(clock) as h:
        h.scheduler.observe_load(loop_lag_s=0.05)
        assert h.scheduler.statistics().classes["background"].limit == 2
        for i in range(4):
            h.scheduler.spawn(gates.hold(f"bg{i}"), task_class="background")
        await settle()
        assert h.scheduler.statistics().classes["background"].running == 2
        h.scheduler.observe_load(loop_lag_s=0.0, cpu_percent=50.0)
        await settle()
        assert h.scheduler.statistics().classes["background"].running == 3
        h.scheduler.observe_load(loop_lag_s=0.0, cpu_percent=85.0)  # above cpu_target_percent
        assert h.scheduler.statistics().classes["wake_word"].limit == 4  # urgent: never adapted
        assert h.scheduler.statistics().classes["background"].limit == 1


class LaggyClock(FakeClock):
    """A fake clock whose sleeps overshoot by ``lag_s``, as a busy loop would."""

    lag_s = 0.0

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.lag_s)


async def test_the_load_monitor_measures_loop_lag_with_a_heartbeat() -> None:
    """Every load.interval_ms the monitor measures how late its heartbeat woke up."""
    clock = LaggyClock()
    clock.lag_s = 0.05
    config = section(load=SchedulerLoadSection(interval_ms=500))
    async with started(clock, config) as h:
        await clock.advance(0.55)
        stats = h.scheduler.statistics()
        assert stats.loop_lag_s == pytest.approx(0.05)
        assert stats.classes["background"].limit == 2 and stats.cpu_percent is None


async def test_the_load_monitor_reads_cpu_off_the_loop(clock: FakeClock) -> None:
    """The CPU probe is called in a worker thread, and its reading is applied."""
    threads: list[int] = []

    def probe() -> float:
        threads.append(threading.get_ident())
        return 97.0

    async with started(clock, cpu_probe=probe) as h:
        await clock.advance(0.5)
        with anyio.fail_after(5):  # a guard only: the reading comes back from a real thread
            while h.scheduler.statistics().cpu_percent is None:
                await anyio.lowlevel.checkpoint()
        assert threads and threads[0] != threading.get_ident()
        assert h.scheduler.statistics().overloaded


# -- cancelling and stopping ----------------------------------------------------------------


async def test_cancelling_a_queued_task_removes_it_without_running(clock: FakeClock) -> None:
    """h.cancel() on a waiting task: it never runs, result() raises TaskCancelled."""
    gates, ran = Gates(), list[Any]()
    async with started(clock, section(loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("blocker"), task_class="command")
        task = h.scheduler.spawn(ran.append, 1, task_class="command")
        task.cancel()
        task.cancel()  # a no-op once done
        assert task.done()
        with pytest.raises(TaskCancelled):
            await task.result()
        gates.open("blocker")
        await settle()
        assert ran == [] and h.scheduler.statistics().classes["command"].cancelled == 1


async def test_cancelling_a_running_task_cancels_its_coroutine(clock: FakeClock) -> None:
    """h.cancel() on a running task cancels it; its slot goes to the next task."""
    gates = Gates()
    async with started(clock, section(loop_workers=1)) as h:
        running = h.scheduler.spawn(gates.hold("running"), task_class="command")
        waiting = h.scheduler.spawn(abs, -3, task_class="command")
        await settle()
        running.cancel()
        await settle()
        assert running.done()
        with pytest.raises(TaskCancelled):
            await running.result()
        assert gates.log == ["start running", "end running"]
        assert await waiting.result() == 3


async def test_a_task_cancelled_before_its_runner_starts_never_runs(clock: FakeClock) -> None:
    """Cancelling right after spawn (slot taken, not yet running) still cancels it."""
    gates = Gates()
    async with started(clock) as h:
        task = h.scheduler.spawn(gates.hold("never"), task_class="command")
        task.cancel()
        await settle()
        assert task.done()
        with pytest.raises(TaskCancelled):
            await task.result()
        assert gates.log == []


async def test_cancelling_the_caller_of_submit_cancels_the_task(clock: FakeClock) -> None:
    """A submit whose caller is cancelled cancels its task, waiting or running."""
    gates = Gates()
    async with started(clock) as h:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: h.scheduler.submit(gates.hold("held"), task_class="command"))
            await settle()
            tg.cancel_scope.cancel()
        await settle()
        assert gates.log == ["start held", "end held"]
        assert h.scheduler.statistics().classes["command"].cancelled == 1


async def test_stopping_fails_waiting_and_running_tasks(clock: FakeClock) -> None:
    """Leaving running(): waiting and running tasks fail with ActorStopped; spawn refuses."""
    gates = Gates()
    async with started(clock, section(loop_workers=1)) as h:
        running = h.scheduler.spawn(gates.hold("running"), task_class="command")
        waiting = h.scheduler.spawn(gates.hold("waiting"), task_class="command")
        await settle()
    for task in (running, waiting):
        with pytest.raises(ActorStopped):
            await task.result()
    assert gates.log == ["start running", "end running"]
    with pytest.raises(ActorStopped):
        h.scheduler.spawn(abs, 1)
    assert not h.scheduler.statistics().running


async def test_running_twice_at_once_is_refused(clock: FakeClock) -> None:
    """running() raises RuntimeError while the scheduler already runs."""
    async with started(clock) as h:
        with pytest.raises(RuntimeError, match="already running"):
            async with h.scheduler.running():
                pass


# -- processes and preemption ---------------------------------------------------------------


async def test_background_processes_pause_while_urgent_work_runs(clock: FakeClock) -> None:
    """Background process work is paused while urgent work waits or runs, resumed after."""
    classes = {**CLASSES, "background": TaskClassConfig(priority=9, executor="process")}
    gates = Gates()
    async with started(clock, section(classes)) as h:
        background = h.pools.made["scheduler.background"]
        assert background.started and background.niceness == 10
        background.gate = anyio.Event()
        task = h.scheduler.spawn(abs, -4, task_class="background")
        h.scheduler.spawn(gates.hold("wake"), task_class="wake_word")
        await settle()
        assert (background.pauses, background.resumes) == (1, 0)
        assert h.scheduler.statistics().background_paused
        gates.open("wake")
        await settle()
        assert (background.pauses, background.resumes) == (1, 1)
        background.gate.set()
        assert await task.result() == 4 and background.preemptible == [True]


async def test_no_background_process_work_starts_while_urgent_work_runs(clock: FakeClock) -> None:
    """A background process task waits while urgent work is active, then starts."""
    gates = Gates()
    async with started(clock) as h:
        h.scheduler.spawn(gates.hold("wake"), task_class="wake_word")
        task = h.scheduler.spawn(abs, -8, task_class="background", run_in="process")
        await settle()
        assert not task.done() and h.scheduler.statistics().classes["background"].queue_depth == 1
        gates.open("wake")
        assert await task.result() == 8


async def test_urgent_process_work_uses_its_own_pool_at_normal_priority(clock: FakeClock) -> None:
    """An urgent class's process task runs in the urgent pool (niceness 0), not preemptible."""
    async with started(clock) as h:
        assert not h.pools.made["scheduler.urgent"].started  # no class uses it: started lazily
        assert await h.scheduler.submit(abs, -9, task_class="command", run_in="process") == 9
        urgent = h.pools.made["scheduler.urgent"]
        assert urgent.started and urgent.niceness == 0 and urgent.preemptible == [False]
        assert h.scheduler.statistics().pools == {"urgent": {"size": 2}}


async def test_preemption_can_be_turned_off(clock: FakeClock) -> None:
    """preempt_background false: background processes keep running during urgent work."""
    async with started(clock, section(preempt_background=False)) as h:
        h.scheduler.spawn(abs, -1, task_class="background", run_in="process")
        await h.scheduler.submit(abs, -1, task_class="wake_word")
        assert h.pools.made["scheduler.background"].pauses == 0


@pytest.mark.slow
async def test_cpu_bound_work_runs_in_a_real_worker_process(clock: FakeClock) -> None:
    """With the real pool: a process task runs in another process; a lambda is refused."""
    config = section({"bg": TaskClassConfig(priority=9, executor="process")}, process_workers=1)
    scheduler = Scheduler(config, ActorContext(clock=clock), cpu_probe=None)
    async with scheduler.running():
        assert await scheduler.submit(os.getpid, task_class="bg") != os.getpid()
        with pytest.raises(TypeError, match="cannot be sent to a worker process"):
            scheduler.spawn(lambda: 1, task_class="bg")
        assert scheduler.statistics().pools["background"].completed == 1


@pytest.mark.slow
async def test_a_real_background_worker_is_stopped_during_urgent_work(clock: FakeClock) -> None:
    """With the real pool: the background worker is SIGSTOPped while urgent work runs."""
    config = section({**CLASSES, "bg": TaskClassConfig(priority=9, executor="process")},
                     process_workers=1)  # fmt: skip
    gates = Gates()
    scheduler = Scheduler(config, ActorContext(clock=clock), pool_factory=ProcessPool)
    async with scheduler.running():
        task = scheduler.spawn(time.sleep, 30, task_class="bg")
        with anyio.fail_after(10):  # a guard only: the worker process picks the call up
            while scheduler.statistics().pools["background"].busy == 0:
                await anyio.lowlevel.checkpoint()
        scheduler.spawn(gates.hold("wake"), task_class="wake_word")
        await settle()
        assert scheduler.statistics().pools["background"].paused == 1
        gates.open("wake")
        await settle()
        assert scheduler.statistics().pools["background"].paused == 0
        task.cancel()
        with pytest.raises(TaskCancelled):
            await task.result()


# -- events and statistics ------------------------------------------------------------------


async def test_task_events_are_published_in_order(clock: FakeClock) -> None:
    """A task publishes TaskQueued, TaskStarted and TaskFinished with its class and plugin."""
    async with started(clock) as h:
        with h.bus.subscribe(TaskQueued, TaskStarted, TaskFinished) as events:
            await h.scheduler.submit(sleeper(clock, 0.0, 1), task_class="command", plugin="w")
            queued, begun, finished = (events.receive_nowait() for _ in range(3))
    assert isinstance(queued, TaskQueued) and isinstance(begun, TaskStarted)
    assert isinstance(finished, TaskFinished) and finished.ok
    assert {e.task_id for e in (queued, begun, finished)} == {queued.task_id}
    assert (queued.task_class, queued.priority, queued.deadline_s, queued.plugin) == (
        "command", 2, 2.0, "w",
    )  # fmt: skip
    assert (begun.run_in, begun.queue_wait_s, finished.run_s) == ("loop", 0.0, 0.0)


async def test_no_event_is_built_when_nobody_listens(clock: FakeClock) -> None:
    """Without subscribers the scheduler publishes nothing."""
    async with started(clock) as h:
        await h.scheduler.submit(abs, 1)
        assert h.bus.statistics().published_total == 0


async def test_statistics_give_wait_and_run_percentiles(clock: FakeClock) -> None:
    """Per class: waiting and run time percentiles, and the outcome counts."""
    async with started(clock, section(loop_workers=1)) as h:
        for seconds in (0.1, 0.2, 0.3, 0.4):
            h.scheduler.spawn(sleeper(clock, seconds), task_class="command", deadline=10)

        async def fail() -> None:
            raise ValueError("boom")

        failing = h.scheduler.spawn(fail, task_class="command", deadline=10)
        await clock.advance(1.0)
        with pytest.raises(ValueError, match="boom"):
            await failing.result()
        stats = h.scheduler.statistics().classes["command"]
    assert (stats.admitted, stats.completed, stats.failed) == (5, 4, 1)
    assert stats.run.count == 5 and stats.run.max_s == pytest.approx(0.4)
    assert stats.run.p50_s == pytest.approx(0.2)
    assert stats.wait.p50_s == pytest.approx(0.3) and stats.wait.max_s == pytest.approx(1.0)
    assert msgspec.json.decode(msgspec.json.encode(stats))["run"]["count"] == 5


# -- bad input ------------------------------------------------------------------------------


async def coroutine_function() -> None:
    """A coroutine function for the bad-input cases."""


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((abs, 1), {"task_class": "nope"}, ValueError,
         "task_class must be one of wake_word, command, background; got 'nope'"),
        (("not callable",), {}, TypeError, "fn must be callable"),
        ((abs, 1), {"deadline": -1}, ValueError, "deadline must be > 0 seconds"),
        ((abs, 1), {"deadline": 0}, ValueError, "deadline must be > 0 seconds"),
        ((abs, 1), {"deadline": math.nan}, ValueError, "deadline must be > 0 seconds"),
        ((abs, 1), {"deadline": True}, ValueError, "deadline must be seconds"),
        ((abs, 1), {"deadline": "1"}, ValueError, "deadline must be seconds"),
        ((abs, 1), {"run_in": "gpu"}, ValueError,
         "run_in must be one of loop, thread, process or None; got 'gpu'"),
        ((coroutine_function,), {"run_in": "thread"}, TypeError, "is a coroutine function"),
        ((lambda: 1,), {"run_in": "process"}, TypeError, "cannot be sent to a worker process"),
    ],
)  # fmt: skip
async def test_bad_input_is_refused_and_disturbs_nothing(
    clock: FakeClock,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """Bad input raises a clear error from spawn and submit; nothing is counted or queued."""
    async with started(clock) as h:
        with pytest.raises(error, match=message):
            h.scheduler.spawn(*args, **kwargs)
        with pytest.raises(error, match=message):
            await h.scheduler.submit(*args, **kwargs)
        stats = h.scheduler.statistics()
        assert stats.queued == stats.active == 0
        assert all(c.admitted == c.refused == 0 for c in stats.classes.values())
        assert await h.scheduler.submit(abs, -1) == 1


async def test_process_work_without_worker_processes_is_refused(clock: FakeClock) -> None:
    """run_in='process' with process_workers 0 raises ValueError saying what to set."""
    async with started(clock, section(process_workers=0)) as h:
        with pytest.raises(ValueError, match=r"scheduler\.process_workers is 0; set it >= 1"):
            h.scheduler.spawn(abs, 1, run_in="process")


async def test_reservations_that_do_not_fit_are_refused_at_construction(clock: FakeClock) -> None:
    """A scheduler whose loop classes reserve more than loop_workers cannot be built."""
    greedy = {"c": TaskClassConfig(priority=1, reserved=3)}
    with pytest.raises(ValueError, match="classes reserve 3 'loop' slots but there are 2"):
        Scheduler(section(greedy, loop_workers=2), ActorContext(clock=clock))


# -- hooks, configuration, supervision ------------------------------------------------------


async def test_hooks_see_admission_start_and_finish(clock: FakeClock) -> None:
    """Admission hooks may refuse, start hooks may fail a task, finish hooks see the outcome."""
    seen: list[tuple[str, str | None, bool]] = []

    def admit(task: Any) -> None:
        if task.plugin == "greedy":
            raise PermissionError("plugin 'greedy' is over quota")

    def start(task: Any) -> None:
        if task.plugin == "broken":
            raise RuntimeError("cannot start")

    async with started(clock) as h:
        h.scheduler.hooks.admission.append(admit)
        h.scheduler.hooks.start.append(start)
        h.scheduler.hooks.finish.append(
            lambda t: seen.append((t.task_class, t.plugin, t.error is None))
        )
        with pytest.raises(PermissionError, match="over quota"):
            h.scheduler.spawn(abs, 1, plugin="greedy")
        with pytest.raises(RuntimeError, match="cannot start"):
            await h.scheduler.submit(abs, 1, plugin="broken")
        assert await h.scheduler.submit(abs, -2, plugin="weather") == 2
        assert h.scheduler.statistics().classes["command"].refused == 0
        assert h.scheduler.statistics().classes["background"].refused == 1
    assert seen == [("command", "broken", False), ("command", "weather", True)]


def reloaded(scheduler: SchedulerSection) -> Config:
    return msgspec.structs.replace(Config(), scheduler=scheduler)


async def test_a_reload_applies_class_changes_and_new_classes_live(clock: FakeClock) -> None:
    """apply_config changes priorities, slots and adds classes without a restart."""
    gates = Gates()
    async with started(clock, section(loop_workers=1)) as h:
        h.scheduler.spawn(gates.hold("blocker"), task_class="command")
        waiting = h.scheduler.spawn(abs, -1, task_class="background")
        classes = {**CLASSES, "new": TaskClassConfig(priority=3),
                   "background": TaskClassConfig(priority=8)}  # fmt: skip
        assert h.scheduler.apply_config(reloaded(section(classes, loop_workers=2))) == []
        assert await waiting.result() == 1  # the second slot took it at once
        assert await h.scheduler.submit(abs, -2, task_class="new") == 2
        stats = h.scheduler.statistics()
        assert stats.slots["loop"] == 2 and stats.classes["background"].priority == 8


async def test_a_class_that_gets_a_deadline_leaves_adaptive_concurrency(
    clock: FakeClock,
) -> None:
    """A background class reloaded with a deadline gets its full max_concurrency back."""
    async with started(clock) as h:
        h.scheduler.observe_load(loop_lag_s=0.05)
        assert h.scheduler.statistics().classes["background"].limit == 2
        urgent = {**CLASSES, "background": TaskClassConfig(priority=9, deadline_ms=9000)}
        assert h.scheduler.apply_config(reloaded(section(urgent))) == []
        h.scheduler.observe_load(loop_lag_s=0.05)
        assert h.scheduler.statistics().classes["background"].limit == 4


async def test_a_reload_reports_what_needs_a_restart(clock: FakeClock) -> None:
    """Removing a class or changing process_workers needs a restart; the class still works."""
    async with started(clock) as h:
        fewer = {k: v for k, v in CLASSES.items() if k != "wake_word"}
        changed = h.scheduler.apply_config(reloaded(section(fewer, process_workers=1)))
        assert changed == ["$.scheduler.classes.wake_word", "$.scheduler.process_workers"]
        assert await h.scheduler.submit(abs, -1, task_class="wake_word") == 1


async def test_a_reload_whose_reservations_do_not_fit_changes_nothing(clock: FakeClock) -> None:
    """A reload reserving more loop slots than exist is not applied and says so."""
    async with started(clock, section(loop_workers=2)) as h:
        greedy = {**CLASSES, "wake_word": TaskClassConfig(priority=0, reserved=3)}
        assert h.scheduler.apply_config(reloaded(section(greedy, loop_workers=2))) == [
            "$.scheduler.classes"
        ]
        assert h.scheduler.statistics().classes["wake_word"].deadline_s == 0.5


async def test_the_scheduler_runs_and_restarts_under_a_supervisor(clock: FakeClock) -> None:
    """attach() supervises the scheduler: a crash of its parts restarts them."""
    bus = EventBus(clock=clock)
    context = ActorContext(clock=clock, events=bus)
    scheduler = Scheduler(section(), context, pool_factory=Pools(), cpu_probe=None)
    root = Supervisor("root", context=context, backoff_initial_s=0.0)
    scheduler.attach(root, context)

    def crash(task: Any) -> None:
        raise RuntimeError("a bug in a finish hook")

    with bus.subscribe(ActorCrashed) as crashes:
        async with root:
            assert await scheduler.submit(abs, -1) == 1
            scheduler.hooks.finish.append(crash)
            scheduler.spawn(abs, 1)
            await settle()
            scheduler.hooks.finish.remove(crash)
            await clock.advance(0.0)
            assert crashes.receive_nowait().name == "scheduler"
            assert await scheduler.submit(abs, -2) == 2
        with pytest.raises(ActorStopped):
            await scheduler.submit(abs, 1)


async def test_shed_background_recovery_action_refuses_queued_background_work(
    clock: FakeClock,
) -> None:
    """shed_background refuses the queued background tasks at once and leaves urgent work be."""
    classes = {**CLASSES, "background": TaskClassConfig(priority=9, max_concurrency=1)}
    gates = Gates()
    async with started(clock, section(classes)) as h:
        running = h.scheduler.spawn(gates.hold("bg"), task_class="background")
        queued = [h.scheduler.spawn(abs, -i, task_class="background") for i in range(3)]
        assert h.scheduler.shed_background() == 3
        for handle in queued:
            with pytest.raises(Overloaded, match="shed \\(a recovery action\\)"):
                await handle.result()
        assert not running.done()
        assert await h.scheduler.submit(abs, -3, task_class="command") == 3
        assert h.scheduler.shed_background() == 0
        later = h.scheduler.spawn(abs, -2, task_class="background")  # not refused: no overload
        gates.open("bg")
        assert await later.result() == 2
        assert h.scheduler.statistics().classes["background"].shed == 3
