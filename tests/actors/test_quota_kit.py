"""Helpers for the quota tests (no tests here): a fake worker pool that honours watches, an
inline offload, a harness running a real Scheduler and a QuotaEnforcer on the fake clock."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import msgspec

from actors.quota import BudgetReading, QuotaEnforcer
from actors.quota.monitor import Reading
from actors.scheduler import Scheduler
from actors.scheduler.watch import ProcessWatch
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import Config, PluginQuota, QuotaSection, SchedulerSection, TaskClassConfig
from runtime.events import Event, EventBus, Subscription

T = TypeVar("T")
MIB = 1024 * 1024

CLASSES = {
    "command": TaskClassConfig(priority=2, deadline_ms=2000),
    "background": TaskClassConfig(priority=9),
    "plugin_cpu": TaskClassConfig(priority=3, deadline_ms=60_000, executor="process"),
}


async def inline(fn: Callable[..., T], *args: Any) -> T:
    """An offload that runs the blocking function on the loop: deterministic on a fake clock."""
    return fn(*args)


class FakeControl:
    """Stands in for a worker: records the stops and continues its watch asks for."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.held = False
        self.log: list[str] = []

    def hold(self) -> bool:
        if self.held:
            return False
        self.held = True
        self.log.append("stop")
        return True

    def unhold(self) -> bool:
        if not self.held:
            return False
        self.held = False
        self.log.append("cont")
        return True


class FakePool:
    """A process pool stand-in: each call gets a fresh pid and waits until the test lets it
    finish (``finish(pid)``); a watched call is bound, told its start memory, given usage."""

    pids = itertools.count(5001)

    def __init__(self, size: int, *, niceness: int = 0, name: str = "pool") -> None:
        self.name = name
        self.gates: dict[int, anyio.Event] = {}
        self.controls: dict[int, FakeControl] = {}
        self.start_rss_bytes = 20 * MIB
        self.cpu_s = 0.25
        self.peak_rss_bytes = 30 * MIB
        self.cancelled: list[int] = []

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def prepare(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return (fn, args, kwargs)

    async def run(
        self, call: Any, *, preemptible: bool = False, watch: ProcessWatch | None = None
    ) -> Any:
        fn, args, kwargs = call
        pid = next(self.pids)
        control = self.controls[pid] = FakeControl(pid)
        gate = self.gates[pid] = anyio.Event()
        if watch is not None:
            watch.bind(pid, control)
            watch.start_rss_bytes = self.start_rss_bytes
        try:
            await gate.wait()
            result = fn(*args, **kwargs)
            if watch is not None:
                watch.cpu_s, watch.peak_rss_bytes = self.cpu_s, self.peak_rss_bytes
            return await result if inspect.isawaitable(result) else result
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(pid)
            raise
        finally:
            if watch is not None:
                watch.unbind()

    def finish(self, pid: int) -> None:
        self.gates[pid].set()

    def running(self) -> list[int]:
        return [pid for pid, gate in self.gates.items() if not gate.is_set()]

    def pause_preemptible(self) -> int:
        return 0

    def resume_preemptible(self) -> int:
        return 0

    def statistics(self) -> dict[str, Any]:
        return {}


@dataclass
class Harness:
    """A running scheduler and enforcer on the fake clock, with the fake pools, the fake
    process readings (pid -> Reading) and the budget readings the probe returns."""

    clock: FakeClock
    scheduler: Scheduler
    quotas: QuotaEnforcer
    bus: EventBus
    pools: dict[str, FakePool]
    readings: dict[int, Reading] = field(default_factory=dict)
    budget: list[BudgetReading] = field(default_factory=lambda: [BudgetReading(0, 0.0)])

    @property
    def pool(self) -> FakePool:
        return self.pools["scheduler.urgent"]

    def read(self, pids: list[int]) -> dict[int, Reading]:
        return {pid: self.readings[pid] for pid in pids if pid in self.readings}

    def probe(self) -> BudgetReading:
        return self.budget[-1]


def quota_config(plugins: dict[str, PluginQuota] | None = None, **settings: Any) -> Config:
    """The default config with these quota plugins and settings."""
    section = QuotaSection(plugins=plugins or {}, **settings)
    return msgspec.structs.replace(Config(), quotas=section)


def scheduler_section(**settings: Any) -> SchedulerSection:
    values: dict[str, Any] = {"classes": CLASSES, "thread_workers": 2, "process_workers": 2,
                              "loop_workers": 8}  # fmt: skip
    values.update(settings)
    return SchedulerSection(**values)


@asynccontextmanager
async def enforced(
    clock: FakeClock,
    config: Config | None = None,
    *,
    scheduler: SchedulerSection | None = None,
    cpu_count: int = 2,
) -> AsyncIterator[Harness]:
    """A running Scheduler (fake pools) and a running QuotaEnforcer on the fake clock."""
    bus = EventBus(clock=clock)
    context = ActorContext(clock=clock, events=bus)
    pools: dict[str, FakePool] = {}

    def make_pool(size: int, *, niceness: int = 0, name: str = "pool") -> FakePool:
        pool = pools[name] = FakePool(size, niceness=niceness, name=name)
        return pool

    sched = Scheduler(scheduler or scheduler_section(), context, pool_factory=make_pool,
                      cpu_probe=None)  # fmt: skip
    harness: Harness
    quotas = QuotaEnforcer(config or quota_config(), context, sched, cpu_count=cpu_count,
                           probe=lambda: harness.probe(), read_processes=lambda p: harness.read(p),
                           offload=inline)  # fmt: skip
    harness = Harness(clock, sched, quotas, bus, pools)
    async with sched.running(), quotas.running():
        yield harness


def drain(subscription: Subscription[Event]) -> list[Event]:
    """Every event waiting in a subscription, oldest first."""
    found: list[Event] = []
    while len(subscription):
        found.append(subscription.receive_nowait())
    return found


class Gates:
    """Coroutines that hold until the test opens their gate; a log of starts with the time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.started: list[tuple[str, float]] = []
        self.events: dict[str, anyio.Event] = {}

    def hold(self, name: str) -> Callable[[], Any]:
        gate = self.events.setdefault(name, anyio.Event())

        async def held() -> str:
            self.started.append((name, self.clock.now()))
            await gate.wait()
            return name

        return held

    def note(self, name: str) -> Callable[[], Any]:
        """A coroutine function that only records its start."""

        async def noted() -> str:
            self.started.append((name, self.clock.now()))
            return name

        return noted

    def open(self, name: str) -> None:
        self.events[name].set()

    def names(self) -> list[str]:
        return [name for name, _ in self.started]
