"""The memory tiers: L1 holds values as they are, L2 holds them compressed.

Both are plain synchronous structures touched directly by readers (no mailbox on the hot
path): a dict per namespace, an ``Occupancy`` (policy, entries, bytes) and a tag index. Expired
entries are dropped when a read finds them, and by ``sweep`` (the actor's maintenance).

The L1 tier returns the very object that was stored: a caller must not mutate a cached value.
Its byte count is the size of the value's msgpack encoding; the compressed tier counts the
bytes it keeps.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from typing import Any

from runtime.config import TierConfig

from . import codec
from .entry import MemoryEntry, within_tier
from .occupancy import Occupancy
from .stats import CacheEvents, TierCounts, TierStatistics, hit_rate

__all__ = ["CompressedTier", "MemoryTier"]

PKey = tuple[str, str]
_SWEEP_CHUNK = 1000  # entries checked between yields to the loop


class MemoryTier:
    """A bounded in-process tier of live values. Raises ``ValueError`` for bad limits."""

    backend = "memory"
    is_memory = True

    def __init__(self, config: TierConfig, *, events: CacheEvents, seed: int = 0) -> None:
        self.name = config.name
        self.config = config
        self.ttl_s = config.ttl_s
        self.tti_s = config.tti_s
        self.counts = TierCounts()
        self._events = events
        self._by_ns: dict[str, dict[str, MemoryEntry]] = {}
        self._tags: dict[str, set[PKey]] = {}
        self.occupancy: Occupancy[PKey] = Occupancy(
            config.policy, max_entries=config.max_entries, max_bytes=config.max_bytes, seed=seed
        )
        self._record_access = self.occupancy.policy.record_access

    # -- reads --------------------------------------------------------------------------------

    def lookup(
        self, namespace: str, key: str, now: float, stale_ok: bool = False
    ) -> MemoryEntry | None:
        """The entry of ``key`` if it is fresh (or stale and ``stale_ok``); counts the read."""
        entries = self._by_ns.get(namespace)
        entry = entries.get(key) if entries is not None else None
        if entry is None:
            self.counts.misses += 1
            return None
        tti_s = self.tti_s
        if now >= entry.expires_at or (tti_s is not None and now - entry.accessed_at >= tti_s):
            return self._past_fresh(entry, now, stale_ok)
        entry.accessed_at = now
        self._record_access(entry.pkey)
        self.counts.hits += 1
        return entry

    def _past_fresh(self, entry: MemoryEntry, now: float, stale_ok: bool) -> MemoryEntry | None:
        """A read found an entry past its TTL or its time to idle."""
        if self._sweep_one(entry, now):
            self.counts.misses += 1
            return None
        if not stale_ok:
            self.counts.misses += 1
            return None
        entry.accessed_at = now
        self._record_access(entry.pkey)
        self.counts.hits += 1
        return entry

    def value_of(self, entry: MemoryEntry, type: Any = None) -> Any:
        """The entry's value, as ``type`` when given. Raises ``ValueError`` when it is not one."""
        return codec.convert(entry.value, type)

    def data_of(self, entry: MemoryEntry) -> bytes:
        """The entry's value encoded (to promote it to a tier that stores bytes)."""
        namespace, key = entry.pkey
        return codec.encode(entry.value, key, namespace)

    # -- writes -------------------------------------------------------------------------------

    def _pack(self, value: Any, data: bytes) -> tuple[Any, int]:
        """What the tier keeps of a value, and its size in bytes."""
        return value, len(data)

    def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        data: bytes,
        expires_at: float,
        keep_until: float,
        tags: tuple[str, ...],
        now: float,
    ) -> None:
        """Store ``value`` (``data`` is its encoding) with the entry's deadlines and tags."""
        stored, size = self._pack(value, data)
        expires_at, keep_until = within_tier(expires_at, keep_until, now, self.ttl_s)
        entries = self._by_ns.get(namespace)
        if entries is None:
            entries = self._by_ns[namespace] = {}
        old = entries.get(key)
        pkey = old.pkey if old is not None else (namespace, key)
        if old is not None:
            self._untag(old)
        entries[key] = MemoryEntry(pkey, stored, size, expires_at, keep_until, now, tags)
        for tag in tags:
            self._tags.setdefault(tag, set()).add(pkey)
        self.counts.writes += 1
        replaced = old.size if old is not None else 0
        for victim, cause in self.occupancy.admit(pkey, size, replaced, self._drop):
            self.counts.evicted(cause)
            self._events.evicted(victim[0], victim[1], self.name, cause)

    def _drop(self, pkey: PKey) -> int:
        """Forget ``pkey``'s entry (the occupancy has let it go); returns its size."""
        namespace, key = pkey
        entries = self._by_ns[namespace]
        entry = entries.pop(key)
        if not entries:
            del self._by_ns[namespace]
        self._untag(entry)
        return entry.size

    def _untag(self, entry: MemoryEntry) -> None:
        for tag in entry.tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(entry.pkey)
                if not keys:
                    del self._tags[tag]

    def _remove(self, entry: MemoryEntry) -> None:
        self._drop(entry.pkey)
        self.occupancy.forget(entry.pkey, entry.size)

    def _expire(self, entry: MemoryEntry, kind: str) -> None:
        self._remove(entry)
        self.counts.expiry(kind)
        self._events.expired(entry.pkey[0], entry.pkey[1], self.name, kind)

    # -- invalidation and maintenance -----------------------------------------------------------

    def remove(self, namespace: str, key: str) -> bool:
        """Drop ``key``; returns whether the tier held it."""
        entries = self._by_ns.get(namespace)
        entry = entries.get(key) if entries is not None else None
        if entry is None:
            return False
        self._remove(entry)
        self.counts.invalidations += 1
        return True

    def remove_namespace(self, namespace: str) -> int:
        """Drop every entry of ``namespace``; returns how many there were."""
        entries = list(self._by_ns.get(namespace, {}).values())
        for entry in entries:
            self._remove(entry)
        self.counts.invalidations += len(entries)
        return len(entries)

    def remove_tag(self, tag: str, namespace: str | None = None) -> int:
        """Drop every entry tagged ``tag`` (in ``namespace`` only, when given)."""
        pkeys = [k for k in self._tags.get(tag, ()) if namespace is None or k[0] == namespace]
        for namespace_, key in pkeys:
            self._remove(self._by_ns[namespace_][key])
        self.counts.invalidations += len(pkeys)
        return len(pkeys)

    def sweep(self, now: float) -> Iterator[int]:
        """Drop expired entries; yields after each chunk so the caller can let the loop run."""
        pkeys = [entry.pkey for entries in self._by_ns.values() for entry in entries.values()]
        for start in range(0, len(pkeys), _SWEEP_CHUNK):
            expired = 0
            for namespace, key in pkeys[start : start + _SWEEP_CHUNK]:
                entry = self._by_ns.get(namespace, {}).get(key)
                if entry is not None and self._sweep_one(entry, now):
                    expired += 1
            yield expired
        self.occupancy.regrow()

    def _sweep_one(self, entry: MemoryEntry, now: float) -> bool:
        """Expire ``entry`` if it is past its end (whichever came first: TTL with its stale
        window, or time to idle); returns whether it did."""
        idle_until = math.inf if self.tti_s is None else entry.accessed_at + self.tti_s
        end = min(entry.keep_until, idle_until)
        if now < end:
            return False
        self._expire(entry, "ttl" if entry.keep_until <= idle_until else "tti")
        return True

    def shrink(self, fraction: float) -> int:
        """Let ``fraction`` of the entries go (memory pressure); returns how many went."""
        dropped = self.occupancy.shrink(fraction, self._drop)
        for (namespace, key), cause in dropped:
            self.counts.evicted(cause)
            self._events.evicted(namespace, key, self.name, cause)
        return len(dropped)

    def reconfigure(self, config: TierConfig) -> None:
        """Take new limits and lifetimes (a reload); evicts what no longer fits."""
        self.config, self.ttl_s, self.tti_s = config, config.ttl_s, config.tti_s
        dropped = self.occupancy.set_limits(config.max_entries, config.max_bytes, self._drop)
        for (namespace, key), cause in dropped:
            self.counts.evicted(cause)
            self._events.evicted(namespace, key, self.name, cause)

    def __len__(self) -> int:
        return len(self.occupancy)

    def statistics(self) -> TierStatistics:
        counts, occupancy = self.counts, self.occupancy
        return TierStatistics(
            name=self.name,
            backend=self.backend,
            policy=self.config.policy,
            write="through",
            available=True,
            entries=len(occupancy),
            bytes=occupancy.bytes,
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
        )


class CompressedTier(MemoryTier):
    """A memory tier of compressed encoded values (zlib at ``level``, 1 = fastest)."""

    backend = "compressed"

    def __init__(
        self, config: TierConfig, *, events: CacheEvents, level: int = 1, seed: int = 0
    ) -> None:
        super().__init__(config, events=events, seed=seed)
        self.level = level

    def _pack(self, value: Any, data: bytes) -> tuple[Any, int]:
        stored = codec.compress(data, self.level)
        return stored, len(stored)

    def value_of(self, entry: MemoryEntry, type: Any = None) -> Any:
        """The entry's value decoded (as ``type`` when given).

        Raises ``ValueError`` (``msgspec.DecodeError``) or ``zlib.error`` when it cannot be.
        """
        return codec.decode(codec.decompress(entry.value), type)

    def data_of(self, entry: MemoryEntry) -> bytes:
        return codec.decompress(entry.value)


DecodeErrors = (ValueError, zlib.error)
"""What reading back a stored value may raise when it is corrupt or of another type."""
