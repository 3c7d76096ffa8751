"""The systems ``bench.scheduler`` compares: our Scheduler, and the usual ways (a) and (b)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec

from actors.scheduler import Scheduler, TaskHandle
from actors.scheduler.service import contending_cpu_percent
from runtime.actor import ActorContext
from runtime.config import SchedulerSection, load_config
from runtime.exceptions import Overloaded

from ._scheduler_work import CORES, Recorder, burn, voice_turn

__all__ = ["FifoPool", "Ours", "ToThread", "ours_config"]


# -- ours --------------------------------------------------------------------------------------


def ours_config() -> SchedulerSection:
    """The shipped defaults; voice on the loop (its turns are coroutines), cores workers."""
    base = load_config(env={}).scheduler
    voice = msgspec.structs.replace(base.classes["voice"], executor="loop")
    return msgspec.structs.replace(
        base, classes={**base.classes, "voice": voice}, process_workers=CORES
    )


class Ours:
    """Our Scheduler, standalone on the real clock, with its shipped load monitor."""

    def __init__(
        self,
        name: str = "ours",
        *,
        config: SchedulerSection | None = None,
        cpu_probe: Callable[[], float] | None = contending_cpu_percent,
    ) -> None:
        self.name = name
        self.config = ours_config() if config is None else config
        self.cpu_probe = cpu_probe
        self._stats: dict[str, Any] = {}
        self._timeline: list[tuple[float, int, bool, bool, float | None, float]] = []

    @asynccontextmanager
    async def running(self, rec: Recorder) -> AsyncIterator[None]:
        self._rec = rec
        self._scheduler = Scheduler(self.config, ActorContext(), cpu_probe=self.cpu_probe)
        async with self._scheduler.running(), anyio.create_task_group() as self._tg:
            self._tg.start_soon(self._watch)
            yield
            self._stats = _ours_statistics(self._scheduler, self._timeline, rec.window)
            self._tg.cancel_scope.cancel()

    async def _watch(self) -> None:
        """Record the load state every 250 ms: what the scheduler decided, and why."""
        while True:
            stats = self._scheduler.statistics()
            self._timeline.append((
                time.monotonic(), stats.classes["background"].limit, stats.overloaded,
                stats.background_paused, stats.cpu_percent, stats.loop_lag_s,
            ))  # fmt: skip
            await anyio.sleep(0.25)

    def voice(self, due: float) -> None:
        self._tg.start_soon(self._voice, due)

    async def _voice(self, due: float) -> None:
        try:
            await self._scheduler.submit(
                voice_turn, self._rec.work.voice_iterations, task_class="voice"
            )
        except Exception as exc:
            self._rec.voice_failure(due, exc)
        else:
            self._rec.voice(due)

    def offer(self, due: float) -> bool:
        try:
            handle = self._scheduler.spawn(
                burn, self._rec.work.task_iterations, task_class="background"
            )
        except Overloaded:
            return False
        self._tg.start_soon(self._collect, due, handle)
        return True

    async def _collect(self, due: float, handle: TaskHandle[tuple[float, float]]) -> None:
        try:
            started, ended = await handle.result()
        except Overloaded:
            self._rec.bg_shed[due] = time.monotonic()
        else:
            self._rec.background(due, started, ended)

    def extra(self) -> dict[str, Any]:
        return self._stats


def _ours_statistics(
    scheduler: Scheduler,
    timeline: list[tuple[float, int, bool, bool, float | None, float]],
    window: tuple[float, float],
) -> dict[str, Any]:
    """The parts of ``statistics()`` that explain a run, and the load state over the window
    (sampled every 250 ms): the background limit (AIMD), shedding, pausing, the CPU the
    scheduler counted as load (``contending_cpu_percent``: CPU at normal priority, other
    programs' included) and the loop lag."""
    stats = scheduler.statistics()
    keep = ("limit", "admitted", "completed", "refused", "shed", "expired", "deadline_misses")
    inside = [row for row in timeline if window[0] <= row[0] <= window[1]] or [
        (0.0, 0, False, False, None, 0.0)
    ]
    cpus = [row[4] for row in inside if row[4] is not None]
    return {
        "classes": {
            name: {key: getattr(stats.classes[name], key) for key in keep}
            for name in ("voice", "background")
        },
        "window_background_limit_mean": sum(row[1] for row in inside) / len(inside),
        "window_overloaded_share": sum(row[2] for row in inside) / len(inside),
        "window_paused_share": sum(row[3] for row in inside) / len(inside),
        "window_contending_cpu_percent_mean": sum(cpus) / len(cpus) if cpus else None,
        "window_loop_lag_ms_max": max(row[5] for row in inside) * 1000,
        "pools": msgspec.to_builtins(stats.pools),
    }


# -- (a) coroutines + anyio.to_thread ----------------------------------------------------------


class ToThread:
    """Voice turns as plain coroutines; CPU work in threads (``anyio.to_thread.run_sync``)."""

    name = "(a) to_thread"

    @asynccontextmanager
    async def running(self, rec: Recorder) -> AsyncIterator[None]:
        self._rec = rec
        self._limiter = anyio.CapacityLimiter(CORES)
        async with anyio.create_task_group() as self._tg:
            yield
            self._tg.cancel_scope.cancel()

    def voice(self, due: float) -> None:
        self._tg.start_soon(self._voice, due)

    async def _voice(self, due: float) -> None:
        await voice_turn(self._rec.work.voice_iterations)
        self._rec.voice(due)

    def offer(self, due: float) -> bool:
        self._tg.start_soon(self._background, due)
        return True

    async def _background(self, due: float) -> None:
        started, ended = await anyio.to_thread.run_sync(
            burn, self._rec.work.task_iterations, limiter=self._limiter, abandon_on_cancel=True
        )
        self._rec.background(due, started, ended)

    def extra(self) -> dict[str, Any]:
        return {}


# -- (b) a FIFO pool of N workers on an asyncio.Queue ------------------------------------------


class FifoPool:
    """``cores`` worker tasks on one ``asyncio.Queue``; CPU jobs in a ``ProcessPoolExecutor``.

    The executor is made and its processes started inside the run, before the clock starts
    (ours starts its worker processes the same way). ``niceness`` > 0 lowers its workers'
    priority as ours does, which takes the OS priority out of a comparison on a shared machine.
    """

    name = "(b) FIFO pool"

    def __init__(self, niceness: int = 0) -> None:
        self.niceness = niceness
        if niceness:
            self.name = f"(b) FIFO pool, nice {niceness}"

    @asynccontextmanager
    async def running(self, rec: Recorder) -> AsyncIterator[None]:
        self._rec = rec
        self._queue: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
        spawn = multiprocessing.get_context("spawn")  # as ours: no fork of a threaded process
        self._pool = ProcessPoolExecutor(
            CORES, mp_context=spawn, initializer=os.nice, initargs=(self.niceness,)
        )
        try:
            loop = asyncio.get_running_loop()
            warm = [loop.run_in_executor(self._pool, burn, 1) for _ in range(CORES)]
            await asyncio.gather(*warm)
            async with anyio.create_task_group() as tg:
                for _ in range(CORES):
                    tg.start_soon(self._worker)
                yield
                self._queued_at_end = self._queue.qsize()
                tg.cancel_scope.cancel()
        finally:
            await anyio.to_thread.run_sync(lambda: self._pool.shutdown(cancel_futures=True))

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            is_voice, due = await self._queue.get()
            if is_voice:
                await voice_turn(self._rec.work.voice_iterations)
                self._rec.voice(due)
            else:
                job = loop.run_in_executor(self._pool, burn, self._rec.work.task_iterations)
                started, ended = await job
                self._rec.background(due, started, ended)

    def voice(self, due: float) -> None:
        self._queue.put_nowait((True, due))

    def offer(self, due: float) -> bool:
        self._queue.put_nowait((False, due))
        return True

    def extra(self) -> dict[str, Any]:
        return {"queued_at_end": self._queued_at_end}
