"""A read through the tiers: the first tier that has the key answers, and what it gives is
promoted to every faster tier above it (with the deadlines it had).

A stored value that cannot be decoded (a corrupt file, or a ``type`` it no longer matches,
e.g. a Struct whose fields changed between versions) is dropped from its tier and the read
goes on to the next one: old data never turns into an error for the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from runtime.events import CacheHit

from . import codec
from .entry import MemoryEntry, Record
from .memory import DecodeErrors, MemoryTier
from .stats import CacheEvents
from .tiers import SlowTier, Tier

__all__ = ["Found", "Reader"]


class Found(msgspec.Struct, frozen=True):
    """What a read found: the value, whether it is stale, and the tier that had it."""

    value: Any
    stale: bool
    tier: str


class Reader:
    """Reads through ``tiers`` (the cache's list: changes to it are seen)."""

    def __init__(
        self, tiers: list[Tier], events: CacheEvents, log: Any, wall: Callable[[], float]
    ) -> None:
        self._tiers = tiers
        self._events = events
        self._log = log
        self._wall = wall

    async def read(
        self, namespace: str, key: str, type: Any, *, stale_ok: bool, skip_l1: bool
    ) -> Found | None:
        """The value of ``key`` from the first tier that has it (``skip_l1``: from the second
        on, the caller has looked in the first), promoted above; ``None`` when none has it."""
        tiers, now = self._tiers, self._wall()
        for index in range(1 if skip_l1 else 0, len(tiers)):
            tier = tiers[index]
            if isinstance(tier, MemoryTier):
                found = self._from_memory(tier, index, namespace, key, type, stale_ok, now)
            else:
                found = await self._from_slow(tier, index, namespace, key, type, stale_ok, now)
            if found is not None:
                bus = self._events.bus
                if bus is not None and bus.wants(CacheHit):  # built only when wanted
                    self._events.hit(namespace, key, tier.name)
                return found
            self._events.miss(namespace, key, tier.name)
        return None

    def _from_memory(
        self,
        tier: MemoryTier,
        index: int,
        namespace: str,
        key: str,
        type: Any,
        stale_ok: bool,
        now: float,
    ) -> Found | None:
        entry = tier.lookup(namespace, key, now, stale_ok)
        if entry is None:
            return None
        try:
            value = tier.value_of(entry, type) if entry.value is not None else None
        except DecodeErrors as exc:
            self.undecodable(tier, namespace, key, exc)
            return None
        if index:
            self._promote_memory(index, namespace, key, value, tier, entry, now)
        return Found(value, now >= entry.expires_at, tier.name)

    async def _from_slow(
        self,
        tier: SlowTier,
        index: int,
        namespace: str,
        key: str,
        type: Any,
        stale_ok: bool,
        now: float,
    ) -> Found | None:
        record = await tier.fetch(namespace, key, now, stale_ok)
        if record is None:
            return None
        try:
            value = codec.decode(record.data, type)
        except DecodeErrors as exc:
            self.undecodable(tier, namespace, key, exc)
            await tier.remove(namespace, key)
            return None
        if index:
            await self._promote(index, namespace, key, value, record, now)
        return Found(value, now >= record.expires_at, tier.name)

    def _promote_memory(
        self,
        index: int,
        namespace: str,
        key: str,
        value: Any,
        source: MemoryTier,
        entry: MemoryEntry,
        now: float,
    ) -> None:
        """Promote from a memory tier to the memory tiers above it (L1 over L2); a slow tier
        above a memory tier (an odd order) is not written on a read."""
        data = source.data_of(entry)
        for tier in self._tiers[:index]:
            if isinstance(tier, MemoryTier):
                tier.put(namespace, key, value, data, entry.expires_at, entry.keep_until,
                         entry.tags, now)  # fmt: skip
                tier.counts.promotions += 1

    async def _promote(
        self, index: int, namespace: str, key: str, value: Any, record: Record, now: float
    ) -> None:
        for tier in self._tiers[:index]:
            if isinstance(tier, MemoryTier):
                tier.put(namespace, key, value, record.data, record.expires_at,
                         record.keep_until, record.tags, now)  # fmt: skip
            else:
                await tier.store(namespace, key, record, now)
            tier.counts.promotions += 1

    def undecodable(self, tier: Tier, namespace: str, key: str, error: BaseException) -> None:
        """Drop a value that cannot be read back (from a memory tier; a slow tier's caller
        removes it), count and log it."""
        tier.counts.errors += 1
        if isinstance(tier, MemoryTier):
            tier.remove(namespace, key)
        self._log.warning(
            "cached value unreadable; dropped",
            tier=tier.name,
            namespace=namespace,
            key=key,
            error=repr(error),
        )
