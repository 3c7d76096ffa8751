"""A supervised pool of worker processes for CPU-bound calls.

CPU-bound Python in a thread holds the GIL and stalls the event loop (and every voice task with
it), so the scheduler runs such work in worker processes. The pool:

* starts ``size`` workers (``spawn`` by default: fork in a multi-threaded process is unsafe),
  each at a lower OS priority when ``niceness > 0``;
* serializes a call when it is submitted (``prepare``), so what cannot be sent to a process is
  refused at once with a ``TypeError``, not later in a worker;
* runs calls in FIFO order on free workers (``run``), never blocking the loop: the parent's
  socket is non-blocking and waits go through ``anyio.wait_readable``;
* fails the call of a worker that dies with ``WorkerDied`` and starts a replacement; a cancelled
  call kills its worker (the only way to stop a running function) and replaces it;
* pauses (SIGSTOP) and resumes (SIGCONT) workers running preemptible calls while urgent work runs;
* runs a watched call (``ProcessWatch``) under resource limits in its worker, reports what it
  used, and lends the watch a hold on its worker while it runs (duty-cycle throttling; a
  worker held and paused stays stopped until both let go);
* leaves no orphans: ``aclose`` stops the workers and kills the ones past a timeout, and a
  last-resort finalizer kills what is left when the pool is garbage collected or at exit.

The child side lives in ``_worker``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import multiprocessing
import multiprocessing.util
import os
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, Literal, cast

import anyio
import msgspec

from runtime.exceptions import WorkerDied
from runtime.logging import get_logger

from . import _limits, _worker
from .watch import ProcessWatch

__all__ = ["PoolStatistics", "PreparedCall", "ProcessPool"]

_EXIT_GRACE_S = 1.0  # a worker whose socket closed exits within milliseconds; then we kill it
_State = Literal["new", "running", "closing", "closed"]
_Context = SpawnContext | ForkContext | ForkServerContext


class PreparedCall(msgspec.Struct, frozen=True):
    """A call serialized at submit time, ready to be sent to a worker (see ``prepare``)."""

    name: str  # the function's module and qualified name, for errors and logs
    payload: bytes


class PoolStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a pool.

    ``completed``: calls that returned a value. ``failed``: calls that raised (in the child, or
    because their worker died). ``died``: workers that died on their own or were killed from
    outside. ``replaced``: workers started in place of a dead or killed one.
    """

    size: int
    busy: int
    idle: int
    paused: int
    completed: int
    failed: int
    died: int
    replaced: int


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(self, process: BaseProcess, sock: socket.socket) -> None:
        assert process.pid is not None  # started
        self.process = process
        self.sock = sock
        self.pid: int = process.pid
        self.ready = False  # READY received
        self.exited = False  # its sentinel fired
        self.reaped = False  # joined: its pid may belong to another process now
        self.running: str | None = None  # the call it runs
        self.preemptible = False
        self.paused = False  # stopped by pause_preemptible
        self.held = False  # stopped through the watch of its call

    def hold(self) -> bool:
        """Stop the worker for the watch of its call; ``False`` if it was already held."""
        if self.held or self.reaped:
            return False
        self.held = True
        self.signal(signal.SIGSTOP)
        return True

    def unhold(self) -> bool:
        """Let go of a hold; the worker continues unless it is also paused."""
        if not self.held:
            return False
        self.held = False
        if not self.paused:
            self.signal(signal.SIGCONT)
        return True

    def signal(self, signum: signal.Signals) -> None:
        if self.reaped:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone: its sentinel says so
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.signal(signal.SIGCONT)  # hygiene: nothing of a stopped process should stay stopped
        self.paused = self.held = False

    async def wait_exit(self) -> None:
        if not self.exited:
            await anyio.wait_readable(self.process.sentinel)
            self.exited = True

    async def wait_io(self, writable: bool) -> None:
        """Wait until the socket is ready or the process exited (a grandchild forked by the
        call may hold the child's end open, so the socket alone may never say EOF)."""
        if self.exited:
            raise _worker.Gone
        wait_socket = anyio.wait_writable if writable else anyio.wait_readable

        async def first(wait: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
            await wait()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(first, lambda: wait_socket(self.sock), tg.cancel_scope)
            tg.start_soon(first, self.wait_exit, tg.cancel_scope)


class _Waiter:
    """A caller waiting for a free worker; ``worker`` stays None if the pool closed."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.worker: _Worker | None = None


def _kill_all(workers: list[_Worker]) -> None:
    """The last resort (garbage collection, interpreter exit): no worker outlives its pool."""
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.process.join(timeout=_EXIT_GRACE_S)
        worker.reaped = True
        worker.sock.close()
    workers.clear()


class ProcessPool:
    """A fixed number of worker processes that run prepared calls (see the module docstring).

    Raises ``ValueError`` for ``size < 1``, a ``niceness`` outside 0..19, an unknown
    ``mp_context`` or a negative ``shutdown_timeout_s``.
    """

    def __init__(
        self,
        size: int,
        *,
        niceness: int = 0,
        name: str = "pool",
        mp_context: str = "spawn",
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1; got {size}")
        if not 0 <= niceness <= 19:
            raise ValueError(
                f"niceness must be within 0..19 (0 keeps the priority); got {niceness}"
            )
        if shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0; got {shutdown_timeout_s}")
        methods = multiprocessing.get_all_start_methods()
        if mp_context not in methods:
            raise ValueError(f"mp_context must be one of {methods}; got {mp_context!r}")
        self._size = size
        self._niceness = niceness
        self._name = name
        self._context = cast(_Context, multiprocessing.get_context(mp_context))
        self._shutdown_timeout_s = shutdown_timeout_s
        self._state: _State = "new"
        self._workers: list[_Worker] = []  # never rebound: the finalizer holds it
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._closed: anyio.Event | None = None
        self._changed: anyio.Event | None = None  # set when a worker returns or goes while closing
        self._numbers = itertools.count(1)
        self._spawning = 0  # replacements being started
        self._completed = self._failed = self._died = self._replaced = 0
        self._log = get_logger("scheduler", pool=name)
        # A multiprocessing finalizer with a priority runs at exit *before* multiprocessing joins
        # its children (it would wait forever on a stopped or busy worker), and on GC.
        self._finalizer = multiprocessing.util.Finalize(
            self, _kill_all, args=(self._workers,), exitpriority=10
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and wait until each is ready.

        Raises ``RuntimeError`` when called twice, ``WorkerDied`` when a worker dies while
        starting (the pool is then closed).
        """
        if self._state != "new":
            raise RuntimeError(f"process pool {self._name!r} can start only once; make a new one")
        self._state = "running"
        self._closed = anyio.Event()
        try:
            for _ in range(self._size):  # the children boot in parallel while we start the next
                await self._start_worker()
            for worker in list(self._workers):
                await self._wait_ready_at_start(worker)
        except BaseException:
            self._idle.extend(self._workers)  # start() owned them: now aclose() does
            await self.aclose()
            raise
        self._idle.extend(self._workers)
        self._log.info("pool_started", size=self._size, pids=self.pids())

    async def aclose(self) -> None:
        """Stop the workers: idle ones at once, busy ones when their call ends; kill the ones
        still there after ``shutdown_timeout_s`` (their calls raise ``WorkerDied``). Idempotent;
        a concurrent call waits for the first one to finish."""
        if self._state == "new":
            self._state = "closed"
        if self._state == "closed":
            return
        assert self._closed is not None
        if self._state == "closing":
            await self._closed.wait()
            return
        self._state = "closing"
        with anyio.CancelScope(shield=True):
            for waiter in self._waiters:
                waiter.event.set()  # worker None: the waiter raises "closed"
            self._waiters.clear()
            for worker in self._workers:
                worker.unhold()
            self.resume_preemptible()  # a stopped worker can neither finish its call nor exit
            await self._stop_all(anyio.current_time() + self._shutdown_timeout_s)
        self._state = "closed"
        self._closed.set()
        self._finalizer.cancel()
        self._log.info("pool_closed")

    async def _stop_all(self, deadline: float) -> None:
        while self._workers or self._spawning:
            idle = list(self._idle)
            self._idle.clear()
            for worker in idle:
                self._request_stop(worker)
            for worker in idle:
                await self._bury(worker, grace_s=deadline - anyio.current_time())
            if not (self._workers or self._spawning):
                return
            wait_s = deadline - anyio.current_time()
            if wait_s <= 0:
                for worker in self._workers:
                    worker.kill()  # its caller sees the death and buries it
                wait_s = _EXIT_GRACE_S
            self._changed = anyio.Event()
            with anyio.move_on_after(wait_s):
                await self._changed.wait()

    def _request_stop(self, worker: _Worker) -> None:
        try:
            worker.sock.send(_worker.HEADER.pack(len(_worker.STOP)))
        except OSError:  # dead already, or a full socket (cannot happen when idle): kill it
            worker.kill()

    # -- submitting --------------------------------------------------------------------------

    def prepare(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PreparedCall:
        """Serialize a call now, at submit time.

        Raises ``TypeError`` naming the function and saying why when ``fn`` or its arguments
        cannot be sent to a worker process (lambdas, closures, open files, locks, ...) or when
        ``fn`` is a coroutine function (those run on the loop).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {fn!r}")
        name = _worker.describe(fn)
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{name} is a coroutine function: run it on the loop, not in a process")
        return PreparedCall(name=name, payload=_worker.encode_call(fn, args, kwargs))

    async def run(
        self, call: PreparedCall, *, preemptible: bool = False, watch: ProcessWatch | None = None
    ) -> Any:
        """Run a prepared call on the next free worker (FIFO) and return its result.

        Re-raises the exception raised in the child (its type kept when it can be rebuilt here,
        else a ``RuntimeError`` with the remote traceback). Raises ``WorkerDied`` when the
        worker dies meanwhile, ``RuntimeError`` when the pool is not running. If the caller is
        cancelled, the worker is killed and replaced. ``preemptible`` lets
        ``pause_preemptible`` stop the worker while it runs this call; ``watch`` runs it under
        the watch's limits and fills in what it used (see ``actors.scheduler.watch``).
        """
        worker = await self._acquire()
        worker.running = call.name
        worker.preemptible = preemptible
        try:
            if watch is None:
                reply = await self._exchange(worker, call.payload)
            else:
                reply = await self._exchange_watched(worker, call.payload, watch)
        except _worker.Gone:
            doing = f"running {call.name}" if worker.ready else "starting"
            raise await self._lost(worker, doing) from None
        except BaseException:  # cancelled: the function may still run; only a kill stops it
            with anyio.CancelScope(shield=True):
                await self._replace(worker, kill=True)
            raise
        self._release(worker)
        return self._outcome(reply, call, worker.pid)

    async def _exchange(self, worker: _Worker, payload: bytes) -> bytes:
        if not worker.ready:
            await self._wait_ready(worker)
        await _worker.send_frame(worker.sock, payload, worker.wait_io)
        return await _worker.receive_frame(worker.sock, worker.wait_io)

    async def _exchange_watched(
        self, worker: _Worker, payload: bytes, watch: ProcessWatch
    ) -> bytes:
        if not worker.ready:
            await self._wait_ready(worker)
        limits = _limits.Limits(watch.memory_limit_bytes, watch.cpu_limit_s)
        watch.bind(worker.pid, worker)
        try:
            await _worker.send_frame(worker.sock, _limits.encode_limits(limits), worker.wait_io)
            await _worker.send_frame(worker.sock, payload, worker.wait_io)
            started = await _worker.receive_frame(worker.sock, worker.wait_io)
            watch.start_rss_bytes = _limits.decode_started(started)
            usage = _limits.decode_usage(await _worker.receive_frame(worker.sock, worker.wait_io))
            watch.cpu_s, watch.peak_rss_bytes = usage
            return await _worker.receive_frame(worker.sock, worker.wait_io)
        finally:
            watch.unbind()

    def _outcome(self, reply: bytes, call: PreparedCall, pid: int) -> Any:
        try:
            result = _worker.decode_reply(reply, call.name, pid)
        except Exception:
            self._failed += 1
            raise
        self._completed += 1
        return result

    # -- pausing -----------------------------------------------------------------------------

    def pause_preemptible(self) -> int:
        """SIGSTOP every worker running a preemptible call; returns how many were paused now."""
        paused = 0
        for worker in self._workers:
            if worker.running is not None and worker.preemptible and not worker.paused:
                worker.signal(signal.SIGSTOP)
                worker.paused = True
                paused += 1
        return paused

    def resume_preemptible(self) -> int:
        """SIGCONT every paused worker (unless its watch holds it); returns how many."""
        resumed = 0
        for worker in self._workers:
            if worker.paused:
                if not worker.held:
                    worker.signal(signal.SIGCONT)
                worker.paused = False
                resumed += 1
        return resumed

    # -- introspection -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many workers the pool keeps."""
        return self._size

    @property
    def busy(self) -> int:
        """Workers running a call."""
        return sum(1 for worker in self._workers if worker.running is not None)

    @property
    def idle(self) -> int:
        """Workers free for the next call (a replacement may still be booting)."""
        return len(self._idle)

    @property
    def paused(self) -> int:
        """Workers stopped by ``pause_preemptible``."""
        return sum(1 for worker in self._workers if worker.paused)

    def pids(self) -> list[int]:
        """The process ids of the current workers."""
        return [worker.pid for worker in self._workers]

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's state and counters."""
        return PoolStatistics(
            size=self._size,
            busy=self.busy,
            idle=self.idle,
            paused=self.paused,
            completed=self._completed,
            failed=self._failed,
            died=self._died,
            replaced=self._replaced,
        )

    # -- workers -----------------------------------------------------------------------------

    async def _acquire(self) -> _Worker:
        if self._state != "running":
            raise self._not_running()
        if self._idle and not self._waiters:
            return self._idle.popleft()
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.worker is not None:  # handed a worker, then cancelled: pass it on
                self._release(waiter.worker)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if waiter.worker is None:
            raise self._not_running()
        return waiter.worker

    def _release(self, worker: _Worker) -> None:
        worker.running = None
        worker.preemptible = False
        if worker.paused or worker.held:  # stopped just after it sent its reply
            worker.signal(signal.SIGCONT)
            worker.paused = worker.held = False
        if self._state == "running" and self._waiters:
            waiter = self._waiters.popleft()
            waiter.worker = worker
            waiter.event.set()
            return
        self._idle.append(worker)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _not_running(self) -> RuntimeError:
        if self._state == "new":
            return RuntimeError(f"process pool {self._name!r} is not started; await start() first")
        return RuntimeError(f"process pool {self._name!r} is closed; start a new pool")

    async def _start_worker(self) -> _Worker:
        # Shielded: a cancellation must not lose a started process. Counted: aclose waits for it.
        self._spawning += 1
        try:
            with anyio.CancelScope(shield=True):
                worker = await anyio.to_thread.run_sync(self._spawn)
        finally:
            self._spawning -= 1
        self._workers.append(worker)
        return worker

    def _spawn(self) -> _Worker:
        """Start a worker process (blocking: runs in a thread)."""
        parent_sock, child_sock = socket.socketpair()
        try:
            process = self._context.Process(
                target=_worker.serve,
                args=(child_sock, self._niceness),
                name=f"{self._name}-worker-{next(self._numbers)}",
            )
            process.start()
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()  # the child has its copy; ours would hide the child's death (EOF)
        parent_sock.setblocking(False)
        return _Worker(process, parent_sock)

    async def _wait_ready_at_start(self, worker: _Worker) -> None:
        try:
            await self._wait_ready(worker)
        except _worker.Gone:
            self._died += 1
            exitcode = await self._bury(worker, grace_s=_EXIT_GRACE_S)
            raise WorkerDied(worker.pid, exitcode, "starting") from None

    async def _wait_ready(self, worker: _Worker) -> None:
        frame = await _worker.receive_frame(worker.sock, worker.wait_io)
        if frame != _worker.READY:
            raise RuntimeError(f"worker {worker.pid} sent {frame[:40]!r} instead of READY")
        worker.ready = True

    async def _lost(self, worker: _Worker, doing: str) -> WorkerDied:
        with anyio.CancelScope(shield=True):
            exitcode = await self._replace(worker, kill=False)
        self._died += 1
        if worker.running is not None:
            self._failed += 1
        error = WorkerDied(worker.pid, exitcode, doing)
        self._log.warning("worker_died", pid=worker.pid, exitcode=exitcode, doing=doing)
        return error

    async def _replace(self, worker: _Worker, *, kill: bool) -> int | None:
        """Bury a worker and, while the pool runs, start another in its place."""
        if kill:
            worker.kill()
        exitcode = await self._bury(worker, grace_s=_EXIT_GRACE_S)
        if self._state == "running":
            replacement = await self._start_worker()
            self._replaced += 1
            self._log.info("worker_replaced", old_pid=worker.pid, pid=replacement.pid)
            self._release(replacement)  # it may boot still (its first call waits for READY);
            # if aclose began meanwhile, _release hands it over to aclose
        else:
            self._notify()
        return exitcode

    async def _bury(self, worker: _Worker, *, grace_s: float) -> int | None:
        """Wait up to ``grace_s`` for the worker to exit, kill it past that, reap it."""
        with anyio.move_on_after(max(grace_s, 0.0)):
            await worker.wait_exit()
        if not worker.exited:
            worker.kill()
            await worker.wait_exit()
        worker.process.join()  # instant: it has exited
        worker.reaped = True
        exitcode = worker.process.exitcode
        worker.process.close()
        worker.sock.close()
        self._workers.remove(worker)
        return exitcode
