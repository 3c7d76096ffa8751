"""The process pool, with real worker processes: results and errors, refusals at submit time,
niceness, FIFO, pause/resume, dead and killed workers, cancellation, shutdown without orphans.

Events are ordered by real conditions (a file a spinning worker waits for, the pool's busy
count, a process state read with psutil), never by sleeping; polling is bounded by fail_after.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import pytest_asyncio

from actors.scheduler import _worker
from actors.scheduler.pool import PoolStatistics, ProcessPool
from runtime.clock import settle
from runtime.exceptions import WorkerDied

from . import procfuncs

pytestmark = pytest.mark.asyncio(loop_scope="module")

NICENESS = 5


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared() -> AsyncIterator[ProcessPool]:
    """Two workers at niceness 5, for tests that neither kill workers nor leave them busy."""
    pool = ProcessPool(2, niceness=NICENESS, name="shared")
    await pool.start()
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def solo() -> AsyncIterator[ProcessPool]:
    """A pool of one worker of the test's own."""
    pool = ProcessPool(1, name="solo", shutdown_timeout_s=0.5)
    await pool.start()
    yield pool
    await pool.aclose()


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
    """Poll a real OS condition (process state, CPU time) until it holds."""
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110  # no event tells when a process changes state
            await anyio.sleep(0.005)


def status(pid: int) -> str:
    return str(psutil.Process(pid).status())


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def call(pool: ProcessPool, fn: Callable[..., Any], *args: Any) -> Any:
    return pool.prepare(fn, args, {})


# -- results and errors ------------------------------------------------------------------------


async def test_run_returns_the_result_computed_in_a_worker(shared: ProcessPool) -> None:
    """run returns what the function returned, computed in one of the pool's processes."""
    assert await shared.run(call(shared, procfuncs.square, 12)) == 144
    assert await shared.run(call(shared, procfuncs.whoami)) in shared.pids()
    assert os.getpid() not in shared.pids()


async def test_large_payloads_round_trip(shared: ProcessPool) -> None:
    """Arguments and results larger than a socket buffer travel whole, both ways."""
    data = os.urandom(3_000_000)
    assert await shared.run(call(shared, procfuncs.echo, data)) == data


async def test_exception_keeps_its_type_and_carries_the_remote_traceback(
    shared: ProcessPool,
) -> None:
    """An exception raised in the child is re-raised with its type, message and traceback."""
    with pytest.raises(ValueError, match="bad input 3") as caught:
        await shared.run(call(shared, procfuncs.fail_with, "bad input 3"))
    notes = "\n".join(caught.value.__notes__)
    assert "remote traceback" in notes
    assert "fail_with" in notes


async def test_unrebuildable_exception_becomes_runtime_error(shared: ProcessPool) -> None:
    """An exception that cannot be rebuilt here arrives as a RuntimeError with the traceback."""
    with pytest.raises(RuntimeError, match="cannot be sent back") as caught:
        await shared.run(call(shared, procfuncs.raise_unrebuildable))
    assert "NeedsTwoArgs: left+right" in str(caught.value)


async def test_unsendable_result_raises_type_error(shared: ProcessPool) -> None:
    """A result that cannot be sent back fails the call with a TypeError that says so."""
    with pytest.raises(TypeError, match=r"result of return_lock \(a lock\) cannot be sent back"):
        await shared.run(call(shared, procfuncs.return_lock))


async def test_call_that_cannot_be_loaded_in_the_worker_fails(shared: ProcessPool) -> None:
    """An argument whose loading raises in the worker fails the call with that error."""
    with pytest.raises(ValueError, match="exploded while loading") as caught:
        await shared.run(call(shared, procfuncs.identity, procfuncs.ExplodesOnLoad()))
    assert any("while loading the call" in note for note in caught.value.__notes__)


async def test_result_that_cannot_be_loaded_here_raises_runtime_error(shared: ProcessPool) -> None:
    """A result that the parent cannot load fails the call with a RuntimeError naming fn."""
    with pytest.raises(
        RuntimeError, match=r"result of .*make_unloadable from worker \d+ cannot be loaded"
    ):
        await shared.run(call(shared, procfuncs.make_unloadable))


# -- refusals at submit time -------------------------------------------------------------------


async def test_prepare_refuses_a_lambda() -> None:
    """A lambda is refused at prepare with a TypeError naming it and saying what to do."""
    with pytest.raises(TypeError, match=r"<lambda> cannot be sent .* module level"):
        ProcessPool(1).prepare(lambda: 1, (), {})


async def test_prepare_refuses_a_closure() -> None:
    """A local function is refused at prepare with a TypeError naming it."""
    offset = 3

    def add_offset(x: int) -> int:
        return x + offset

    with pytest.raises(TypeError, match=r"add_offset cannot be sent to a worker process"):
        ProcessPool(1).prepare(add_offset, (1,), {})


@pytest.mark.parametrize("kind", ["lock", "open-file", "generator"])
async def test_prepare_refuses_unsendable_arguments(kind: str) -> None:
    """Arguments that cannot be pickled are refused at prepare, naming the function."""
    with contextlib.ExitStack() as stack:
        makers: dict[str, Callable[[], object]] = {
            "lock": threading.Lock,
            "open-file": lambda: stack.enter_context(open(os.devnull)),
            "generator": lambda: (x for x in range(3)),
        }
        argument = makers[kind]()
        with pytest.raises(TypeError, match=r"arguments of .*identity cannot be sent"):
            ProcessPool(1).prepare(procfuncs.identity, (), {"value": argument})


async def test_prepare_refuses_a_coroutine_function() -> None:
    """A coroutine function is refused at prepare: it belongs on the loop."""

    async def fetch() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine function"):
        ProcessPool(1).prepare(fetch, (), {})


async def test_prepare_refuses_a_non_callable() -> None:
    """Something that is not callable is refused at prepare."""
    with pytest.raises(TypeError, match="fn must be callable"):
        ProcessPool(1).prepare(42, (), {})  # type: ignore[arg-type]


# -- configuration and lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "size must be at least 1"),
        ({"size": 1, "niceness": -1}, "niceness must be within 0..19"),
        ({"size": 1, "niceness": 20}, "niceness must be within 0..19"),
        ({"size": 1, "mp_context": "teleport"}, "mp_context must be one of"),
        ({"size": 1, "shutdown_timeout_s": -1}, "shutdown_timeout_s must be >= 0"),
    ],
)
async def test_bad_settings_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    """Each bad setting raises a ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        ProcessPool(**kwargs)


async def test_run_before_start_raises() -> None:
    """run on a pool that was never started raises RuntimeError saying to start it."""
    pool = ProcessPool(1)
    with pytest.raises(RuntimeError, match=r"not started; await start\(\) first"):
        await pool.run(call(pool, procfuncs.square, 2))


async def test_start_twice_raises(solo: ProcessPool) -> None:
    """A second start raises RuntimeError and keeps the running workers."""
    pids = solo.pids()
    with pytest.raises(RuntimeError, match="can start only once"):
        await solo.start()
    assert solo.pids() == pids


async def test_workers_run_at_the_requested_niceness(shared: ProcessPool) -> None:
    """Each worker lowered its priority by niceness; the parent kept its own."""
    expected = min(19, os.nice(0) + NICENESS)
    assert [psutil.Process(pid).nice() for pid in shared.pids()] == [expected] * 2


async def test_worker_that_dies_at_start_fails_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker dying before it is ready fails start with WorkerDied; nothing is left behind."""
    monkeypatch.setattr(_worker, "serve", procfuncs.die_at_start)
    before = children()
    pool = ProcessPool(2)
    with pytest.raises(WorkerDied, match=r"died \(exit code 3\) while starting"):
        await pool.start()
    assert children() <= before
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(call(pool, procfuncs.square, 2))


async def test_aclose_leaves_no_child_processes() -> None:
    """After aclose, none of the workers remains, not even as a zombie."""
    before = children()
    pool = ProcessPool(2)
    await pool.start()
    pids = set(pool.pids())
    assert pids <= children()
    await pool.run(call(pool, procfuncs.square, 3))
    await pool.aclose()
    assert children() <= before
    assert not pids & children()
    assert pool.pids() == []


async def test_a_pool_dropped_without_aclose_kills_its_workers() -> None:
    """Last resort: a pool garbage-collected without aclose kills and reaps its workers."""
    before = children()
    pool = ProcessPool(1)
    await pool.start()
    pids = set(pool.pids())
    del pool
    gc.collect()
    assert not pids & children()
    assert children() <= before


async def test_aclose_is_idempotent_and_run_after_it_raises(solo: ProcessPool) -> None:
    """aclose twice is fine; a run after it raises RuntimeError saying the pool is closed."""
    await solo.aclose()
    await solo.aclose()
    with pytest.raises(RuntimeError, match="'solo' is closed"):
        await solo.run(call(solo, procfuncs.square, 2))


async def test_aclose_lets_a_running_call_finish(solo: ProcessPool, tmp_path: Path) -> None:
    """aclose waits for a running call within its timeout: the call returns its result."""
    gate = tmp_path / "go"
    results: list[int] = []

    async def runner() -> None:
        results.append(await solo.run(call(solo, procfuncs.spin_until, str(gate), 21)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await wait_until(lambda: solo.busy == 1)
        tg.start_soon(solo.aclose)
        await settle()
        gate.touch()
    assert results == [42]
    assert solo.pids() == []


async def test_aclose_kills_a_call_past_the_timeout(tmp_path: Path) -> None:
    """A call still running (even paused) at the shutdown timeout is killed: WorkerDied."""
    before = children()
    pool = ProcessPool(1, shutdown_timeout_s=0.05)
    await pool.start()
    errors: list[BaseException] = []

    async def runner() -> None:
        try:
            await pool.run(
                call(pool, procfuncs.spin_until, str(tmp_path / "never"), 1), preemptible=True
            )
        except WorkerDied as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await wait_until(lambda: pool.busy == 1)
        assert pool.pause_preemptible() == 1
        await pool.aclose()
    assert [type(e) for e in errors] == [WorkerDied]
    assert "signal 9" in str(errors[0])
    assert children() <= before


async def test_waiters_fail_when_the_pool_closes(solo: ProcessPool, tmp_path: Path) -> None:
    """A call waiting for a worker when the pool closes raises RuntimeError (closed)."""
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await solo.run(call(solo, procfuncs.square, 2))
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(solo.run, call(solo, procfuncs.spin_until, str(tmp_path / "go"), 1))
        await wait_until(lambda: solo.busy == 1)
        tg.start_soon(waiter)
        await settle()
        tg.start_soon(solo.aclose)
        await settle()
        (tmp_path / "go").touch()
    assert [str(e) for e in errors] == ["process pool 'solo' is closed; start a new pool"]


# -- order -------------------------------------------------------------------------------------


async def test_calls_wait_for_a_free_worker_in_fifo_order(
    solo: ProcessPool, tmp_path: Path
) -> None:
    """With every worker busy, queued calls run in the order they were submitted."""
    gate = tmp_path / "go"
    order: list[int] = []

    async def submit(i: int) -> None:
        order.append(await solo.run(call(solo, procfuncs.square, i)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(solo.run, call(solo, procfuncs.spin_until, str(gate), 0))
        await wait_until(lambda: solo.busy == 1)
        for i in range(1, 5):
            tg.start_soon(submit, i)
            await settle()  # submit i waits in the queue before i + 1 arrives
        assert order == []
        gate.touch()
    assert order == [1, 4, 9, 16]


async def test_cancelled_waiter_leaves_the_queue(solo: ProcessPool, tmp_path: Path) -> None:
    """A call cancelled while it waits for a worker gives up its turn; the next one runs."""
    gate = tmp_path / "go"
    done: list[int] = []

    async def submit(i: int, scope: anyio.CancelScope) -> None:
        with scope:
            done.append(await solo.run(call(solo, procfuncs.square, i)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(solo.run, call(solo, procfuncs.spin_until, str(gate), 0))
        await wait_until(lambda: solo.busy == 1)
        first, second = anyio.CancelScope(), anyio.CancelScope()
        tg.start_soon(submit, 2, first)
        tg.start_soon(submit, 3, second)
        await settle()
        first.cancel()
        await settle()
        gate.touch()
    assert done == [9]
    assert solo.idle == 1


# -- pause and resume --------------------------------------------------------------------------


async def test_pause_stops_a_preemptible_worker_until_resumed(
    shared: ProcessPool, tmp_path: Path
) -> None:
    """pause_preemptible stops a spinning preemptible worker (no CPU while stopped); resume
    lets it finish with the right result."""
    spin_gate, witness_gate = tmp_path / "spin", tmp_path / "witness"
    results: dict[str, int] = {}

    async def runner(key: str, gate: Path, value: int, preemptible: bool) -> None:
        prepared = call(shared, procfuncs.spin_until, str(gate), value)
        results[key] = await shared.run(prepared, preemptible=preemptible)

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner, "spin", spin_gate, 5, True)
        await wait_until(lambda: shared.busy == 1)
        assert shared.pause_preemptible() == 1
        await wait_until(lambda: psutil.STATUS_STOPPED in {status(p) for p in shared.pids()})
        [spinner] = [p for p in shared.pids() if status(p) == psutil.STATUS_STOPPED]
        assert shared.paused == 1
        stopped_at_s = cpu_s(spinner)
        # The other worker burns CPU meanwhile: the real clock the paused one must not follow.
        tg.start_soon(runner, "witness", witness_gate, 1, False)
        await wait_until(lambda: shared.busy == 2)
        witness = next(p for p in shared.pids() if p != spinner)
        witness_start_s = cpu_s(witness)
        await wait_until(lambda: cpu_s(witness) >= witness_start_s + 0.1)
        assert cpu_s(spinner) == stopped_at_s
        witness_gate.touch()
        spin_gate.touch()
        assert shared.resume_preemptible() == 1
        assert shared.paused == 0
    assert results == {"spin": 10, "witness": 2}


async def test_pause_leaves_non_preemptible_calls_running(
    shared: ProcessPool, tmp_path: Path
) -> None:
    """pause_preemptible does not stop a worker running a non-preemptible call."""
    gate = tmp_path / "go"
    async with anyio.create_task_group() as tg:
        tg.start_soon(shared.run, call(shared, procfuncs.spin_until, str(gate), 1))
        await wait_until(lambda: shared.busy == 1)
        assert shared.pause_preemptible() == 0
        assert shared.paused == 0
        assert psutil.STATUS_STOPPED not in {status(p) for p in shared.pids()}
        gate.touch()
    assert shared.resume_preemptible() == 0


async def test_worker_paused_after_sending_its_reply_is_resumed(
    solo: ProcessPool, tmp_path: Path
) -> None:
    """A worker stopped just after it sent its reply is resumed when its call ends."""
    gate, done = tmp_path / "go", tmp_path / "done"
    [pid] = solo.pids()
    results: list[int] = []

    async def runner() -> None:
        prepared = call(solo, procfuncs.spin_then_touch, str(gate), str(done), 7)
        results.append(await solo.run(prepared, preemptible=True))

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await wait_until(lambda: solo.busy == 1)
        gate.touch()
        # Hold the loop (no await) until the reply is sent: the worker made the file and went
        # back to waiting for a call. Only then pause it, before the pool reads the reply.
        give_up = time.monotonic() + 10
        while not (done.exists() and status(pid) == psutil.STATUS_SLEEPING):
            assert time.monotonic() < give_up, "the worker never sent its reply"
        assert solo.pause_preemptible() == 1
    assert results == [7]
    assert solo.paused == 0
    assert status(pid) != psutil.STATUS_STOPPED
    with anyio.fail_after(10):
        assert await solo.run(call(solo, procfuncs.whoami)) == pid


# -- dead and killed workers -------------------------------------------------------------------


async def test_killed_worker_fails_its_call_and_is_replaced(
    solo: ProcessPool, tmp_path: Path
) -> None:
    """A worker killed mid-call fails that call with WorkerDied; a new worker serves the next."""
    [old] = solo.pids()
    errors: list[WorkerDied] = []

    async def runner() -> None:
        with pytest.raises(WorkerDied) as caught:
            await solo.run(call(solo, procfuncs.spin_until, str(tmp_path / "never"), 1))
        errors.append(caught.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await wait_until(lambda: solo.busy == 1)
        os.kill(old, signal.SIGKILL)
    assert str(errors[0]) == f"worker {old} died (signal 9) while running " + (
        "tests.actors.procfuncs.spin_until"
    )
    assert errors[0].exitcode == -signal.SIGKILL
    assert await solo.run(call(solo, procfuncs.whoami)) != old
    assert old not in children()


async def test_worker_exiting_mid_call_fails_it_with_worker_died(solo: ProcessPool) -> None:
    """A call that ends its worker (os._exit) fails with WorkerDied; the next call succeeds."""
    [old] = solo.pids()
    with pytest.raises(WorkerDied, match=rf"worker {old} died \(exit code 7\) while running"):
        await solo.run(call(solo, procfuncs.exit_now, 7))
    new = await solo.run(call(solo, procfuncs.whoami))
    assert new != old
    assert solo.pids() == [new]


async def test_replacement_killed_before_it_is_ready_is_replaced_too(solo: ProcessPool) -> None:
    """A replacement worker that dies before its first call fails that call; the next works."""
    with pytest.raises(WorkerDied):
        await solo.run(call(solo, procfuncs.exit_now, 7))
    [replacement] = solo.pids()
    os.kill(replacement, signal.SIGKILL)
    with pytest.raises(WorkerDied, match=rf"worker {replacement} died \(signal 9\)"):
        await solo.run(call(solo, procfuncs.square, 2))
    assert await solo.run(call(solo, procfuncs.square, 3)) == 9


async def test_cancelled_call_kills_its_worker_and_the_pool_still_serves(
    solo: ProcessPool, tmp_path: Path
) -> None:
    """Cancelling a running call kills its worker, the cancellation propagates, a new worker
    serves the next call."""
    [old] = solo.pids()
    with anyio.move_on_after(60) as scope:  # cancelled below, long before 60 s

        async def cancel_when_busy() -> None:
            await wait_until(lambda: solo.busy == 1)
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_busy)
            await solo.run(call(solo, procfuncs.spin_until, str(tmp_path / "never"), 1))
    assert scope.cancelled_caught
    assert old not in children()
    assert await solo.run(call(solo, procfuncs.square, 4)) == 16
    assert solo.statistics().replaced == 1
    assert solo.statistics().died == 0


async def test_cancelling_a_paused_call_still_kills_its_worker(
    solo: ProcessPool, tmp_path: Path
) -> None:
    """A paused (stopped) worker whose call is cancelled is killed and replaced."""
    [old] = solo.pids()
    async with anyio.create_task_group() as tg:
        prepared = call(solo, procfuncs.spin_until, str(tmp_path / "never"), 1)
        tg.start_soon(lambda: solo.run(prepared, preemptible=True))
        await wait_until(lambda: solo.busy == 1)
        solo.pause_preemptible()
        await wait_until(lambda: status(old) == psutil.STATUS_STOPPED)
        tg.cancel_scope.cancel()
    assert old not in children()
    assert solo.paused == 0
    assert await solo.run(call(solo, procfuncs.whoami)) != old


async def test_workers_ignore_sigint(solo: ProcessPool, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) does not kill a worker: the parent decides when the pool stops."""
    gate = tmp_path / "go"
    [pid] = solo.pids()
    async with anyio.create_task_group() as tg:
        tg.start_soon(solo.run, call(solo, procfuncs.spin_until, str(gate), 1))
        await wait_until(lambda: solo.busy == 1)
        os.kill(pid, signal.SIGINT)
        gate.touch()
    assert await solo.run(call(solo, procfuncs.whoami)) == pid


# -- statistics --------------------------------------------------------------------------------


async def test_statistics_count_calls_and_deaths(solo: ProcessPool) -> None:
    """statistics counts completed and failed calls, deaths and replacements."""
    await solo.run(call(solo, procfuncs.square, 2))
    await solo.run(call(solo, operator.add, 1, 2))
    with pytest.raises(ValueError):
        await solo.run(call(solo, procfuncs.fail_with, "no"))
    with pytest.raises(WorkerDied):
        await solo.run(call(solo, procfuncs.exit_now, 1))
    assert solo.statistics() == PoolStatistics(
        size=1, busy=0, idle=1, paused=0, completed=2, failed=2, died=1, replaced=1
    )
