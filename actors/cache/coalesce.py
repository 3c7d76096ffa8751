"""Concurrent reads of a slow tier, coalesced: one round trip serves many readers.

Readers of the same key share one read; readers of different keys that arrive together share
one batch (``SELECT ... WHERE id IN (...)``, ``MGET``). The first reader to find no batch under
way leads: it lets the loop run once, so that the readers started alongside it join, then
fetches everything waiting, batch after batch, until nothing waits. Followers only wait. When
no other reader came while the last leader led (a reader on its own), the next leader does not
wait that turn: it fetches at once, and readers arriving meanwhile make the next batch (and
bring the wait back).

A leader that is cancelled leaves: the reads it had not finished are abandoned, and their
readers ask again (one of them leads next). Nothing is shielded: a cancellation is felt where
it is asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Coalescer"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Read(Generic[V]):
    """One key's read, shared by every reader of the key; each waiter has its own future, so
    a waiter that is cancelled cancels only its own wait. ``abandoned``: its leader was
    cancelled before it was read; its readers ask again."""

    __slots__ = ("abandoned", "done", "error", "value", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.abandoned = False
        self.value: V | None = None
        self.error: BaseException | None = None
        self.waiters: list[asyncio.Future[None]] = []

    def finish(self, *, abandoned: bool = False) -> None:
        self.done = True
        self.abandoned = abandoned
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)


class Coalescer(Generic[K, V]):
    """Reads keys through ``fetch(keys) -> {key: value}`` (a key left out was not found).

    ``max_batch`` bounds the keys of one fetch. Raises ``ValueError`` if it is below 1.
    """

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], *, max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self._fetch = fetch
        self.max_batch = max_batch
        self._waiting: dict[K, _Read[V]] = {}  # not yet fetched
        self._fetching: dict[K, _Read[V]] = {}  # in the batch under way
        self._leading = False
        self._company = True  # readers came together lately: wait a turn for them to join
        self._arrivals = 0
        self.batches = 0  # fetches made
        self.coalesced = 0  # reads that joined another reader's read of the same key

    async def get(self, key: K) -> V | None:
        """The value of ``key``, or ``None``. Raises what ``fetch`` raised for its batch."""
        while True:
            self._arrivals += 1
            read = self._waiting.get(key) or self._fetching.get(key)
            if read is not None:
                self.coalesced += 1
            else:
                read = self._waiting[key] = _Read()
                if not self._leading:
                    self._leading = True
                    await self._lead()  # returns when everything waiting, this key too, is read
            if not read.done:
                # A bare loop future: the cheapest wait there is (the kernel runs on asyncio).
                waiter = asyncio.get_running_loop().create_future()
                read.waiters.append(waiter)
                await waiter
            if read.abandoned:
                continue  # its leader was cancelled: lead, or join the next leader
            if read.error is not None:
                raise read.error
            return read.value

    async def _lead(self) -> None:
        arrivals = self._arrivals
        try:
            if self._company:
                await anyio.lowlevel.checkpoint()  # readers started alongside join this batch
            while self._waiting:
                await self._fetch_batch()
        except BaseException:  # cancelled: the readers left waiting ask again
            waiting, self._waiting = self._waiting, {}
            for read in waiting.values():
                read.finish(abandoned=True)
            raise
        finally:
            self._leading = False
        self._company = self._arrivals > arrivals  # others came while this one led

    async def _fetch_batch(self) -> None:
        keys = list(self._waiting)[: self.max_batch]
        batch = {key: self._waiting.pop(key) for key in keys}
        self._fetching.update(batch)
        self.batches += 1
        found: dict[K, V] = {}
        error: Exception | None = None
        try:
            found = await self._fetch(keys)
        except Exception as exc:
            error = exc
        except BaseException:
            for key, read in batch.items():
                del self._fetching[key]
                read.finish(abandoned=True)
            raise
        for key, read in batch.items():
            del self._fetching[key]
            read.value, read.error = found.get(key), error
            read.finish()
