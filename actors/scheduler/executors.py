"""Where a started task runs: on the event loop, in a thread, or in a worker process.

Threads share the GIL, so CPU-bound Python in a thread stalls the loop and every voice task
with it: blocking I/O goes to threads (``anyio.to_thread`` under a ``CapacityLimiter``),
CPU-bound work to worker processes. There are two process pools: one for urgent classes (those
with a deadline) and one for background classes, whose workers run at a lower OS priority
(niceness 10) and may be paused while urgent work runs. A pool starts with the scheduler when
a class of its kind uses ``executor: process``; otherwise on its first task.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, Protocol

import anyio

from .task import Task

__all__ = ["BACKGROUND_NICENESS", "Executors", "Pool", "PoolFactory", "Tier", "is_async"]

BACKGROUND_NICENESS = 10
Tier = Literal["urgent", "background"]
TIERS: tuple[Tier, ...] = ("urgent", "background")


class Pool(Protocol):
    """What the scheduler needs of a process pool (``actors.scheduler.pool.ProcessPool``)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def prepare(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

    async def run(self, call: Any, *, preemptible: bool = False, watch: Any = None) -> Any: ...

    def pause_preemptible(self) -> int: ...

    def resume_preemptible(self) -> int: ...

    def statistics(self) -> Any: ...


class PoolFactory(Protocol):
    def __call__(self, size: int, *, niceness: int = 0, name: str = "pool") -> Pool: ...


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (a coroutine function or an async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # a callable object's async __call__
    )


class _Tiered:
    """One process pool and whether it has started (started at most once, even when raced)."""

    __slots__ = ("lock", "pool", "started")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.started = False
        self.lock = anyio.Lock()

    async def ensure_started(self) -> Pool:
        if not self.started:
            async with self.lock:
                if not self.started:
                    await self.pool.start()
                    self.started = True
        return self.pool


class Executors:
    """Runs started tasks on the loop, in threads and in the two process pools.

    ``start`` and ``aclose`` bracket its life (the scheduler's ``running``).
    """

    def __init__(
        self,
        *,
        thread_workers: int,
        process_workers: int,
        pool_factory: PoolFactory,
        name: str = "scheduler",
    ) -> None:
        self.thread_workers = thread_workers
        self.process_workers = process_workers
        self._pool_factory = pool_factory
        self._name = name
        self._limiter: anyio.CapacityLimiter | None = None
        self._pools: dict[Tier, _Tiered] = {}

    async def start(self, eager: set[Tier]) -> None:
        """Make the thread limiter and the pools; start the pools in ``eager`` now.

        Raises what a pool raises when it cannot start (``WorkerDied``); nothing is left running.
        """
        self._limiter = anyio.CapacityLimiter(self.thread_workers)
        if self.process_workers < 1:
            return
        for tier in TIERS:
            niceness = BACKGROUND_NICENESS if tier == "background" else 0
            pool = self._pool_factory(
                self.process_workers, niceness=niceness, name=f"{self._name}.{tier}"
            )
            self._pools[tier] = _Tiered(pool)
        try:
            for tier in TIERS:
                if tier in eager:
                    await self._pools[tier].ensure_started()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the pools (their running calls fail); shielded, so it completes when cancelled."""
        pools, self._pools = self._pools, {}
        with anyio.CancelScope(shield=True):
            for tiered in pools.values():
                await tiered.pool.aclose()

    def set_thread_workers(self, count: int) -> None:
        """Resize the thread limiter live (threads already running finish first)."""
        self.thread_workers = count
        if self._limiter is not None:
            self._limiter.total_tokens = count

    def prepare(
        self, tier: Tier, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Serialize a process call at submit time.

        Raises ``ValueError`` when there are no process workers, ``TypeError`` when ``fn`` or its
        arguments cannot be sent to a process.
        """
        tiered = self._pools.get(tier)
        if tiered is None:
            raise ValueError(
                "run_in='process' needs worker processes but scheduler.process_workers is "
                f"{self.process_workers}; set it >= 1 or use run_in='thread'"
            )
        return tiered.pool.prepare(fn, args, kwargs)

    async def run(self, task: Task, tier: Tier) -> Any:
        """Run ``task`` where ``task.run_in`` says and return its value (or raise its error).

        A cancelled thread is abandoned: it finishes in the background, its result discarded.
        A cancelled process call kills its worker. A watched process call (``task.watch``)
        runs under the watch's limits.
        """
        fn = task.fn
        assert fn is not None, "a started task still holds its function"
        if task.run_in == "loop":
            result = fn(*task.args, **task.kwargs)
            return await result if inspect.isawaitable(result) else result
        if task.run_in == "thread":
            call = functools.partial(fn, *task.args, **task.kwargs)
            return await anyio.to_thread.run_sync(
                call, limiter=self._limiter, abandon_on_cancel=True
            )
        pool = await self._pools[tier].ensure_started()
        if task.watch is None:
            return await pool.run(task.call, preemptible=tier == "background")
        return await pool.run(task.call, preemptible=tier == "background", watch=task.watch)

    def pause_background(self) -> int:
        """Pause the background pool's running calls (SIGSTOP); how many were paused."""
        tiered = self._pools.get("background")
        return tiered.pool.pause_preemptible() if tiered is not None and tiered.started else 0

    def resume_background(self) -> int:
        """Resume the paused background calls (SIGCONT); how many were resumed."""
        tiered = self._pools.get("background")
        return tiered.pool.resume_preemptible() if tiered is not None and tiered.started else 0

    def statistics(self) -> dict[str, Any]:
        """Each started pool's statistics, by tier."""
        return {tier: t.pool.statistics() for tier, t in self._pools.items() if t.started}
