"""The cache through its public face, on memory tiers and the fake clock."""

from __future__ import annotations

import msgspec
import pytest

from actors.cache import Cache
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import Config, parse_config
from runtime.events import CacheEviction, CacheExpired, CacheHit, CacheMiss
from runtime.scrape import Snapshot, metric_families

from .test_cache_kit import drain, make_cache, subscribe, tier_stats

L1_L2 = (
    "[{name: l1, backend: memory, policy: lru, max_entries: 2},"
    " {name: l2, backend: compressed, policy: lru, max_entries: 100}]"
)
L1 = "[{name: l1, backend: memory, policy: lru, max_entries: 100}]"


class Reply(msgspec.Struct, frozen=True):
    text: str
    tokens: int


async def test_set_then_get_returns_the_value_and_a_miss_returns_the_default(
    clock: FakeClock,
) -> None:
    """A stored value comes back; an unknown key gives None, or the default given."""
    cache = make_cache(clock, L1)
    await cache.set("weather:paris", {"temp_c": 21})
    assert await cache.get("weather:paris") == {"temp_c": 21}
    assert await cache.get("nope") is None
    assert await cache.get("nope", default="dflt") == "dflt"
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.hit_rate) == (1, 2, 1 / 3)


async def test_an_unconfigured_namespace_is_refused_with_the_known_ones(clock: FakeClock) -> None:
    """ValueError names the namespace and lists those configured."""
    cache = make_cache(clock, L1)
    message = r"namespace 'wether' is not configured \(cache.namespaces has embedding, response\)"
    with pytest.raises(ValueError, match=message):
        await cache.get("k", namespace="wether")
    with pytest.raises(ValueError, match=message):
        await cache.set("k", 1, namespace="wether")
    with pytest.raises(ValueError, match=message):
        cache.get_nowait("k", namespace="wether")


async def test_set_refuses_what_cannot_be_encoded_and_bad_arguments(clock: FakeClock) -> None:
    """TypeError names key and type; bad keys, ttls and tags are refused before anything."""
    cache = make_cache(clock, L1)
    with pytest.raises(TypeError, match="cannot cache the dict value of key 'k'"):
        await cache.set("k", {1: object()})
    with pytest.raises(TypeError, match="key must be a str, got 7"):
        await cache.set(7, "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"key must be a str, got b'k' \(bytes\)"):
        await cache.get_or_compute(b"k", lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl must be a number of seconds > 0 or None, got 0"):
        await cache.set("k", "v", ttl=0)
    with pytest.raises(ValueError, match="tags must be a list of str, got the str 'user'"):
        await cache.set("k", "v", tags="user")
    with pytest.raises(ValueError, match="each tag must be a non-empty str, got ''"):
        await cache.set("k", "v", tags=[""])
    assert await cache.get("k") is None
    assert cache.statistics().namespaces["response"].sets == 0


async def test_the_namespace_ttl_applies_and_a_ttl_argument_overrides_it(clock: FakeClock) -> None:
    """embedding lives its namespace's ttl_s; a set with ttl= lives that long."""
    cache = make_cache(clock, L1, extra="namespaces: {response: {ttl_s: 60}, embedding: {}}")
    await cache.set("a", 1)
    await cache.set("b", 2, ttl=5)
    await clock.advance(5)
    assert await cache.get("b") is None
    assert await cache.get("a") == 1
    await clock.advance(55)
    assert await cache.get("a") is None
    assert tier_stats(cache, "l1").expired == {"ttl": 2}


async def test_a_value_evicted_from_l1_is_read_from_l2_and_promoted(clock: FakeClock) -> None:
    """L1 holds 2: the third set evicts the first, which L2 still has; reading it promotes it."""
    cache = make_cache(clock, L1_L2)
    for key in ("a", "b", "c"):
        await cache.set(key, key.upper())
    with subscribe(cache, CacheHit, CacheMiss) as sub:
        assert await cache.get("a") == "A"
        assert [(type(e).__name__, e.tier) for e in drain(sub)] == [
            ("CacheMiss", "l1"),
            ("CacheHit", "l2"),
        ]
        assert await cache.get("a") == "A"
        assert [(type(e).__name__, e.tier) for e in drain(sub)] == [("CacheHit", "l1")]
    l1, l2 = tier_stats(cache, "l1"), tier_stats(cache, "l2")
    assert (l1.promotions, l1.evictions) == (1, {"entries": 2})
    assert (l2.hits, l2.entries) == (1, 3)


async def test_a_promoted_entry_keeps_its_remaining_lifetime(clock: FakeClock) -> None:
    """Promotion copies the deadline, not a fresh TTL."""
    cache = make_cache(clock, L1_L2)
    await cache.set("a", 1, ttl=10)
    await cache.set("b", 2)
    await cache.set("c", 3)
    await clock.advance(6)
    assert await cache.get("a") == 1  # from l2, into l1
    await clock.advance(4)
    assert await cache.get("a") is None


async def test_a_struct_comes_back_typed_from_every_tier(clock: FakeClock) -> None:
    """type= gives the Struct from L1 (stored dict converted) and from L2 (decoded)."""
    cache = make_cache(clock, L1_L2)
    await cache.set("r", Reply("hello", 3))
    assert await cache.get("r", type=Reply) == Reply("hello", 3)
    await cache.set("x", 1)
    await cache.set("y", 2)  # r leaves l1
    assert await cache.get("r") == {"text": "hello", "tokens": 3}
    await cache.set("x", 1)
    await cache.set("y", 2)  # r leaves l1 again
    assert await cache.get("r", type=Reply) == Reply("hello", 3)


async def test_a_value_that_does_not_match_the_type_is_dropped_and_missed(
    clock: FakeClock,
) -> None:
    """Schema drift is a miss, never an error: every tier drops the mismatching value."""
    cache = make_cache(clock, L1_L2)
    await cache.set("r", "not a reply")
    assert await cache.get("r", type=Reply) is None
    assert await cache.get("r") is None
    assert (tier_stats(cache, "l1").errors, tier_stats(cache, "l2").errors) == (1, 1)


async def test_negative_caching_is_told_apart_from_a_miss_by_the_default(
    clock: FakeClock,
) -> None:
    """set(k, None) caches "not found" for negative_ttl_s: None, whatever the default."""
    extra = "namespaces: {response: {ttl_s: 60, negative_ttl_s: 5}, embedding: {}}"
    cache = make_cache(clock, L1_L2, extra=extra)
    missing = object()
    await cache.set("unknown-city", None)
    assert await cache.get("unknown-city", default=missing) is None
    assert cache.get_nowait("unknown-city", default=missing) is None
    assert await cache.get("never-set", default=missing) is missing
    assert cache.statistics().namespaces["response"].negative_hits_total == 2
    await clock.advance(5)
    assert await cache.get("unknown-city", default=missing) is missing


async def test_a_none_without_negative_caching_only_drops_the_key(clock: FakeClock) -> None:
    """With no negative_ttl_s (and no ttl=), None invalidates what was cached."""
    cache = make_cache(clock, L1_L2)
    await cache.set("k", "old")
    await cache.set("k", None)
    missing = object()
    assert await cache.get("k", default=missing) is missing
    await cache.set("k", None, ttl=3)
    assert await cache.get("k", default=missing) is None


async def test_get_nowait_reads_l1_only(clock: FakeClock) -> None:
    """A value only in L2 is a miss for get_nowait (no I/O), a hit for get."""
    cache = make_cache(clock, L1_L2)
    for key in ("a", "b", "c"):
        await cache.set(key, key)
    assert cache.get_nowait("c") == "c"
    assert cache.get_nowait("a", default="-") == "-"
    assert await cache.get("a") == "a"
    assert cache.get_nowait("r", type=Reply) is None


async def test_byte_limits_hold_through_the_cache(clock: FakeClock) -> None:
    """An L1 of 100 bytes keeps the newest values that fit; evictions are by bytes."""
    tiers = "[{name: l1, backend: memory, policy: lru, max_entries: 100, max_bytes: 100}]"
    cache = make_cache(clock, tiers)
    with subscribe(cache, CacheEviction) as sub:
        for index in range(5):
            await cache.set(f"k{index}", "x" * 30)  # 31 bytes of msgpack each
        evicted = [(e.key, e.reason) for e in drain(sub)]
    assert evicted == [("k0", "bytes"), ("k1", "bytes")]  # the second: over the budget left
    stats = tier_stats(cache, "l1")
    assert (stats.entries, stats.bytes, stats.evictions) == (3, 93, {"bytes": 2})


@pytest.mark.parametrize(
    ("policy", "survivor"),
    [("lru", "a"), ("fifo", "b"), ("lfu", "a")],
)
async def test_each_policy_picks_its_victim_through_the_cache(
    clock: FakeClock, policy: str, survivor: str
) -> None:
    """Two entries, 'a' read twice, a third set: LRU and LFU keep 'a', FIFO keeps 'b'."""
    cache = make_cache(clock, f"[{{name: l1, backend: memory, policy: {policy}, max_entries: 2}}]")
    await cache.set("a", 1)
    await cache.set("b", 2)
    await cache.get("a")
    await cache.get("a")
    await cache.set("c", 3)
    held = {k for k in "abc" if cache.get_nowait(k) is not None}
    assert held == {survivor, "c"}


async def test_tinylfu_keeps_frequent_keys_through_a_scan(clock: FakeClock) -> None:
    """A scan of one-time keys does not flush W-TinyLFU's hot keys (it would flush LRU's)."""
    held = {}
    for policy in ("lru", "tinylfu"):
        cache = make_cache(
            clock, f"[{{name: l1, backend: memory, policy: {policy}, max_entries: 100}}]"
        )
        for round_ in range(5):
            for index in range(50):
                await cache.set(f"hot{index}", index) if round_ == 0 else await cache.get(
                    f"hot{index}"
                )
        for index in range(500):
            await cache.set(f"scan{index}", index)
        held[policy] = sum(cache.get_nowait(f"hot{index}") is not None for index in range(50))
    assert held["lru"] == 0
    assert held["tinylfu"] >= 45


async def test_expiry_and_misses_are_published_as_events(clock: FakeClock) -> None:
    """A read past the TTL: CacheExpired for the tier, CacheMiss per tier and overall."""
    cache = make_cache(clock, L1)
    await cache.set("k", 1, ttl=1)
    await clock.advance(1)
    with subscribe(cache, CacheExpired, CacheMiss) as sub:
        await cache.get("k")
        events = drain(sub)
    assert [(type(e).__name__, e.tier) for e in events] == [
        ("CacheExpired", "l1"),
        ("CacheMiss", "l1"),
        ("CacheMiss", None),
    ]


async def test_shrink_gives_back_memory_tier_entries(clock: FakeClock) -> None:
    """shrink(0.5) evicts half of each memory tier; a bad fraction is refused."""
    cache = make_cache(clock, L1_L2)
    for index in range(10):
        await cache.set(f"k{index}", index)
    assert cache.shrink(0.5) == 1 + 5
    assert (tier_stats(cache, "l1").entries, tier_stats(cache, "l2").entries) == (1, 5)
    with pytest.raises(ValueError, match="fraction must be within"):
        cache.shrink(0)


async def test_a_disabled_cache_misses_and_ignores_writes(clock: FakeClock) -> None:
    """enabled: false builds no tier: every read misses, writes are dropped."""
    config = parse_config("cache: {enabled: false}\n", env={})
    cache = Cache(config, ActorContext(clock=clock))
    await cache.set("k", 1)
    assert await cache.get("k") is None
    assert cache.statistics().enabled is False and cache.statistics().tiers == []


async def test_statistics_have_the_shape_the_prometheus_exporter_reads(clock: FakeClock) -> None:
    """Per tier and per namespace hits, misses, bytes and evictions by cause reach /metrics."""
    cache = make_cache(clock, L1_L2)
    for key in ("a", "b", "c"):
        await cache.set(key, key)
    await cache.get("a")
    await cache.get("zz")
    stats = {"services": {"cache": msgspec.to_builtins(cache.statistics())}}
    families = metric_families(Snapshot(name="t", uptime_s=1.0, statistics=stats))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    assert samples[("jarvis_cache_hits_total", ())] == 1
    assert samples[("jarvis_cache_misses_total", ())] == 1
    assert samples[("jarvis_cache_tier_misses_total", (("tier", "l1"),))] == 2
    assert samples[("jarvis_cache_tier_hits_total", (("tier", "l2"),))] == 1
    assert samples[("jarvis_cache_tier_bytes", (("tier", "l1"),))] == 4
    cause = (("cause", "entries"), ("tier", "l1"))
    assert samples[("jarvis_cache_tier_evictions_total", cause)] == 2
    assert samples[("jarvis_cache_namespace_hits_total", (("namespace", "response"),))] == 1


async def test_a_reload_applies_namespaces_and_memory_limits_live(clock: FakeClock) -> None:
    """New TTLs and L1 limits apply at once; a new backend needs a restart."""
    cache = make_cache(clock, L1_L2)
    for key in ("a", "b"):
        await cache.set(key, key)
    text = (
        "cache:\n  namespaces: {response: {ttl_s: 5}, embedding: {}, tools: {}}\n"
        "  tiers: [{name: l1, backend: memory, policy: lru, max_entries: 1},"
        " {name: l2, backend: compressed, policy: lru, max_entries: 100}]\n"
    )
    assert cache.apply_config(parse_config(text, env={})) == []
    assert tier_stats(cache, "l1").entries == 1
    await cache.set("t", 1, namespace="tools")
    await cache.set("c", "c")
    await clock.advance(5)
    assert await cache.get("c") is None and await cache.get("t", namespace="tools") == 1
    moved = text.replace("backend: compressed", "backend: memory")
    assert cache.apply_config(parse_config(moved, env={})) == ["$.cache.tiers"]
    assert cache.config.tiers[1].backend == "compressed"
    assert cache.apply_config(Config()) == ["$.cache.tiers"]  # back to the default tiers
