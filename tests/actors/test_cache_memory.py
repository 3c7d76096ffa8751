"""The memory tiers on their own: lifetimes, limits, tags, sweeps, compression, events."""

from __future__ import annotations

import math

import msgspec

from actors.cache import codec
from actors.cache.memory import CompressedTier, MemoryTier
from actors.cache.stats import CacheEvents
from runtime.clock import FakeClock
from runtime.config import TierConfig
from runtime.events import CacheEviction, CacheExpired, EventBus

from .test_cache_kit import drain

INF = math.inf


def tier(clock: FakeClock, **settings: object) -> tuple[MemoryTier, EventBus]:
    bus = EventBus(clock=clock)
    config = msgspec.convert({"name": "l1", "backend": "memory", **settings}, TierConfig)
    return MemoryTier(config, events=CacheEvents(bus)), bus


def put(t: MemoryTier, key: str, value: object, *, now: float = 0.0, expires: float = INF,
        keep: float | None = None, tags: tuple[str, ...] = (), ns: str = "ns") -> None:  # fmt: skip
    data = codec.encode(value, key, ns)
    t.put(ns, key, value, data, expires, expires if keep is None else keep, tags, now)


def test_a_fresh_entry_is_a_hit_and_returns_the_stored_object(clock: FakeClock) -> None:
    """L1 keeps the value itself: a hit returns that very object, and counts."""
    t, _ = tier(clock, max_entries=4)
    value = {"a": [1, 2]}
    put(t, "k", value)
    entry = t.lookup("ns", "k", 1.0)
    assert entry is not None and entry.value is value
    assert t.lookup("ns", "other", 1.0) is None
    assert (t.counts.hits, t.counts.misses) == (1, 1)


def test_an_entry_past_its_ttl_expires_on_read_with_an_event(clock: FakeClock) -> None:
    """At expires_at the entry is gone: a miss, counted as expired 'ttl', CacheExpired sent."""
    t, bus = tier(clock, max_entries=4)
    with bus.subscribe(CacheExpired) as sub:
        put(t, "k", 1, expires=10.0)
        assert t.lookup("ns", "k", 9.9) is not None
        assert t.lookup("ns", "k", 10.0) is None
        assert len(t) == 0 and t.counts.expired == {"ttl": 1}
        (event,) = drain(sub)
    assert (event.key, event.namespace, event.tier, event.kind) == ("k", "ns", "l1", "ttl")


def test_the_tiers_own_ttl_caps_a_longer_entry_ttl(clock: FakeClock) -> None:
    """ttl_s of the tier wins over a longer entry TTL."""
    t, _ = tier(clock, max_entries=4, ttl_s=5)
    put(t, "k", 1, now=100.0, expires=1000.0)
    assert t.lookup("ns", "k", 104.9) is not None
    assert t.lookup("ns", "k", 105.0) is None


def test_an_entry_not_read_for_its_tti_expires_and_reads_renew_it(clock: FakeClock) -> None:
    """Each read restarts the time to idle; a gap of tti_s ends the entry ('tti')."""
    t, _ = tier(clock, max_entries=4, tti_s=10)
    put(t, "k", 1)
    assert t.lookup("ns", "k", 9.0) is not None
    assert t.lookup("ns", "k", 18.0) is not None
    assert t.lookup("ns", "k", 28.0) is None
    assert t.counts.expired == {"tti": 1}


def test_a_stale_entry_is_a_miss_unless_stale_is_ok_and_goes_after_its_window(
    clock: FakeClock,
) -> None:
    """Between expires_at and keep_until: miss for a plain read, hit with stale_ok."""
    t, _ = tier(clock, max_entries=4)
    put(t, "k", 1, expires=10.0, keep=20.0)
    assert t.lookup("ns", "k", 15.0) is None
    assert len(t) == 1
    entry = t.lookup("ns", "k", 15.0, stale_ok=True)
    assert entry is not None and entry.expires_at == 10.0
    assert t.lookup("ns", "k", 20.0, stale_ok=True) is None
    assert len(t) == 0


def test_an_entry_too_large_for_the_tier_is_evicted_with_an_event(clock: FakeClock) -> None:
    """A value over max_bytes is not kept: eviction 'oversize', CacheEviction published."""
    t, bus = tier(clock, max_entries=4, max_bytes=16)
    with bus.subscribe(CacheEviction) as sub:
        put(t, "big", "x" * 100)
        (event,) = drain(sub)
    assert (event.key, event.reason) == ("big", "oversize")
    assert len(t) == 0 and t.statistics().evictions == {"oversize": 1}


def test_byte_accounting_follows_the_encoded_size(clock: FakeClock) -> None:
    """Bytes are the msgpack size of each value, released on removal."""
    t, _ = tier(clock, max_entries=4)
    put(t, "a", "x" * 10)  # 11 bytes of msgpack (fixstr header + 10)
    put(t, "b", b"yy")  # 4 bytes (bin8 header + length + 2)
    assert t.statistics().bytes == 15
    assert t.remove("ns", "a") and not t.remove("ns", "a")
    assert t.statistics().bytes == 4


def test_tags_and_namespaces_invalidate_their_entries_only(clock: FakeClock) -> None:
    """remove_tag (optionally within a namespace) and remove_namespace count what they drop."""
    t, _ = tier(clock, max_entries=10)
    put(t, "a", 1, tags=("user:1",))
    put(t, "b", 2, tags=("user:1", "city"))
    put(t, "c", 3, tags=("user:1",), ns="other")
    put(t, "d", 4, ns="other")
    assert t.remove_tag("user:1", "other") == 1
    assert t.remove_tag("user:1") == 2
    assert t.remove_tag("city") == 0  # b went with user:1: its other tag went too
    assert t.remove_namespace("other") == 1
    assert len(t) == 0 and t.counts.invalidations == 4


def test_a_rewrite_drops_the_old_tags(clock: FakeClock) -> None:
    """A key set again without a tag is no longer invalidated by that tag."""
    t, _ = tier(clock, max_entries=10)
    put(t, "a", 1, tags=("old",))
    put(t, "a", 2)
    assert t.remove_tag("old") == 0
    assert len(t) == 1


async def test_sweep_drops_expired_and_idle_entries_in_chunks(clock: FakeClock) -> None:
    """Every expired entry goes; the sweep yields per chunk of entries."""
    t, _ = tier(clock, max_entries=5000, tti_s=50)
    for index in range(2500):
        put(t, f"k{index}", index, expires=10.0 if index % 2 else INF)
    t.lookup("ns", "k0", 40.0)  # read: not idle at 60
    chunks = list(t.sweep(60.0))
    assert len(chunks) == 3  # 2500 entries, 1000 per chunk
    assert sum(chunks) == 2499
    assert t.counts.expired == {"ttl": 1250, "tti": 1249}
    assert len(t) == 1


def test_shrink_evicts_a_fraction_by_policy(clock: FakeClock) -> None:
    """Memory pressure: half the entries go, counted as 'shrink'."""
    t, _ = tier(clock, max_entries=10, policy="lru")
    for index in range(10):
        put(t, f"k{index}", index)
    assert t.shrink(0.5) == 5
    assert t.counts.evictions == {"shrink": 5}
    assert t.lookup("ns", "k9", 1.0) is not None and t.lookup("ns", "k0", 1.0) is None


def test_reconfigure_applies_new_limits_and_lifetimes(clock: FakeClock) -> None:
    """Fewer max_entries evicts at once; a new tti_s applies to reads from then on."""
    t, _ = tier(clock, max_entries=10, policy="lru")
    for index in range(6):
        put(t, f"k{index}", index)
    config = msgspec.convert(
        {"name": "l1", "backend": "memory", "max_entries": 3, "policy": "lru", "tti_s": 5},
        TierConfig,
    )
    t.reconfigure(config)
    assert len(t) == 3 and t.counts.evictions == {"entries": 3}
    assert t.lookup("ns", "k5", 5.0) is None  # written at 0, idle for 5


def test_the_compressed_tier_keeps_compressed_bytes_and_decodes_on_read(clock: FakeClock) -> None:
    """L2 stores zlib bytes (counted as such) and gives the value back, typed if asked."""
    config = msgspec.convert({"name": "l2", "backend": "compressed", "max_entries": 4}, TierConfig)
    t = CompressedTier(config, events=CacheEvents(None), level=6)
    value = ["the same words again"] * 50
    data = codec.encode(value, "k", "ns")
    t.put("ns", "k", value, data, INF, INF, (), 0.0)
    stats = t.statistics()
    assert stats.backend == "compressed" and stats.bytes < len(data) / 5
    entry = t.lookup("ns", "k", 1.0)
    assert entry is not None
    assert t.value_of(entry) == value
    assert t.value_of(entry, tuple[str, ...]) == tuple(value)
    assert t.data_of(entry) == data
