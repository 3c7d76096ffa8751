"""Invalidation by key, namespace and tag, through memory and SQLite tiers."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cache import Cache
from runtime.clock import FakeClock
from runtime.events import CacheInvalidated

from .test_cache_kit import drain, make_cache, subscribe, tier_stats


def three_tiers(clock: FakeClock, path: Path, write: str = "behind") -> Cache:
    tiers = (
        "[{name: l1, backend: memory, policy: lru, max_entries: 100},"
        " {name: l2, backend: compressed, policy: lru, max_entries: 100},"
        f" {{name: l3, backend: sqlite, path: '{path}', write: {write}}}]"
    )
    return make_cache(clock, tiers)


async def fill(cache: Cache) -> None:
    await cache.set("paris", "sunny", tags=["weather", "city:paris"])
    await cache.set("rome", "rain", tags=["weather"])
    await cache.set("vec", [0.1, 0.2], namespace="embedding", tags=["city:paris"])
    await cache.set("plain", "x")


async def everywhere(cache: Cache, key: str, namespace: str = "response") -> list[str]:
    """The tiers that still hold ``key`` (asked one by one, without promotion)."""
    now = cache._clock.wall()
    held = []
    for tier in cache.tiers:
        if hasattr(tier, "lookup"):
            found = tier.lookup(namespace, key, now) is not None
        else:
            found = await tier.fetch(namespace, key, now) is not None
        if found:
            held.append(tier.name)
    return held


@pytest.mark.parametrize("write", ["behind", "through"])
async def test_invalidating_a_key_removes_it_from_every_tier(
    clock: FakeClock, tmp_path: Path, write: str
) -> None:
    """After invalidate, no tier has the key (write-behind deletes are seen at once)."""
    cache = three_tiers(clock, tmp_path / "c.db", write)
    async with cache.running():
        await fill(cache)
        assert await everywhere(cache, "paris") == ["l1", "l2", "l3"]
        with subscribe(cache, CacheInvalidated) as sub:
            await cache.invalidate("paris")
            (event,) = drain(sub)
        assert (event.namespace, event.key, event.count) == ("response", "paris", 1)
        assert await everywhere(cache, "paris") == []
        await cache.flush()
        assert await everywhere(cache, "paris") == []
        assert await cache.get("rome") == "rain"


async def test_invalidating_a_namespace_leaves_the_others(clock: FakeClock, tmp_path: Path) -> None:
    """Every response entry goes, from each tier, committed or buffered; embeddings stay."""
    cache = three_tiers(clock, tmp_path / "c.db")
    async with cache.running():
        await cache.set("old", 1)
        await cache.flush()  # one committed, the others still buffered
        await fill(cache)
        with subscribe(cache, CacheInvalidated) as sub:
            assert await cache.invalidate_namespace("response") == 4
            (event,) = drain(sub)
        assert (event.namespace, event.key, event.tag, event.count) == ("response", None, None, 4)
        for key in ("old", "paris", "rome", "plain"):
            assert await everywhere(cache, key) == []
        assert await everywhere(cache, "vec", "embedding") == ["l1", "l2", "l3"]
        assert tier_stats(cache, "l3").invalidations == 4


async def test_invalidating_a_tag_removes_its_entries_in_every_namespace(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A tag spans namespaces; with namespace= it stays within one."""
    cache = three_tiers(clock, tmp_path / "c.db")
    async with cache.running():
        await fill(cache)
        await cache.flush()
        assert await cache.invalidate_tag("city:paris", namespace="embedding") == 1
        assert await everywhere(cache, "vec", "embedding") == []
        assert await everywhere(cache, "paris") == ["l1", "l2", "l3"]
        with subscribe(cache, CacheInvalidated) as sub:
            assert await cache.invalidate_tag("weather") == 2
            (event,) = drain(sub)
        assert (event.namespace, event.tag, event.count) == ("*", "weather", 2)
        assert await everywhere(cache, "paris") == [] and await everywhere(cache, "rome") == []
        assert await everywhere(cache, "plain") == ["l1", "l2", "l3"]


async def test_a_rewritten_entry_loses_its_old_tags_in_sqlite(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Tags belong to the current value: a tag of the old one no longer reaches the key."""
    cache = three_tiers(clock, tmp_path / "c.db", "through")
    async with cache.running():
        await cache.set("k", 1, tags=["old"])
        await cache.set("k", 2, tags=["new"])
        assert await cache.invalidate_tag("old") == 0
        assert await everywhere(cache, "k") == ["l1", "l2", "l3"]
        assert await cache.invalidate_tag("new") == 1


async def test_a_tag_promoted_from_sqlite_still_invalidates(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Tags travel with an entry promoted from L3 to the memory tiers."""
    path = tmp_path / "c.db"
    first = three_tiers(clock, path)
    async with first.running():
        await first.set("k", "v", tags=["t"])
    second = three_tiers(clock, path)
    async with second.running():
        assert await second.get("k") == "v"
        assert await everywhere(second, "k") == ["l1", "l2", "l3"]
        await second.invalidate_tag("t")
        assert await everywhere(second, "k") == []


async def test_invalidation_refuses_bad_names(clock: FakeClock) -> None:
    """An unconfigured namespace or an empty tag is a ValueError."""
    cache = make_cache(clock, "[{name: l1, backend: memory, max_entries: 10}]")
    with pytest.raises(ValueError, match="namespace 'nope' is not configured"):
        await cache.invalidate("k", namespace="nope")
    with pytest.raises(ValueError, match="namespace 'nope' is not configured"):
        await cache.invalidate_namespace("nope")
    with pytest.raises(ValueError, match="each tag must be a non-empty str"):
        await cache.invalidate_tag("")
    with pytest.raises(ValueError, match="namespace 'nope' is not configured"):
        await cache.invalidate_tag("t", namespace="nope")
