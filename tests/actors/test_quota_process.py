"""Quotas on real worker processes: a plugin allocating past its memory quota is terminated
within a second and the pool's next task runs; one spinning past its CPU share is throttled
under it; one past its time limit is cancelled on time; no process is left behind.

Events are ordered by real conditions (a file the plugin writes, the enforcer's statistics, the
CPU time a worker used), polled under a bound; no test sleeps to make something happen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
import pytest

from actors.quota import QuotaEnforcer
from actors.scheduler import Scheduler
from runtime.actor import ActorContext
from runtime.clock import RealClock
from runtime.config import SchedulerSection, TaskClassConfig
from runtime.events import EventBus, PluginTerminated, PluginThrottled, QuotaExceeded
from runtime.exceptions import QuotaExceeded as QuotaError

from . import test_quota_procfuncs as procfuncs
from .test_quota_kit import drain, quota_config


def children() -> set[int]:
    """Live child processes of this test process, multiprocessing's resource tracker aside."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:  # gone meanwhile
            continue
    return found


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a real condition (statistics, CPU time of a process) until it holds."""
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110  # no event tells when a process used CPU
            await anyio.sleep(0.01)


@dataclass
class Real:
    scheduler: Scheduler
    quotas: QuotaEnforcer
    bus: EventBus

    async def run(
        self, fn: Callable[..., object], *args: object, plugin: str | None = None
    ) -> object:
        return await self.scheduler.submit(fn, *args, task_class="plugin", plugin=plugin)


@asynccontextmanager
async def real(**quota_settings: object) -> AsyncIterator[Real]:
    """A scheduler with one real worker process and an enforcer measuring every 50 ms; on
    exit, no child process is left."""
    clock = RealClock()
    bus = EventBus(clock=clock)
    context = ActorContext(clock=clock, events=bus)
    plugin_class = TaskClassConfig(priority=2, deadline_ms=60_000, executor="process")
    section = SchedulerSection(classes={"plugin": plugin_class}, process_workers=1,
                               thread_workers=2, loop_workers=8)  # fmt: skip
    scheduler = Scheduler(section, context, cpu_probe=None)
    settings: dict[str, object] = {"interval_ms": 50, "cpu_window_ms": 500}
    settings.update(quota_settings)
    quotas = QuotaEnforcer(quota_config(**settings), context, scheduler)
    async with scheduler.running(), quotas.running():
        yield Real(scheduler, quotas, bus)
    assert children() == set()


async def test_a_plugin_allocating_past_its_memory_quota_is_terminated_within_a_second(
    tmp_path: Path,
) -> None:
    """Past its memory quota a call is killed within a second; the pool's next task runs."""
    mark = tmp_path / "reached"
    async with real() as r:
        r.quotas.register("hog", memory_mb=64)
        worker = await r.run(procfuncs.pid)
        with r.bus.subscribe(PluginTerminated) as events:
            with pytest.raises(QuotaError, match="memory quota") as info:
                await r.run(procfuncs.grow, 2, 0.01, 1024, 56, str(mark), plugin="hog")
            terminated_at = time.monotonic()
            (event,) = drain(events)
        assert terminated_at - float(mark.read_text()) < 1.0
        assert info.value.measured > 64 and info.value.limit == 64
        assert event.pid == worker  # type: ignore[attr-defined]
        assert worker not in children()
        assert await r.run(procfuncs.square, 7) == 49
        assert await r.run(procfuncs.pid) != worker
        stats = r.quotas.statistics().plugins["hog"]
        assert stats.terminated == 1 and stats.peak_memory_mb > 64


async def test_a_sudden_huge_allocation_is_refused_by_the_rlimit_and_the_worker_lives() -> None:
    """A huge allocation fails by the rlimit; the worker lives and is free of it after."""
    async with real() as r:
        r.quotas.register("hog", memory_mb=64)
        worker = await r.run(procfuncs.pid)
        with pytest.raises(MemoryError) as info:
            await r.run(procfuncs.allocate, 512, plugin="hog")
        assert "exceeded its memory quota (64 MB)" in info.value.__notes__[-1]
        assert await r.run(procfuncs.pid) == worker
        assert await r.run(procfuncs.allocate, 256) == 256 * 1024 * 1024  # limit put back
        assert r.quotas.statistics().plugins["hog"].terminated == 1


async def test_a_plugin_spinning_past_its_cpu_share_is_throttled_under_it(
    tmp_path: Path,
) -> None:
    """A worker spinning a core is throttled and then measures under its 10% share."""
    stop = tmp_path / "stop"
    cpus = psutil.cpu_count() or 1
    async with real() as r:
        r.quotas.register("spinner", cpu_percent=10)
        worker = psutil.Process(int(await r.run(procfuncs.pid)))  # type: ignore[call-overload]
        with r.bus.subscribe(QuotaExceeded, PluginThrottled) as events:
            handle = r.scheduler.spawn(procfuncs.spin_until, str(stop), task_class="plugin",
                                       plugin="spinner")  # fmt: skip
            await wait_until(lambda: r.quotas.statistics().plugins["spinner"].throttled == 1)
            warning, throttled = drain(events)
        assert isinstance(warning, QuotaExceeded) and warning.measured > 10
        assert isinstance(throttled, PluginThrottled) and throttled.quota == "cpu"
        begin_cpu_s, begin = sum(worker.cpu_times()[:2]), time.monotonic()
        await wait_until(lambda: sum(worker.cpu_times()[:2]) - begin_cpu_s >= 0.1)
        share = (sum(worker.cpu_times()[:2]) - begin_cpu_s) / (time.monotonic() - begin) / cpus
        assert share * 100 < 10
        stop.touch()
        assert int(await handle.result()) > 0
        stats = r.quotas.statistics().plugins["spinner"]
        assert (stats.throttled, stats.terminated, stats.completed) == (1, 0, 1)
        assert stats.cpu_s > 0.1


async def test_a_plugin_past_its_time_limit_is_cancelled_on_time(tmp_path: Path) -> None:
    """A call past its 0.3 s limit fails on time; its worker is replaced; the next runs."""
    async with real() as r:
        r.quotas.register("slow", timeout_s=0.3)
        worker = await r.run(procfuncs.pid)
        began = time.monotonic()
        with r.bus.subscribe(PluginTerminated) as events:
            with pytest.raises(QuotaError, match="timeout quota"):
                await r.run(procfuncs.spin_until, str(tmp_path / "never"), plugin="slow")
            elapsed = time.monotonic() - began
            (event,) = drain(events)
        assert 0.3 <= elapsed < 1.0  # the kill, and a replacement worker started, included
        assert event.pid == worker  # type: ignore[attr-defined]
        assert worker not in children()
        assert await r.run(procfuncs.square, 3) == 9
