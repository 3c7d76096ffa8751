"""What the cache counts, the snapshots it gives, and the events it publishes.

The snapshots' shape is what the Prometheus exporter reads (``runtime/scrape.py`` walks it):
``tiers`` is a list of records with a ``name``; counting fields are named with the exporter's
counting words (``hits``, ``misses``, ``writes``, ``evictions``, ``expired``, ...) or end in
``_total``; ``evictions`` is a breakdown by cause and ``expired`` by kind (``ttl``, ``tti``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from runtime.events import CacheEviction, CacheExpired, CacheHit, CacheInvalidated, CacheMiss

if TYPE_CHECKING:
    from runtime.events import EventBus

__all__ = [
    "ACTOR",
    "CacheEvents",
    "CacheStatistics",
    "NamespaceCounts",
    "NamespaceStatistics",
    "TierCounts",
    "TierStatistics",
    "hit_rate",
]

ACTOR = "cache"


def hit_rate(hits: int, misses: int) -> float:
    """Hits over reads; 0.0 before the first read."""
    reads = hits + misses
    return hits / reads if reads else 0.0


class TierStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One tier. ``entries`` and ``bytes`` (of encoded values; compressed ones in a compressed
    tier) are exact for memory tiers and bounded sqlite tiers; an unbounded sqlite tier counts
    them at each sweep, a redis tier not at all (0)."""

    name: str
    backend: str
    policy: str | None
    write: str
    available: bool
    entries: int
    bytes: int
    max_entries: int | None
    max_bytes: int | None
    hits: int
    misses: int
    hit_rate: float
    writes: int
    promotions: int
    evictions: dict[str, int]
    expired: dict[str, int]
    invalidations: int
    errors: int
    pending_writes: int = 0
    flushes_total: int = 0
    read_batches_total: int = 0
    coalesced_reads_total: int = 0
    breaker: str | None = None


class NamespaceStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One namespace, over all tiers: a read is a hit when some tier had the key."""

    hits: int
    misses: int
    hit_rate: float
    sets: int
    negative_hits_total: int
    stale_hits_total: int
    computes_total: int
    coalesced_total: int
    errors: int


class CacheStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The whole cache: reads over every namespace, then each tier and each namespace."""

    enabled: bool
    hits: int
    misses: int
    hit_rate: float
    in_flight: int
    revalidations_total: int
    tiers: list[TierStatistics]
    namespaces: dict[str, NamespaceStatistics]


class TierCounts:
    """A tier's running counters (plain attributes: they are bumped on the hot path)."""

    __slots__ = (
        "errors",
        "evictions",
        "expired",
        "hits",
        "invalidations",
        "misses",
        "promotions",
        "writes",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.promotions = 0
        self.invalidations = 0
        self.errors = 0
        self.evictions: dict[str, int] = {}
        self.expired: dict[str, int] = {}

    def evicted(self, cause: str) -> None:
        self.evictions[cause] = self.evictions.get(cause, 0) + 1

    def expiry(self, kind: str) -> None:
        self.expired[kind] = self.expired.get(kind, 0) + 1


class NamespaceCounts:
    """A namespace's running counters."""

    __slots__ = ("coalesced", "computes", "errors", "hits", "misses", "negative", "sets", "stale")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.sets = 0
        self.negative = 0
        self.stale = 0
        self.computes = 0
        self.coalesced = 0
        self.errors = 0

    def snapshot(self) -> NamespaceStatistics:
        return NamespaceStatistics(
            hits=self.hits,
            misses=self.misses,
            hit_rate=hit_rate(self.hits, self.misses),
            sets=self.sets,
            negative_hits_total=self.negative,
            stale_hits_total=self.stale,
            computes_total=self.computes,
            coalesced_total=self.coalesced,
            errors=self.errors,
        )


class CacheEvents:
    """Publishes the cache events on the bus; an event is built only when someone wants it."""

    __slots__ = ("bus",)

    def __init__(self, bus: EventBus | None) -> None:
        self.bus = bus

    def hit(self, namespace: str, key: str, tier: str) -> None:
        bus = self.bus
        if bus is not None and bus.wants(CacheHit):
            bus.emit(CacheHit, actor=ACTOR, key=key, namespace=namespace, tier=tier)

    def miss(self, namespace: str, key: str, tier: str | None) -> None:
        bus = self.bus
        if bus is not None and bus.wants(CacheMiss):
            bus.emit(CacheMiss, actor=ACTOR, key=key, namespace=namespace, tier=tier)

    def evicted(self, namespace: str, key: str, tier: str, reason: str) -> None:
        bus = self.bus
        if bus is not None and bus.wants(CacheEviction):
            fields = {"key": key, "namespace": namespace, "tier": tier, "reason": reason}
            bus.emit(CacheEviction, actor=ACTOR, **fields)

    def expired(self, namespace: str, key: str, tier: str, kind: str) -> None:
        bus = self.bus
        if bus is not None and bus.wants(CacheExpired):
            fields = {"key": key, "namespace": namespace, "tier": tier, "kind": kind}
            bus.emit(CacheExpired, actor=ACTOR, **fields)

    def invalidated(
        self, namespace: str, *, key: str | None = None, tag: str | None = None, count: int = 1
    ) -> None:
        bus = self.bus
        if bus is not None and bus.wants(CacheInvalidated):
            fields = {"namespace": namespace, "key": key, "tag": tag, "count": count}
            bus.emit(CacheInvalidated, actor=ACTOR, **fields)
