"""The Scheduler service: assistant work first, latency targets held under load.

``submit`` and ``spawn`` check their input, build a ``Task`` and hand it to the engine, which
acts on the dispatch queue directly (no mailbox round trip): a task that finds a free slot
starts at once. Two maintenance tasks run beside the work: a dispatcher that wakes when a
queued task reaches its deadline (nothing else would notice), and a load monitor that measures
event-loop lag (a heartbeat on the clock) and CPU (``contending_cpu_percent``, off the loop)
to adapt background concurrency (AIMD) and to shed background work under overload. While the
loop lags (the monitor's last measurement above ``lag_target_ms``, and before its first one) and
urgent work (a class with a deadline) waits or runs, background work in worker processes is
paused and no more of it starts (``preempt_background``).

Standalone (a benchmark, a script), on the real clock::

    scheduler = Scheduler(load_config().scheduler, ActorContext())
    async with scheduler.running():
        text = await scheduler.submit(transcribe, audio, task_class="voice")

Under a Runtime, ``attach`` puts the same running parts under its supervisor.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, get_args

import anyio
import msgspec
import psutil

from runtime.config import Config, SchedulerSection, TaskClassConfig
from runtime.exceptions import ActorStopped
from runtime.logging import get_logger
from runtime.supervisor import Supervisor

from .aimd import AIMDLimit
from .engine import Engine, SchedulerHooks, tier_of
from .executors import Executors, PoolFactory, Tier, is_async
from .pool import ProcessPool
from .queue import EXECUTORS, DispatchQueue
from .stats import ClassRecord, SchedulerStatistics
from .task import Executor, Task, TaskHandle
from .watch import ProcessWatch

if TYPE_CHECKING:
    from runtime.actor import ActorContext

__all__ = ["ContendingCpu", "Scheduler", "contending_cpu_percent"]


class ContendingCpu:
    """The machine's CPU use at normal priority since the last call, in percent of all cores.

    Niced time (processes at niceness > 0, ``nice`` in ``/proc/stat``) is left out: such work
    yields the CPU to everything at normal priority, so it does not delay urgent work. The
    scheduler's own background workers run niced, and their saturating otherwise idle cores is
    the point of the pool, not an overload to shed. Without this, background work at full
    throughput read as 100% CPU and shed itself. The first call gives 0.0.
    """

    def __init__(self) -> None:
        self._last: Any = None

    def __call__(self) -> float:
        times = psutil.cpu_times()
        last, self._last = self._last, times
        if last is None:
            return 0.0
        total_s = _total_s(times) - _total_s(last)
        idle_s = _idle_s(times) - _idle_s(last)
        niced_s = getattr(times, "nice", 0.0) - getattr(last, "nice", 0.0)  # not on Windows
        if total_s <= 0:
            return 0.0
        return min(100.0, max(0.0, 100.0 * (total_s - idle_s - niced_s) / total_s))


def _total_s(times: Any) -> float:
    # As psutil counts it: guest time is already in user and nice.
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle_s(times: Any) -> float:
    return float(times.idle) + getattr(times, "iowait", 0.0)


# The default probe; shared, so with two schedulers each reads the span since either's last call.
contending_cpu_percent = ContendingCpu()


class Scheduler:
    """Runs assistant work by urgency: task classes, deadlines, admission, load shedding.

    ``cpu_probe`` gives the CPU percent that counts as load (called in a thread; by default
    the machine's CPU use at normal priority, see ``ContendingCpu``); ``None`` measures loop
    lag only. Raises ``ValueError`` when the classes' reserved slots do not fit their executors.
    """

    name = "scheduler"

    def __init__(
        self,
        config: SchedulerSection,
        context: ActorContext,
        *,
        pool_factory: PoolFactory = ProcessPool,
        cpu_probe: Callable[[], float] | None = contending_cpu_percent,
    ) -> None:
        self._clock = context.clock
        self._cpu_probe = cpu_probe
        executors = Executors(
            thread_workers=config.thread_workers,
            process_workers=config.process_workers,
            pool_factory=pool_factory,
            name=self.name,
        )
        queue = DispatchQueue(config.classes, _slots(config))
        self._engine = Engine(
            config, queue, executors, clock=context.clock, bus=context.events, name=self.name
        )
        self._aimd: dict[str, AIMDLimit] = {}
        self._resize_adaptive(config)
        self._ids = itertools.count(1)
        self._running = False
        self._wake: anyio.Event | None = None
        self._wake_at: float | None = None
        self._loop_lag_s = 0.0
        self._cpu_percent: float | None = None
        self._log = get_logger(self.name)

    @property
    def config(self) -> SchedulerSection:
        """The configuration in force (with any class a reload could not remove)."""
        return self._engine.config

    @property
    def hooks(self) -> SchedulerHooks:
        """Admission, start and finish hooks (the seam for plugin quotas)."""
        return self._engine.hooks

    # -- running ------------------------------------------------------------------------------

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Run the scheduler's parts under ``supervisor`` (restarted if they crash)."""
        supervisor.add_supervisor(_Host(self, context))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Scheduler]:
        """Run the pools, the dispatcher and the load monitor for the body of ``async with``.

        Works without a Runtime, on any clock. On exit, tasks still waiting or running fail
        with ``ActorStopped`` and the pools close. Raises ``RuntimeError`` if already running
        and what a process pool raises when it cannot start.
        """
        if self._running:
            raise RuntimeError("the scheduler is already running; stop it first")
        self._running = True
        engine = self._engine
        body_error: BaseException | None = None
        try:
            await engine.executors.start(self._eager_tiers())
            async with anyio.create_task_group() as tg:
                engine.tg = tg
                tg.start_soon(self._dispatcher)
                tg.start_soon(self._monitor)
                try:
                    yield self
                except BaseException as exc:
                    # Re-raised below, after the task group, so that the caller gets its own
                    # error back as it was, not wrapped in an exception group.
                    body_error = exc
                finally:
                    engine.abort()
        finally:
            engine.tg = None
            engine.paused = False
            engine.queue.held = frozenset()
            self._running = False
            await engine.executors.aclose()
        if body_error is not None:
            raise body_error

    def _eager_tiers(self) -> set[Tier]:
        classes = self.config.classes.values()
        return {tier_of(c) for c in classes if c.executor == "process"}

    async def _dispatcher(self) -> None:
        """Sleep until the next queued deadline (or a poke); expire, start and shed then."""
        while True:
            self._wake = anyio.Event()
            self._engine.dispatch()
            self._wake_at = self._engine.queue.next_expiry()
            now = self._clock.now()
            delay_s = None if self._wake_at is None else max(0.0, self._wake_at - now)
            with self._clock.move_on_after(delay_s):
                await self._wake.wait()

    def _poke_dispatcher(self, task: Task, config: TaskClassConfig) -> None:
        """Wake the dispatcher when a new queued task expires before its next wake-up."""
        due = task.deadline_at
        if due is None or config.on_late != "fail" or self._wake is None:
            return
        if self._wake_at is None or due < self._wake_at:
            self._wake.set()

    async def _monitor(self) -> None:
        """Measure loop lag (a heartbeat on the clock) and CPU (in a thread) every interval."""
        while True:
            interval_s = self.config.load.interval_ms / 1000
            began = self._clock.now()
            await self._clock.sleep(interval_s)
            lag_s = max(0.0, self._clock.now() - began - interval_s)
            cpu: float | None = None
            if self._cpu_probe is not None:
                cpu = await anyio.to_thread.run_sync(self._cpu_probe)
            self.observe_load(loop_lag_s=lag_s, cpu_percent=cpu)

    def observe_load(self, *, loop_lag_s: float, cpu_percent: float | None = None) -> None:
        """Take one load measurement: adapt background concurrency, start or stop shedding.

        Above ``lag_target_ms`` or ``cpu_target_percent`` background limits shrink, else they
        grow; above ``lag_target_ms`` background processes are also paused while urgent work is
        active (``preempt_background``); at ``shed_lag_ms`` or ``shed_cpu_percent`` background
        work is refused.
        """
        load, queue = self.config.load, self._engine.queue
        self._loop_lag_s, self._cpu_percent = loop_lag_s, cpu_percent
        lag_ms, cpu = loop_lag_s * 1000, cpu_percent or 0.0
        busy = lag_ms > load.lag_target_ms or cpu > load.cpu_target_percent
        for name, limit in self._aimd.items():
            queue.set_limit(name, limit.update(busy))
        queue.overloaded = lag_ms >= load.shed_lag_ms or cpu >= load.shed_cpu_percent
        # Pausing our own niced workers cannot relieve CPU taken by other programs; it is for
        # a loop that falls behind.
        self._engine.under_load = lag_ms > load.lag_target_ms
        self._engine.dispatch()

    def shed_background(self) -> int:
        """A recovery action: refuse every queued background task now (``Overloaded``) and
        shrink the background concurrency limits as an overload measurement would.

        Returns how many tasks were shed. The next load measurement decides what happens next.
        """
        engine, queue = self._engine, self._engine.queue
        overloaded, queue.overloaded = queue.overloaded, True
        try:
            shed = queue.shed(self._clock.now())
        finally:
            queue.overloaded = overloaded
        for task in shed:
            engine.end_shed(task)
        for name, limit in self._aimd.items():
            queue.set_limit(name, limit.update(True))
        self._log.warning("background work shed", shed=len(shed))
        return len(shed)

    # -- submitting ---------------------------------------------------------------------------

    async def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        task_class: str = "command",
        deadline: float | None = None,
        run_in: Executor | None = None,
        plugin: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as a task of ``task_class`` and return its value.

        ``deadline``: seconds from now (default: the class's). ``run_in``: "loop", "thread" or
        "process" (default: coroutine functions on the loop, others in the class's executor).
        ``plugin`` names the plugin the work is for. Cancelling the caller cancels the task.
        Raises what ``spawn`` raises, then what ``TaskHandle.result`` raises.
        """
        task = self._admit(fn, args, kwargs, task_class, deadline, run_in, plugin)
        try:
            if task.state != "done":
                assert task.finished is not None
                await task.finished.wait()
        except BaseException:
            self._engine.cancel(task)
            raise
        if task.error is not None:
            raise task.error
        return task.value

    def spawn(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        task_class: str = "background",
        deadline: float | None = None,
        run_in: Executor | None = None,
        plugin: str | None = None,
        **kwargs: Any,
    ) -> TaskHandle[Any]:
        """Start ``fn(*args, **kwargs)`` as a task of ``task_class``; return its handle.

        Raises ``ValueError`` for an unknown class (the message lists the valid ones), a
        deadline that is not > 0, a bad ``run_in`` or no worker processes for one;
        ``TypeError`` for a non-callable, a coroutine function sent to a thread or process, or
        a call that cannot be sent to a process; ``ActorStopped`` when the scheduler is not
        running; ``Overloaded`` when the class's queue is full, background work is being shed
        or the deadline cannot be met; and whatever an admission hook raises.
        """
        task = self._admit(fn, args, kwargs, task_class, deadline, run_in, plugin)
        return TaskHandle(task, self._engine.cancel)

    def _admit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        task_class: str,
        deadline: float | None,
        run_in: Executor | None,
        plugin: str | None,
    ) -> Task:
        config = self._class_config(task_class)
        deadline_s = _deadline_s(deadline, config)
        executor = _executor(fn, run_in, config)
        engine = self._engine
        if engine.tg is None:
            raise ActorStopped(self.name)
        task = Task(
            next(self._ids), task_class, fn=fn, args=args, kwargs=kwargs, run_in=executor,
            priority=config.priority, submitted_at=self._clock.now(), deadline_s=deadline_s,
            plugin=plugin,
        )  # fmt: skip
        if executor == "process":
            task.call = engine.executors.prepare(tier_of(config), fn, args, kwargs)
        engine.admit(task)
        if task.state == "queued":
            self._poke_dispatcher(task, config)
        return task

    # -- the seam for policies (plugin quotas) -------------------------------------------------

    def hold(self, task: Task) -> None:
        """From an admission hook: keep ``task`` out of the queue until ``release``.

        Raises ``RuntimeError`` for a task that is not being admitted.
        """
        self._engine.hold(task)

    def release(self, task: Task, error: BaseException | None = None) -> bool:
        """Queue a held task now, or end it with ``error``; ``False`` if it is not held."""
        released = self._engine.release(task, error)
        if task.state == "queued":
            self._poke_dispatcher(task, self.config.classes[task.task_class])
        return released

    def cancel(self, task: Task, error: BaseException | None = None) -> None:
        """Cancel a held, queued or running task; it ends with ``error`` (default
        ``TaskCancelled``). A running process call's worker is killed and replaced."""
        self._engine.cancel(task, error)

    def watch(
        self, task: Task, *, memory_limit_bytes: int | None = None, cpu_limit_s: int | None = None
    ) -> ProcessWatch:
        """Run process task ``task`` under limits and report its worker and usage (see
        ``actors.scheduler.watch``). Raises ``ValueError`` for a task that does not run in a
        process or has started, or a limit that is not a positive int."""
        if task.run_in != "process" or task.state not in ("new", "held", "queued"):
            raise ValueError(f"only a process task that has not started can be watched; {task!r}")
        watch = ProcessWatch(memory_limit_bytes=memory_limit_bytes, cpu_limit_s=cpu_limit_s)
        task.watch = watch
        return watch

    def _class_config(self, task_class: str) -> TaskClassConfig:
        config = self.config.classes.get(task_class)
        if config is None:
            valid = ", ".join(self.config.classes)
            raise ValueError(f"task_class must be one of {valid}; got {task_class!r}")
        return config

    # -- configuration and statistics ---------------------------------------------------------

    def apply_config(self, config: Config) -> list[str]:
        """Apply a reloaded configuration live; return the $.paths that need a restart.

        Live: every class setting, new classes, thread_workers, loop_workers,
        preempt_background and load. Not live: removing a class, process_workers, enabled.
        """
        new, old = config.scheduler, self.config
        restart = [f"$.scheduler.classes.{n}" for n in old.classes if n not in new.classes]
        if new.process_workers != old.process_workers:
            restart.append("$.scheduler.process_workers")
        if new.enabled != old.enabled:
            restart.append("$.scheduler.enabled")
        kept = {name: c for name, c in old.classes.items() if name not in new.classes}
        merged = msgspec.structs.replace(
            new, classes={**kept, **new.classes}, process_workers=old.process_workers
        )
        engine = self._engine
        try:
            engine.queue.configure(merged.classes, _slots(merged))
        except ValueError as exc:
            self._log.error("scheduler config not applied", error=str(exc))
            return sorted({*restart, "$.scheduler.classes"})
        engine.config = merged
        engine.executors.set_thread_workers(merged.thread_workers)
        for name in merged.classes:
            engine.records.setdefault(name, ClassRecord())
        self._resize_adaptive(merged)
        engine.dispatch()
        return restart

    def _resize_adaptive(self, config: SchedulerSection) -> None:
        """One AIMD limit per background class (no deadline), up to its max_concurrency."""
        load = config.load
        for name, cls in config.classes.items():
            if cls.deadline_ms is not None:
                if self._aimd.pop(name, None) is not None:  # became urgent: never adapted
                    self._engine.queue.set_limit(name, cls.max_concurrency)
                continue
            limit = self._aimd.get(name)
            if limit is None:
                limit = self._aimd[name] = AIMDLimit(cls.max_concurrency)
            limit.resize(cls.max_concurrency)
            limit.increase, limit.decrease_factor = load.increase, load.decrease_factor
            self._engine.queue.set_limit(name, limit.limit)

    def statistics(self) -> SchedulerStatistics:
        """Per-class queues, outcomes and latency; slots per executor; load; pools."""
        engine, queue = self._engine, self._engine.queue
        classes = {
            name: engine.records[name].snapshot(
                cls, limit=queue.limit(name), queue_depth=queue.depth(name),
                running=queue.running(name),
            )
            for name, cls in self.config.classes.items()
        }  # fmt: skip
        return SchedulerStatistics(
            running=engine.tg is not None,
            queued=len(queue),
            active=sum(queue.busy(e) for e in EXECUTORS),
            classes=classes,
            slots={e: queue.slots(e) for e in EXECUTORS},
            busy={e: queue.busy(e) for e in EXECUTORS},
            loop_lag_s=self._loop_lag_s,
            cpu_percent=self._cpu_percent,
            overloaded=queue.overloaded,
            shedding=sorted(queue.pressured),
            background_paused=engine.paused,
            pools=engine.executors.statistics(),
        )


class _Host(Supervisor):
    """The scheduler's running parts as a supervised child: a supervisor without children
    whose ``run`` holds ``Scheduler.running`` open, so a crash there restarts all of it."""

    def __init__(self, scheduler: Scheduler, context: ActorContext) -> None:
        super().__init__(scheduler.name, context=context)
        self._scheduler = scheduler

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        async with self._scheduler.running():
            await super().run(started)


def _slots(config: SchedulerSection) -> dict[Executor, int]:
    return {
        "loop": config.loop_workers,
        "thread": config.thread_workers,
        "process": config.process_workers,
    }


def _deadline_s(deadline: float | None, config: TaskClassConfig) -> float | None:
    if deadline is None:
        return None if config.deadline_ms is None else config.deadline_ms / 1000
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise ValueError(f"deadline must be seconds (a number > 0) or None; got {deadline!r}")
    if not (math.isfinite(deadline) and deadline > 0):
        raise ValueError(
            f"deadline must be > 0 seconds from now (None: the class's); got {deadline!r}"
        )
    return float(deadline)


def _executor(fn: Callable[..., Any], run_in: Executor | None, config: TaskClassConfig) -> Executor:
    if not callable(fn):
        raise TypeError(f"fn must be callable (a function or coroutine function); got {fn!r}")
    if run_in is not None and run_in not in EXECUTORS:
        valid = ", ".join(get_args(Executor))
        raise ValueError(f"run_in must be one of {valid} or None; got {run_in!r}")
    if is_async(fn):
        if run_in not in (None, "loop"):
            name = getattr(fn, "__qualname__", repr(fn))
            raise TypeError(
                f"{name} is a coroutine function: it runs on the loop; drop run_in={run_in!r}"
            )
        return "loop"
    return run_in if run_in is not None else config.executor
