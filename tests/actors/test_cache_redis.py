"""The Redis tier against a real redis-server: round trips, sharing, expiry, invalidation,
and an outage the cache rides out on its local tiers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from actors.cache import Cache
from actors.cache.redis_tier import RedisTier
from runtime.clock import FakeClock
from runtime.events import CircuitBreakerStateChanged
from runtime.testing import capture_logs

from .test_cache_kit import RedisServer, drain, make_cache, subscribe, tier_stats

pytestmark = pytest.mark.slow
REDIS = "redis: {key_prefix: 'test:', timeout_ms: 500, failure_threshold: 2, reset_timeout_s: 5}"


class Reply(msgspec.Struct, frozen=True):
    text: str


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server (fails when the binary is missing), stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_cache(clock: FakeClock, server: RedisServer, *, l1: bool = True, tti: str = "") -> Cache:
    tiers = f"{{name: shared, backend: redis, url: '{server.url}'{tti}}}"
    if l1:
        tiers = "{name: l1, backend: memory, max_entries: 100}, " + tiers
    return make_cache(clock, f"[{tiers}]", extra=REDIS)


def shared(cache: Cache) -> RedisTier:
    tier = cache.tiers[-1]
    assert isinstance(tier, RedisTier)
    return tier


async def raw(server: RedisServer, *command: Any) -> Any:
    client = Redis.from_url(server.url)
    try:
        return await client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()


async def test_a_value_round_trips_through_redis(
    clock: FakeClock, redis_server: RedisServer
) -> None:
    """Set and get with Redis as the only tier: builtins, a typed Struct, a negative entry."""
    async with redis_cache(clock, redis_server, l1=False).running() as cache:
        await cache.set("a", {"x": [1, 2]})
        await cache.set("r", Reply("hi"))
        await cache.set("gone", None, ttl=30)
        assert await cache.get("a") == {"x": [1, 2]}
        assert await cache.get("r", type=Reply) == Reply("hi")
        missing = object()
        assert await cache.get("gone", default=missing) is None
        assert await cache.get("never", default=missing) is missing
        stats = tier_stats(cache, "shared")
        assert (stats.hits, stats.misses, stats.writes, stats.breaker) == (3, 1, 3, "closed")
    assert await raw(redis_server, "EXISTS", "test:response:a") == 1


async def test_two_caches_share_entries_through_redis(
    clock: FakeClock, redis_server: RedisServer
) -> None:
    """What one process sets, another reads (and promotes into its own L1)."""
    first_cache, second_cache = redis_cache(clock, redis_server), redis_cache(clock, redis_server)
    async with first_cache.running() as first, second_cache.running() as second:
        await first.set("weather:paris", "sunny", tags=["weather"])
        assert second.get_nowait("weather:paris") is None
        assert await second.get("weather:paris") == "sunny"
        assert second.get_nowait("weather:paris") == "sunny"
        assert await first.invalidate_tag("weather") == 1
        await second.invalidate("weather:paris")  # its own L1 copy
        assert await second.get("weather:paris") is None


async def test_redis_expires_entries_at_the_end_of_their_lifetime(
    clock: FakeClock, redis_server: RedisServer
) -> None:
    """The key carries a Redis expiry (PX) equal to the entry's TTL."""
    async with redis_cache(clock, redis_server).running() as cache:
        await cache.set("k", 1, ttl=30)
        await cache.set("forever", 2)  # the response namespace's ttl_s (3600 s)
        assert 29_000 < await raw(redis_server, "PTTL", "test:response:k") <= 30_000
        assert 3_599_000 < await raw(redis_server, "PTTL", "test:response:forever") <= 3_600_000
        await clock.advance(30)
        assert await cache.get("k") is None  # a deadline passed on our clock is a miss


async def test_a_read_renews_the_time_to_idle_in_redis(
    clock: FakeClock, redis_server: RedisServer
) -> None:
    """With tti_s the key expires after that idle time; a read (GETEX) renews it."""
    async with redis_cache(clock, redis_server, l1=False, tti=", tti_s: 20").running() as cache:
        await cache.set("k", 1)
        assert 19_000 < await raw(redis_server, "PTTL", "test:response:k") <= 20_000
        await raw(redis_server, "PEXPIRE", "test:response:k", 5000)
        assert await cache.get("k") == 1
        assert 19_000 < await raw(redis_server, "PTTL", "test:response:k") <= 20_000


async def test_namespaces_and_tags_are_invalidated_in_redis(
    clock: FakeClock, redis_server: RedisServer
) -> None:
    """A namespace scan deletes its keys only; a tag deletes its members in one namespace."""
    async with redis_cache(clock, redis_server, l1=False).running() as cache:
        await cache.set("a", 1, tags=["t"])
        await cache.set("b", 2)
        await cache.set("v", 3, namespace="embedding", tags=["t"])
        assert await cache.invalidate_tag("t", namespace="embedding") == 1
        assert await cache.get("a") == 1
        assert await cache.invalidate_namespace("response") == 2
        assert await cache.get("a") is None and await cache.get("b") is None
        await cache.set("v", 3, namespace="embedding")
        assert await cache.get("v", namespace="embedding") == 3


async def test_an_outage_falls_back_to_local_tiers_and_recovers_by_itself(
    clock: FakeClock, redis_server: RedisServer
) -> None:
    """Server down: no caller sees an error, the breaker opens and Redis is left alone;
    server back and the breaker's timeout past: a trial succeeds and Redis is used again."""
    async with redis_cache(clock, redis_server).running() as cache:
        await cache.set("local", "kept")
        redis_server.stop()
        with subscribe(cache, CircuitBreakerStateChanged) as sub, capture_logs() as logs:
            assert await cache.get("local") == "kept"  # L1 answers
            assert await cache.get("remote") is None  # Redis fails: a miss
            await cache.set("new", "v")  # Redis fails: the breaker opens
            assert await cache.get("new") == "v"
            errors = tier_stats(cache, "shared").errors
            assert await cache.get("other") is None  # skipped: no call, no error
            assert tier_stats(cache, "shared").errors == errors == 2
            assert [(e.old, e.new) for e in drain(sub)] == [("closed", "open")]
            assert tier_stats(cache, "shared").breaker == "open"
            assert not shared(cache).available
        assert {e["event"] for e in logs if e["log_level"] == "warning"} >= {
            "redis read failed; using the local tiers",
            "circuit breaker state changed",
        }
        redis_server.start()
        await clock.advance(5)
        with subscribe(cache, CircuitBreakerStateChanged) as sub:
            await cache.set("back", "again")  # the half-open trial
            assert await cache.get("back") == "again"
            await cache.invalidate("back")  # a second call that succeeds closes the breaker
            await cache.set("back", "again")
            assert [(e.old, e.new) for e in drain(sub)] == [
                ("open", "half_open"),
                ("half_open", "closed"),
            ]
        assert await raw(redis_server, "EXISTS", "test:response:back") == 1


async def test_without_redis_py_the_tier_is_left_out(
    clock: FakeClock, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis is an optional dependency: when it cannot be imported the tier is skipped."""
    import builtins

    real_import = builtins.__import__

    def no_redis(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("redis"):
            raise ImportError("No module named 'redis'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_redis)
    with capture_logs() as logs:
        async with redis_cache(clock, redis_server).running() as cache:
            await cache.set("k", 1)
            assert await cache.get("k") == 1
    assert logs[0]["event"] == "redis tier skipped: redis-py is not installed"
    assert tier_stats(cache, "shared").available is False


def test_a_missing_redis_server_fails_the_test_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the binary the Redis tests fail (never skip), naming the setup script."""
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(
        pytest.fail.Exception, match=r"redis-server is not installed.*install-system-deps"
    ):
        RedisServer(tmp_path)
