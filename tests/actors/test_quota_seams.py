"""The scheduler's and the pool's seams for quotas: holding and releasing admitted tasks,
cancelling with an error, finish hooks after a late refusal, watched process calls (limits in
the worker, usage back, a hold on the worker that pausing for urgent work cannot undo)."""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import pytest_asyncio

from actors.scheduler.pool import ProcessPool
from actors.scheduler.watch import ProcessWatch
from runtime.clock import FakeClock
from runtime.exceptions import WorkerDied

from . import test_quota_procfuncs as procfuncs
from .test_quota_kit import MIB, Gates, enforced

# -- the scheduler's seams (fake clock) --------------------------------------------------------


async def test_a_task_held_at_admission_starts_only_when_released(clock: FakeClock) -> None:
    """An admission hook holds a task; it runs once released, as any queued task would."""
    held: list[Any] = []

    def hold_all(task: Any) -> None:
        h.scheduler.hold(task)
        held.append(task)

    async with enforced(clock) as h:
        h.scheduler.hooks.admission.insert(0, hold_all)
        handle = h.scheduler.spawn(abs, -4)
        await clock.advance(1.0)
        assert not handle.done() and held[0].state == "held"
        assert h.scheduler.release(held[0])
        assert await handle.result() == 4
        assert not h.scheduler.release(held[0])  # not held any more


async def test_a_held_task_released_with_an_error_ends_with_it(clock: FakeClock) -> None:
    """release(task, error) ends a held task with that error, counted as refused."""
    held: list[Any] = []
    async with enforced(clock) as h:
        h.scheduler.hooks.admission.insert(0, lambda t: (h.scheduler.hold(t), held.append(t)))
        handle = h.scheduler.spawn(abs, -4, task_class="command")
        h.scheduler.release(held[0], LookupError("no such city"))
        with pytest.raises(LookupError, match="no such city"):
            await handle.result()
        assert h.scheduler.statistics().classes["command"].refused == 1


async def test_holding_a_task_that_is_not_being_admitted_raises(clock: FakeClock) -> None:
    """hold() outside admission (a running task) is a RuntimeError."""
    running: list[Any] = []
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.scheduler.hooks.start.append(running.append)
        h.scheduler.spawn(gates.hold("x"))
        await clock.advance(0)
        with pytest.raises(RuntimeError, match="only a task being admitted can be held"):
            h.scheduler.hold(running[0])
        gates.open("x")


async def test_cancel_with_an_error_ends_queued_and_running_tasks_with_it(
    clock: FakeClock,
) -> None:
    """cancel(task, error) ends queued and running tasks with that error (default: cancelled)."""
    seen: list[Any] = []
    gates = Gates(clock)
    async with enforced(clock, scheduler=None) as h:
        h.scheduler.hooks.admission.append(seen.append)
        busy = [h.scheduler.spawn(gates.hold(f"b{i}"), task_class="command") for i in range(4)]
        queued = h.scheduler.spawn(abs, 1, task_class="command")  # the class holds 4 at once
        await clock.advance(0)
        h.scheduler.cancel(seen[0], PermissionError("over quota"))
        h.scheduler.cancel(seen[4], PermissionError("over quota too"))
        h.scheduler.cancel(seen[1])
        with pytest.raises(PermissionError, match="over quota"):
            await busy[0].result()
        with pytest.raises(PermissionError, match="over quota too"):
            await queued.result()
        with pytest.raises(concurrent.futures.CancelledError):
            await busy[1].result()
        for i in (2, 3):
            gates.open(f"b{i}")


async def test_a_refusal_after_a_hook_let_a_task_in_reaches_the_finish_hooks(
    clock: FakeClock,
) -> None:
    """A refusal after some admission hook let a task in reaches the finish hooks."""
    finished: list[tuple[int, str]] = []

    def refuse_odd(task: Any) -> None:
        if task.kwargs.get("odd"):
            raise PermissionError("odd")

    async with enforced(clock) as h:
        hooks = h.scheduler.hooks
        hooks.admission.append(refuse_odd)
        hooks.finish.append(lambda t: finished.append((t.id, type(t.error).__name__)))
        with pytest.raises(PermissionError):
            h.scheduler.spawn(dict, odd=True)
        hooks.admission.insert(0, refuse_odd)
        with pytest.raises(PermissionError):
            h.scheduler.spawn(dict, odd=True)
    assert finished == [(1, "PermissionError")]


async def test_only_a_process_task_that_has_not_started_can_be_watched(clock: FakeClock) -> None:
    """watch() refuses a loop task, and a process task once it has started."""
    tasks: list[Any] = []
    async with enforced(clock) as h:
        h.scheduler.hooks.start.append(tasks.append)
        await h.scheduler.submit(abs, 1)
        with pytest.raises(ValueError, match="only a process task that has not started"):
            h.scheduler.watch(tasks[0])
        h.scheduler.spawn(abs, -1, task_class="plugin_cpu")
        await clock.advance(0)
        with pytest.raises(ValueError, match="only a process task"):
            h.scheduler.watch(tasks[1], memory_limit_bytes=MIB)
        h.pool.finish(h.pool.running()[0])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_a_watch_refuses_limits_that_are_not_positive_ints(bad: Any) -> None:
    """Each limit must be a positive int or None."""
    with pytest.raises(ValueError, match="memory_limit_bytes must be a positive int"):
        ProcessWatch(memory_limit_bytes=bad)
    with pytest.raises(ValueError, match="cpu_limit_s must be a positive int"):
        ProcessWatch(cpu_limit_s=bad)


def test_an_idle_watch_pauses_nothing() -> None:
    """Before and after its call, pause and resume do nothing and say so."""
    watch = ProcessWatch()
    assert not watch.running and not watch.pause() and not watch.resume()
    assert repr(watch) == "<ProcessWatch pid=None idle>"


# -- the pool's seams (real workers) -----------------------------------------------------------

on_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool() -> AsyncIterator[ProcessPool]:
    """One worker shared by the tests that leave it alive and idle."""
    shared = ProcessPool(1, name="quota-seams", shutdown_timeout_s=5.0)
    await shared.start()
    yield shared
    await shared.aclose()


async def run_watched(
    pool: ProcessPool, watch: ProcessWatch, fn: Callable[..., Any], *args: Any
) -> Any:
    return await pool.run(pool.prepare(fn, args, {}), watch=watch)


async def wait_status(pid: int, wanted: str) -> None:
    with anyio.fail_after(10):
        while psutil.Process(pid).status() != wanted:  # noqa: ASYNC110  # a process state
            await anyio.sleep(0.005)


@on_module_loop
async def test_a_watched_call_reports_its_worker_and_usage(pool: ProcessPool) -> None:
    """The pool binds the watch while the call runs, then fills in memory and CPU used."""
    watch = ProcessWatch(memory_limit_bytes=256 * MIB, cpu_limit_s=30)
    assert await run_watched(pool, watch, procfuncs.allocate, 32) == 32 * MIB
    assert watch.pid == pool.pids()[0] and not watch.running
    assert watch.start_rss_bytes is not None and watch.start_rss_bytes > MIB
    assert watch.peak_rss_bytes is not None
    assert watch.peak_rss_bytes >= watch.start_rss_bytes + 30 * MIB
    assert watch.cpu_s is not None and watch.cpu_s >= 0


@on_module_loop
async def test_the_memory_limit_holds_during_the_call_only(pool: ProcessPool) -> None:
    """Past the address-space limit the call gets MemoryError; the next call is free again."""
    worker = pool.pids()[0]
    with pytest.raises(MemoryError):
        await run_watched(pool, ProcessWatch(memory_limit_bytes=64 * MIB), procfuncs.allocate, 256)
    assert await pool.run(pool.prepare(procfuncs.allocate, (256,), {})) == 256 * MIB
    assert pool.pids() == [worker]


@on_module_loop
async def test_a_watch_holds_its_worker_against_a_resume_for_urgent_work(
    pool: ProcessPool, tmp_path: Path
) -> None:
    """A worker stopped by its watch stays stopped through resume_preemptible until resumed."""
    watch = ProcessWatch()
    gate = tmp_path / "gate"
    call = pool.prepare(procfuncs.spin_until, (str(gate),), {})
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: pool.run(call, preemptible=True, watch=watch))
        with anyio.fail_after(10):
            while not watch.running:  # noqa: ASYNC110  # bound as the worker takes the call
                await anyio.sleep(0.005)
        assert watch.pid is not None
        assert watch.pause() and not watch.pause()
        await wait_status(watch.pid, psutil.STATUS_STOPPED)
        assert pool.pause_preemptible() == 1 and pool.resume_preemptible() == 1
        assert psutil.Process(watch.pid).status() == psutil.STATUS_STOPPED
        gate.touch()
        assert watch.resume() and not watch.resume()
    assert not watch.running and pool.paused == 0


@on_module_loop
async def test_a_call_over_its_cpu_limit_loses_its_worker(tmp_path: Path) -> None:
    """Past its RLIMIT_CPU backstop the kernel kills the worker; the pool replaces it."""
    solo = ProcessPool(1, name="quota-cpu-limit")
    await solo.start()
    try:
        worker = solo.pids()[0]
        with pytest.raises(WorkerDied) as info:
            await run_watched(solo, ProcessWatch(cpu_limit_s=1), procfuncs.spin_for, 30.0)
        assert info.value.exitcode == -signal.SIGXCPU
        assert await solo.run(solo.prepare(procfuncs.square, (4,), {})) == 16
        assert solo.pids() != [worker]
    finally:
        await solo.aclose()


@on_module_loop
async def test_closing_the_pool_lets_a_held_call_finish(tmp_path: Path) -> None:
    """aclose continues a worker its watch stopped, so the call ends instead of being killed."""
    solo = ProcessPool(1, name="quota-close", shutdown_timeout_s=5.0)
    await solo.start()
    watch = ProcessWatch()
    gate = tmp_path / "gate"
    results: list[object] = []

    async def call() -> None:
        results.append(await run_watched(solo, watch, procfuncs.spin_until, str(gate)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(10):
            while not watch.running:  # noqa: ASYNC110  # bound as the worker takes the call
                await anyio.sleep(0.005)
        watch.pause()
        gate.touch()
        with anyio.fail_after(3):  # well within shutdown_timeout_s: not killed
            await solo.aclose()
    assert len(results) == 1 and isinstance(results[0], int)


@on_module_loop
async def test_a_call_peak_is_its_own_after_a_bigger_one(pool: ProcessPool) -> None:
    """A worker that once held 96 MiB still reports a later 32 MiB call's own peak."""
    first = ProcessWatch(memory_limit_bytes=512 * MIB, cpu_limit_s=30)
    assert await run_watched(pool, first, procfuncs.allocate, 96) == 96 * MIB
    second = ProcessWatch(memory_limit_bytes=512 * MIB, cpu_limit_s=30)
    assert await run_watched(pool, second, procfuncs.allocate, 32) == 32 * MIB
    assert second.start_rss_bytes is not None and second.peak_rss_bytes is not None
    assert second.peak_rss_bytes >= second.start_rss_bytes + 30 * MIB
    assert second.peak_rss_bytes < second.start_rss_bytes + 90 * MIB
