"""The cache's actor and supervisor, and the cache section of the configuration."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from actors.cache import Cache
from actors.cache.actor import CacheHost, Flush, Sweep
from runtime.actor import ActorContext
from runtime.clock import FakeClock, settle
from runtime.config import Config, load_config, parse_config
from runtime.events import ActorRestarted, EventBus
from runtime.exceptions import ConfigError
from runtime.retry import RetryPolicy
from runtime.supervisor import Supervisor
from runtime.testing import capture_logs

from .test_cache_kit import context, drain, make_cache, section, subscribe, tier_stats


async def test_the_actor_sweeps_memory_tiers_every_interval(clock: FakeClock) -> None:
    """Expired entries nobody reads again are dropped at the sweep, which re-arms itself."""
    cache = make_cache(
        clock, "[{name: l1, backend: memory, max_entries: 10}]", extra="sweep_interval_s: 10"
    )
    async with cache.running():
        await cache.set("a", 1, ttl=5)
        await cache.set("b", 2, ttl=15)
        await clock.advance(10)
        assert tier_stats(cache, "l1").entries == 1
        await clock.advance(10)
        assert tier_stats(cache, "l1").entries == 0


async def test_a_crashed_actor_is_restarted_and_keeps_maintaining(clock: FakeClock) -> None:
    """A message it cannot handle crashes it; restarted, its sweeps run again."""
    ctx = ActorContext(clock=clock, events=EventBus(clock=clock), retry=RetryPolicy(retries=0))
    config = section("[{name: l1, backend: memory, max_entries: 10}]", extra="sweep_interval_s: 10")
    cache = Cache(config, ctx)
    async with cache.running():
        actor = cache._actor
        assert actor is not None
        with subscribe(cache, ActorRestarted) as sub, capture_logs() as logs:
            actor.tell_nowait("bogus")
            await settle()
            await clock.advance(0.05)  # the restart backoff
            (event,) = drain(sub)
        assert event.name == "cache.io" and actor.state == "running"
        assert any(e["event"] == "child crashed" for e in logs)
        await cache.set("a", 1, ttl=5)
        await clock.advance(10)
        assert tier_stats(cache, "l1").entries == 0


async def test_the_actor_refuses_a_message_it_does_not_know(clock: FakeClock) -> None:
    """receive raises TypeError naming what it takes."""
    from actors.cache.actor import CacheActor

    actor = CacheActor(make_cache(clock, "[{name: l1, backend: memory, max_entries: 2}]"))
    with pytest.raises(TypeError, match="takes Flush, Sweep or Recover; got 'bogus'"):
        await actor.receive("bogus")
    assert Flush() != Flush(timer=True) and Sweep() == Sweep()


async def test_the_cache_runs_under_a_parent_supervisor_as_a_service(clock: FakeClock) -> None:
    """attach puts the cache's supervisor under the Runtime's; statistics encode."""
    cache = Cache(Config(), context(clock))
    root = Supervisor("root", context=cache._context)
    cache.attach(root, cache._context)
    assert root.children == ["cache"]
    async with root:
        await cache.set("k", {"a": 1})
        stats = msgspec.to_builtins(cache.statistics())
        tree = root.statistics().supervisors[0]
        assert [a.name for a in tree.actors] == ["cache.io"]
    assert stats["tiers"][0]["name"] == "l1" and stats["namespaces"]["response"]["sets"] == 1


async def test_the_host_uses_the_runtime_shutdown_timeout(clock: FakeClock) -> None:
    """A whole Config gives the cache the runtime's shutdown timeout; a section, 30 s."""
    config = parse_config("runtime: {shutdown_timeout_ms: 1500}\n", env={})
    assert Cache(config, ActorContext(clock=clock)).shutdown_timeout_s == 1.5
    cache = Cache(config.cache, ActorContext(clock=clock))
    host = CacheHost(cache, ActorContext(clock=clock))
    assert (cache.shutdown_timeout_s, host.shutdown_timeout_s) == (30.0, 30.0)


def test_the_shipped_config_has_the_cache_keys_and_equals_the_defaults() -> None:
    """config.yaml's cache section (write-behind l3, redis settings) is Config()'s."""
    root = Path(__file__).resolve().parents[2]
    shipped = load_config(root / "config.yaml", env={}).cache
    assert shipped == Config().cache
    assert shipped.tiers[1].write == "behind" and shipped.write_behind.batch == 256
    assert shipped.redis.key_prefix == "jarvis:cache:" and shipped.compression_level == 1


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("cache: {tiers: [{name: a, backend: memory, max_entries: 1, write: behind}]}",
         "$.cache.tiers[0].write", "'behind' is for backend 'sqlite' only, not 'memory'"),
        ("cache: {tiers: [{name: a, backend: redis, url: 'redis://h', write: behind}]}",
         "$.cache.tiers[0].write", "'behind' is for backend 'sqlite' only, not 'redis'"),
        ("cache: {write_behind: {batch: 100, max_pending: 10}}",
         "$.cache.write_behind.max_pending", "10 is less than batch (100); raise it"),
        ("cache: {compression_level: 10}", "$.cache.compression_level", "between 1 and 9"),
        ("cache: {namespaces: {response: {stale_s: 0}}}",
         "$.cache.namespaces.response.stale_s", "> 0"),
        ("cache: {redis: {timeout_ms: 0}}", "$.cache.redis.timeout_ms", ">= 1"),
    ],
)  # fmt: skip
def test_contradictory_or_out_of_range_cache_settings_are_reported(
    text: str, path: str, message: str
) -> None:
    """Each problem names its $.path and what is wrong."""
    with pytest.raises(ConfigError) as info:
        parse_config(text + "\n", env={})
    found = {p.path: p.message for p in info.value.problems}
    assert path in found and message in found[path]


def test_a_write_behind_sqlite_tier_is_accepted() -> None:
    """The one backend that writes behind."""
    tiers = section("[{name: l3, backend: sqlite, path: x.db, write: behind}]").tiers
    assert tiers[0].write == "behind"
