"""``get_or_compute``'s machinery: a key computed once at a time, stale entries recomputed in
the background, and results that an invalidation made obsolete left uncached.

The background recomputations (stale-while-revalidate) run in a task group the cache's
supervisor holds (``tg``, set while the cache runs); without one, a stale value is served and
not recomputed. Every invalidation bumps ``epoch``: a computation that started before one may
have read what was invalidated, so its result goes to its callers but not into the cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anyio
import anyio.abc

from .flight import Flights
from .stats import NamespaceCounts

__all__ = ["Computations", "Compute", "Job"]

Compute = Callable[[], Any]
"""What ``get_or_compute`` calls on a miss: a function or coroutine function of no arguments."""


class Job(NamedTuple):
    """One key to compute and how to cache the result."""

    namespace: str
    counts: NamespaceCounts
    key: str
    compute: Compute
    ttl: float | None
    tags: tuple[str, ...]
    stale_s: float | None


Store = Callable[[Job, Any], Awaitable[None]]
"""Caches a job's result (the cache's ``set`` with the job's ttl, tags and stale window)."""


class Computations:
    """The computations under way, and the background ones."""

    def __init__(self, store: Store, log: Any) -> None:
        self._store = store
        self._log = log
        self.flights = Flights()
        self.tg: anyio.abc.TaskGroup | None = None
        self.epoch = 0
        self.revalidations = 0
        self._background: set[anyio.CancelScope] = set()
        self._revalidating: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self.flights)

    async def run(self, job: Job) -> Any:
        """The job's result, computed once for every concurrent caller of its key.

        Raises what ``compute`` raised, ``TypeError`` for a result that cannot be cached.
        """
        pkey = (job.namespace, job.key)
        if pkey in self.flights:
            job.counts.coalesced += 1
        return await self.flights.run(pkey, lambda: self._compute(job))

    async def _compute(self, job: Job) -> Any:
        epoch = self.epoch
        job.counts.computes += 1
        try:
            value = job.compute()
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            job.counts.errors += 1
            raise
        if epoch == self.epoch:  # no invalidation meanwhile: the value is still current
            await self._store(job, value)
        return value

    def revalidate(self, job: Job) -> None:
        """Recompute a stale entry in the background, once however many readers saw it."""
        pkey = (job.namespace, job.key)
        if self.tg is None or pkey in self._revalidating or pkey in self.flights:
            return
        self._revalidating.add(pkey)
        self.revalidations += 1
        self.tg.start_soon(self._in_background, pkey, job)

    async def _in_background(self, pkey: tuple[str, str], job: Job) -> None:
        with anyio.CancelScope() as scope:
            self._background.add(scope)
            try:
                await self.flights.run(pkey, lambda: self._compute(job))
            except Exception as exc:
                self._log.warning(
                    "revalidation failed; the stale value stays until its window ends",
                    namespace=job.namespace,
                    key=job.key,
                    error=repr(exc),
                )
            finally:
                self._background.discard(scope)
                self._revalidating.discard(pkey)

    def cancel_background(self) -> None:
        """Cancel the recomputations under way (the cache is stopping)."""
        for scope in list(self._background):
            scope.cancel()
