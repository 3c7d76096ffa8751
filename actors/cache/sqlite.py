"""The SQLite tier (L3): entries that survive restarts, read in batches, written in batches.

Reads are coalesced (``Coalescer``): concurrent readers share one ``SELECT ... IN``. Writes go
to a buffer first. With ``write: through`` the writer then commits the buffer itself (a group
commit: writers that arrive during a commit share the next one) before ``set`` returns; with
``write: behind`` the actor commits it every ``interval_ms`` or as soon as ``batch`` writes
wait, and a writer finding ``max_pending`` writes waiting commits them itself (backpressure).
Reads see the buffer, so a value is readable the moment it is set. Reads of a tier with a
time to idle or limits stamp ``accessed_at``; the stamps are written with the next batch.

A tier with ``max_entries`` or ``max_bytes`` keeps an index of its ids and sizes under its
eviction policy (rebuilt from the file at open, least recently read first); evicted ids are
deleted with the next batch. Without limits only expiry removes entries.

Failures never reach the cache's callers: a read that fails is a miss, a batch that fails is
kept for the next one (up to ``max_pending``), each counted in ``errors`` and logged. A file
that SQLite says is not a database or is corrupt is moved aside and replaced: at open, or
later through ``on_corrupt`` (the actor calls ``recover``).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from runtime.config import TierConfig, WriteBehindConfig
from runtime.logging import get_logger

from .coalesce import Coalescer
from .entry import Record, within_tier
from .occupancy import Occupancy
from .sqlite_file import SqliteFile, entry_id, is_corrupt, move_aside
from .stats import ACTOR, CacheEvents, TierCounts, TierStatistics, hit_rate

if TYPE_CHECKING:
    from runtime.clock import Clock

__all__ = ["SqliteTier"]

Pending = tuple[Record | None, float]
"""A buffered write: the record (``None``: a delete) and when it was written."""


class SqliteTier:
    """A tier in a SQLite file at ``config.path`` (relative paths: to the working directory)."""

    backend = "sqlite"
    is_memory = False

    def __init__(
        self,
        config: TierConfig,
        *,
        clock: Clock,
        events: CacheEvents,
        write_behind: WriteBehindConfig,
        seed: int = 0,
    ) -> None:
        assert config.path is not None  # the config's rules require it
        self.name = config.name
        self.config = config
        self.path = Path(config.path)
        self.ttl_s, self.tti_s = config.ttl_s, config.tti_s
        self.write = config.write
        self.write_behind = write_behind
        self.counts = TierCounts()
        self.on_flush_needed: Callable[[], None] | None = None
        self.on_corrupt: Callable[[], None] | None = None
        self._clock = clock
        self._events = events
        self._seed = seed
        self._log = get_logger(ACTOR, tier=config.name)
        self._file: SqliteFile | None = None
        self._lock = anyio.Lock()  # one transaction at a time on the connection
        self._pending: dict[str, Pending] = {}
        self._flushing: dict[str, Pending] = {}
        self._touched: dict[str, float] = {}
        self._reads: Coalescer[str, tuple[Record, float]] = Coalescer(self._fetch)
        self._occupancy: Occupancy[str] | None = None
        self._sizes: dict[str, int] = {}
        self._totals = (0, 0)
        self.flushes = 0
        self.moved_aside: list[Path] = []
        self.skipped = False  # the file could not be opened: the tier is left out

    @property
    def available(self) -> bool:
        """Whether the file is open."""
        return self._file is not None

    @property
    def pending_writes(self) -> int:
        return len(self._pending)

    # -- opening and closing ------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file, replacing it if corrupt; on any other failure log it and go without."""
        self.skipped = False
        try:
            self._file = await self._open_replacing()
        except (OSError, sqlite3.Error) as exc:
            self._skip()
            self._log.error(
                "cache database not opened; the tier is skipped until the cache restarts",
                path=str(self.path),
                error=repr(exc),
            )
            return
        await self._load_index()

    async def _open_replacing(self) -> SqliteFile:
        try:
            return await SqliteFile.open(self.path)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            await self._move_aside(exc)
            return await SqliteFile.open(self.path)

    async def _move_aside(self, error: BaseException) -> None:
        moved = await move_aside(self.path, self._clock.wall())
        self.moved_aside.append(moved)
        self.counts.errors += 1
        self._log.error(
            "cache database is corrupt; moved aside and replaced by an empty one",
            path=str(self.path),
            moved_to=str(moved),
            error=repr(error),
        )

    async def _load_index(self) -> None:
        """Rebuild the eviction policy's view of the file (bounded tiers), or count it."""
        assert self._file is not None
        config = self.config
        if config.max_entries is None and config.max_bytes is None:
            self._totals = await self._file.totals()
            return
        self._occupancy = Occupancy(
            config.policy,
            max_entries=config.max_entries,
            max_bytes=config.max_bytes,
            seed=self._seed,
        )
        self._sizes = {}
        for id_, size in await self._file.sizes():
            self._sizes[id_] = size
            self._evicted(self._occupancy.admit(id_, size, 0, self._drop))

    async def recover(self) -> None:
        """Replace a file found corrupt while in use (pending writes go to the new one)."""
        async with self._lock:
            file, self._file = self._file, None
            if file is not None:
                await _close_quietly(file)
            try:
                await self._move_aside(sqlite3.DatabaseError("corrupt while in use"))
                self._file = await SqliteFile.open(self.path)
            except (OSError, sqlite3.Error) as exc:
                self._skip()
                self._log.error("cache database not replaced; the tier is skipped", error=repr(exc))
                return
            self._occupancy, self._sizes = None, {}
            await self._load_index()

    def _skip(self) -> None:
        """No file: writes are dropped (not buffered without end) until the next open."""
        self.counts.errors += 1
        self.skipped = True
        self._pending.clear()
        self._touched.clear()

    async def close(self) -> None:
        """Commit what is buffered, then close the file."""
        await self.flush()
        async with self._lock:
            file, self._file = self._file, None
            if file is not None:
                await _close_quietly(file)

    # -- reads --------------------------------------------------------------------------------

    async def fetch(
        self, namespace: str, key: str, now: float, stale_ok: bool = False
    ) -> Record | None:
        """The record of ``key`` if fresh (or stale and ``stale_ok``); counts the read."""
        id_ = f"{namespace}:{key}"  # entry_id, written out: this runs for every read
        pending = self._pending.get(id_) or self._flushing.get(id_)
        found = None
        if pending is None and self._file is not None:
            try:
                found = await self._reads.get(id_)  # coalesced with the reads under way
            except sqlite3.Error as exc:
                self._failed(exc, "read")
            pending = self._pending.get(id_) or self._flushing.get(id_)  # a write meanwhile wins
        if pending is not None:
            found = _written(pending)
        if found is None:
            self.counts.misses += 1
            return None
        record, accessed_at = found
        keep_until, idle_until = record.keep_until, math.inf
        if self.tti_s is not None:
            idle_until = max(accessed_at, self._touched.get(id_, accessed_at)) + self.tti_s
        if now >= keep_until or now >= idle_until:
            await self._expire(id_, "ttl" if keep_until <= idle_until else "tti", now)
            self.counts.misses += 1
            return None
        if now >= record.expires_at and not stale_ok:
            self.counts.misses += 1
            return None
        self._read(id_, now)
        return record

    def _read(self, id_: str, now: float) -> None:
        self.counts.hits += 1
        occupancy = self._occupancy
        if occupancy is not None and id_ in occupancy.policy:
            occupancy.policy.record_access(id_)
        # A read is stamped when it matters: for the time to idle, or for the policy's order
        # when it is rebuilt from the file.
        if self.tti_s is not None or occupancy is not None:
            self._touched[id_] = now

    async def _fetch(self, ids: list[str]) -> dict[str, tuple[Record, float]]:
        file = self._file
        if file is None:
            return {}
        return await file.fetch(ids)

    # -- writes -------------------------------------------------------------------------------

    async def store(self, namespace: str, key: str, record: Record, now: float) -> None:
        """Write ``record`` (committed before returning with ``write: through``); dropped
        while the tier is skipped (its file could not be opened)."""
        if self.skipped:
            return
        expires_at, keep_until = within_tier(record.expires_at, record.keep_until, now, self.ttl_s)
        id_ = entry_id(namespace, key)
        self._pending[id_] = (Record(record.data, expires_at, keep_until, record.tags), now)
        self._touched.pop(id_, None)
        self.counts.writes += 1
        if self._occupancy is not None:
            size, replaced = len(record.data), self._sizes.get(id_, 0)
            self._sizes[id_] = size
            self._evicted(self._occupancy.admit(id_, size, replaced, self._drop))
        await self._after_write()

    async def _after_write(self) -> None:
        if self._file is None:  # not open yet (or between restarts): keep the newest writes
            while len(self._pending) > self.write_behind.max_pending:
                del self._pending[next(iter(self._pending))]
                self.counts.errors += 1
            return
        if self.write == "through" or len(self._pending) >= self.write_behind.max_pending:
            await self.flush()
        elif len(self._pending) >= self.write_behind.batch and self.on_flush_needed is not None:
            self.on_flush_needed()

    def _drop(self, id_: str) -> int:
        """The policy let ``id_`` go: delete it with the next batch."""
        self._pending[id_] = (None, self._clock.wall())
        return self._sizes.pop(id_)

    def _evicted(self, dropped: list[tuple[str, str]]) -> None:
        for id_, cause in dropped:
            self.counts.evicted(cause)
            namespace, _, key = id_.partition(":")
            self._events.evicted(namespace, key, self.name, cause)

    async def _expire(self, id_: str, kind: str, now: float) -> None:
        self._pending[id_] = (None, now)
        self._forget(id_)
        self.counts.expiry(kind)
        namespace, _, key = id_.partition(":")
        self._events.expired(namespace, key, self.name, kind)
        await self._after_write()

    def _forget(self, id_: str) -> None:
        if self._occupancy is not None and id_ in self._sizes:
            self._occupancy.forget(id_, self._sizes.pop(id_))

    async def flush(self) -> None:
        """Commit the buffered writes now. A failed batch is kept for the next one."""
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        file = self._file
        if file is None or not (self._pending or self._touched):
            return
        batch, self._pending = self._pending, {}
        touches, self._touched = self._touched, {}
        self._flushing = batch
        try:
            await file.write(((i, r, at) for i, (r, at) in batch.items()), touches)
            self.flushes += 1
        except sqlite3.Error as exc:
            self._failed(exc, "write")
            self._requeue(batch)
        finally:
            self._flushing = {}

    def _requeue(self, batch: dict[str, Pending]) -> None:
        """Keep a failed batch's writes for the next one, unless newer ones replaced them;
        past ``max_pending`` they are lost (counted in errors)."""
        room = self.write_behind.max_pending - len(self._pending)
        for id_, pending in batch.items():
            if id_ in self._pending:
                continue
            if room <= 0:
                self.counts.errors += 1
                continue
            self._pending[id_] = pending
            room -= 1

    def _failed(self, error: sqlite3.Error, doing: str) -> None:
        self.counts.errors += 1
        errors = self.counts.errors
        if errors & (errors - 1) == 0:  # 1st, 2nd, 4th, 8th...: a broken disk must not flood
            self._log.error("cache database " + doing + " failed", errors=errors, error=repr(error))
        if is_corrupt(error) and self.on_corrupt is not None:
            self.on_corrupt()

    # -- invalidation and maintenance -----------------------------------------------------------

    async def remove(self, namespace: str, key: str) -> None:
        """Delete ``key`` (with the next batch under ``write: behind``)."""
        id_ = entry_id(namespace, key)
        self._pending[id_] = (None, self._clock.wall())
        self._touched.pop(id_, None)
        self._forget(id_)
        self.counts.invalidations += 1
        await self._after_write()

    async def remove_namespace(self, namespace: str) -> int:
        """Delete every entry of ``namespace`` now; returns how many the file held."""
        prefix = f"{namespace}:"
        return await self._remove_matching(
            lambda id_, _: id_.startswith(prefix),
            lambda file: file.delete_namespace(namespace),
        )

    async def remove_tag(self, tag: str, namespace: str | None = None) -> int:
        """Delete every entry tagged ``tag`` (of ``namespace`` only, when given) now."""
        prefix = "" if namespace is None else f"{namespace}:"
        return await self._remove_matching(
            lambda id_, record: id_.startswith(prefix) and tag in record.tags,
            lambda file: file.delete_tag(tag, namespace),
        )

    async def _remove_matching(
        self,
        buffered: Callable[[str, Record], bool],
        delete: Callable[[SqliteFile], Any],
    ) -> int:
        dropped = [i for i, (r, _) in self._pending.items() if r is not None and buffered(i, r)]
        for id_ in dropped:
            del self._pending[id_]
        async with self._lock:
            ids: list[str] = []
            if self._file is not None:
                try:
                    ids = await delete(self._file)
                except sqlite3.Error as exc:
                    self._failed(exc, "invalidation")
        for id_ in {*dropped, *ids}:
            self._touched.pop(id_, None)
            self._forget(id_)
        count = len({*dropped, *ids})
        self.counts.invalidations += count
        return count

    async def sweep(self, now: float) -> int:
        """Delete expired entries; returns how many."""
        rows: list[tuple[str, float, float]] = []
        async with self._lock:
            await self._flush_locked()  # touches first: a read not yet written must not look idle
            if self._file is None:
                return 0
            idle_before = None if self.tti_s is None else now - self.tti_s
            try:
                rows = await self._file.delete_expired(now, idle_before)
                if self._occupancy is None:
                    self._totals = await self._file.totals()
            except sqlite3.Error as exc:
                self._failed(exc, "sweep")
        for id_, keep_until, accessed_at in rows:
            idle_until = math.inf if self.tti_s is None else accessed_at + self.tti_s
            kind = "ttl" if keep_until <= idle_until else "tti"
            self._forget(id_)
            self.counts.expiry(kind)
            namespace, _, key = id_.partition(":")
            self._events.expired(namespace, key, self.name, kind)
        if self._occupancy is not None:
            self._occupancy.regrow()
        return len(rows)

    def statistics(self) -> TierStatistics:
        counts = self.counts
        if self._occupancy is not None:
            entries, size = len(self._occupancy), self._occupancy.bytes
        else:
            entries, size = self._totals
        return TierStatistics(
            name=self.name,
            backend=self.backend,
            policy=self.config.policy if self._occupancy is not None else None,
            write=self.write,
            available=self.available,
            entries=entries,
            bytes=size,
            max_entries=self.config.max_entries,
            max_bytes=self.config.max_bytes,
            hits=counts.hits,
            misses=counts.misses,
            hit_rate=hit_rate(counts.hits, counts.misses),
            writes=counts.writes,
            promotions=counts.promotions,
            evictions=dict(counts.evictions),
            expired=dict(counts.expired),
            invalidations=counts.invalidations,
            errors=counts.errors,
            pending_writes=len(self._pending),
            flushes_total=self.flushes,
            read_batches_total=self._reads.batches,
            coalesced_reads_total=self._reads.coalesced,
        )


def _written(pending: Pending) -> tuple[Record, float] | None:
    """A buffered write as a read sees it: the record and when it was written; a delete: None."""
    record, written_at = pending
    return None if record is None else (record, written_at)


async def _close_quietly(file: SqliteFile) -> None:
    with contextlib.suppress(sqlite3.Error):  # a broken file may refuse even to close
        await file.close()
