"""The workload of ``bench.scheduler``: voice turns, CPU-bound background tasks, a scenario.

Kept apart from the systems and the report; the worker processes of the systems under test
import it to run ``burn``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import psutil

CORES = os.cpu_count() or 1
VOICE_PERIOD_S = 0.030
VOICE_STEPS = 4
VOICE_STEP_S = 0.005  # 4 x 5 ms = the 20 ms a turn awaits by design
VOICE_AWAIT_S = VOICE_STEPS * VOICE_STEP_S
VOICE_WORK_S = 0.0002
VOICE_DEADLINE_S = 1.0  # the voice class's shipped deadline_ms
TASK_CPU_S = 0.050


# -- the work ----------------------------------------------------------------------------------


def spin(iterations: int) -> int:
    """Pure-Python CPU work: ``iterations`` rounds of integer arithmetic."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def burn(iterations: int) -> tuple[float, float]:
    """A background task: CPU work; returns when it started and ended (``time.monotonic``,
    which is system-wide on Linux, so a worker process's stamps compare with ours)."""
    started = time.monotonic()
    spin(iterations)
    return started, time.monotonic()


def calibrate(seconds: float) -> int:
    """The ``spin`` iterations that take ``seconds`` of CPU time here (best of 5)."""
    probe = 200_000
    best = math.inf
    for _ in range(5):
        began = time.process_time()
        spin(probe)
        best = min(best, time.process_time() - began)
    return max(1, round(probe * seconds / best))


async def voice_turn(work_iterations: int) -> None:
    """A voice turn: 0.2 ms of Python work before each of 4 awaits of 5 ms."""
    for _ in range(VOICE_STEPS):
        spin(work_iterations)
        await anyio.sleep(VOICE_STEP_S)


# -- what a run records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """The calibrated work and how hard background tasks are offered."""

    voice_iterations: int
    task_iterations: int
    overload: float  # 0: no background load

    @property
    def offer_period_s(self) -> float:
        """Seconds between two background offers: ``overload`` x what the cores complete."""
        return TASK_CPU_S / (CORES * self.overload)


@dataclass
class Recorder:
    """Timestamps (``time.monotonic``) of one scenario, keyed by scheduled arrival (``due``)."""

    work: Work
    window: tuple[float, float] = (0.0, 0.0)
    voice_arrived: list[float] = field(default_factory=list)
    voice_done: dict[float, float] = field(default_factory=dict)
    voice_failed: dict[float, str] = field(default_factory=dict)
    bg_admitted: list[float] = field(default_factory=list)
    bg_refused: list[float] = field(default_factory=list)  # refused when offered
    bg_started: dict[float, float] = field(default_factory=dict)  # in the worker
    bg_ended: list[float] = field(default_factory=list)
    bg_shed: dict[float, float] = field(default_factory=dict)  # refused after queueing
    other_cores: float = 0.0  # CPU used by other programs during the window, in cores

    voice_settled: anyio.Event = field(default_factory=anyio.Event)  # every turn arrived is done

    def voice(self, due: float) -> None:
        self.voice_done[due] = time.monotonic()
        self.check_settled()

    def voice_failure(self, due: float, error: BaseException) -> None:
        self.voice_failed[due] = f"{type(error).__name__}: {error}"
        self.check_settled()

    def check_settled(self) -> None:
        if len(self.voice_done) + len(self.voice_failed) == len(self.voice_arrived):
            self.voice_settled.set()

    def background(self, due: float, started: float, ended: float) -> None:
        self.bg_started[due] = started
        self.bg_ended.append(ended)


class System(Protocol):
    """One way of running the workload."""

    name: str

    def running(self, rec: Recorder) -> AbstractAsyncContextManager[None]: ...

    def voice(self, due: float) -> None: ...

    def offer(self, due: float) -> bool: ...  # False: refused at once

    def extra(self) -> dict[str, Any]: ...


# -- running a scenario ------------------------------------------------------------------------


async def drive(
    period_s: float, first_s: float, until_s: float, fire: Callable[[float], None]
) -> None:
    """Call ``fire(due)`` for due = first, first + period, ... before ``until``. Drift-free: a
    late wake-up fires every slot that is due, each with its own due time."""
    i = 0
    while (due := first_s + i * period_s) < until_s:
        delay_s = due - time.monotonic()
        if delay_s > 0:
            await anyio.sleep(delay_s)
        fire(due)
        i += 1


async def scenario(system: System, work: Work, warmup_s: float, window_s: float) -> Recorder:
    """Warm up, run the measured window, then wait up to a voice deadline for turns in flight."""
    rec = Recorder(work)

    def voice(due: float) -> None:
        rec.voice_arrived.append(due)
        system.voice(due)

    def offer(due: float) -> None:
        if system.offer(due):
            rec.bg_admitted.append(due)
        else:
            rec.bg_refused.append(due)

    async with system.running(rec):
        start_s = time.monotonic() + 0.05
        rec.window = (start_s + warmup_s, start_s + warmup_s + window_s)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_measure_others, rec)
            tg.start_soon(drive, VOICE_PERIOD_S, start_s, rec.window[1], voice)
            if work.overload > 0:
                tg.start_soon(drive, work.offer_period_s, start_s, rec.window[1], offer)
        rec.voice_settled = anyio.Event()
        rec.check_settled()
        with anyio.move_on_after(rec.window[1] + VOICE_DEADLINE_S - time.monotonic()):
            await rec.voice_settled.wait()
    return rec


async def _measure_others(rec: Recorder) -> None:
    """CPU used by other programs over the window: the machine's less this process tree's."""
    await anyio.sleep(rec.window[0] - time.monotonic())
    busy_s, own_s = await anyio.to_thread.run_sync(_cpu_s_used)
    await anyio.sleep(rec.window[1] - time.monotonic())
    busy_end_s, own_end_s = await anyio.to_thread.run_sync(_cpu_s_used)
    window_s = rec.window[1] - rec.window[0]
    rec.other_cores = max(0.0, (busy_end_s - busy_s) - (own_end_s - own_s)) / window_s


def _cpu_s_used() -> tuple[float, float]:
    """CPU seconds so far: the whole machine's busy time, and this process's with its children
    (live ones, and reaped ones through ``children_user``/``children_system``)."""
    times = psutil.cpu_times()
    idle_s = times.idle + getattr(times, "iowait", 0.0)
    guest_s = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    steal_s = getattr(times, "steal", 0.0)  # the hypervisor's, not a program's here
    busy_s = sum(times) - idle_s - guest_s - steal_s
    me = psutil.Process()
    own = me.cpu_times()
    own_s = own.user + own.system + own.children_user + own.children_system
    for child in me.children(recursive=True):
        try:
            used = child.cpu_times()
        except psutil.Error:  # gone meanwhile: counted in children_* once reaped
            continue
        own_s += used.user + used.system
    return busy_s, own_s
