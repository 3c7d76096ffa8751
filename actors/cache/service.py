"""The CacheTier service (``rt.cache``): tiered reads and writes, single flight, invalidation.

A read tries the tiers in the configured order and promotes what it finds to the faster tiers
above; a write goes to every tier (each tier's ``write`` mode says whether ``set`` waits for
it). The hot path, a read that L1 answers, touches L1's structure directly: no mailbox, no
task, no I/O. The actor (``actor.CacheActor``) owns the I/O that is not a reader's: opening
and closing the files, write-behind flushes, sweeps of expired entries, replacing a corrupt
database.

Standalone (a script, a benchmark)::

    cache = Cache(load_config().cache, ActorContext())
    async with cache.running():
        await cache.set("weather:paris", {"temp_c": 21}, namespace="response", ttl=600)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec

from runtime.clock import RealClock
from runtime.config import CacheSection, Config, NamespaceConfig
from runtime.events import CacheHit, CacheMiss
from runtime.exceptions import ActorStopped, ChannelFull
from runtime.logging import get_logger
from runtime.supervisor import Supervisor

from . import codec
from .actor import Flush
from .compute import Computations, Compute, Job
from .entry import check_seconds, check_tags
from .memory import DecodeErrors, MemoryTier
from .reads import Found, Reader
from .stats import ACTOR, CacheEvents, CacheStatistics, NamespaceCounts, hit_rate
from .tiers import SlowTier, Tier, build_tiers, reconfigure
from .writes import Writer

if TYPE_CHECKING:
    from runtime.actor import ActorContext, ActorRef

__all__ = ["Cache", "Compute"]

_MISSING: Any = object()  # not in L1 (None is a value: a cached "not found")


class _Namespace(NamespaceCounts):
    """A namespace's settings, and its counters (as attributes: a hit bumps one)."""

    __slots__ = ("config", "name")

    def __init__(self, name: str, config: NamespaceConfig) -> None:
        super().__init__()
        self.name = name
        self.config = config


class Cache:
    """A tiered cache of the namespaces and tiers of ``config`` (the ``cache`` section).

    ``seed`` makes the W-TinyLFU policies reproducible. Raises ``ValueError`` for tier limits
    the policies refuse.
    """

    name = "cache"

    def __init__(
        self, config: Config | CacheSection, context: ActorContext, *, seed: int = 0
    ) -> None:
        section = config.cache if isinstance(config, Config) else config
        self.config = section
        self._context = context
        self._clock = context.clock
        # RealClock.wall is time.time: the hot path calls it without the wrapper.
        self._wall = time.time if type(context.clock) is RealClock else context.clock.wall
        self._bus = context.events
        self._events = CacheEvents(context.events)
        self._log = get_logger(ACTOR)
        self.tiers: list[Tier] = build_tiers(section, context, self._events, seed=seed)
        first = self.tiers[0] if self.tiers else None
        # The hot path: an L1 that holds values as they are is read without decoding.
        self._l1 = first if type(first) is MemoryTier else None
        self._namespaces = {n: _Namespace(n, c) for n, c in section.namespaces.items()}
        self._computations = Computations(self._store_result, self._log)
        self._reader = Reader(self.tiers, self._events, self._log, self._wall)
        self._writer = Writer(self.tiers, self._events, self._wall, self._computations)
        self._actor: ActorRef | None = None  # set by CacheHost
        self.shutdown_timeout_s = 30.0
        if isinstance(config, Config):
            self.shutdown_timeout_s = config.runtime.shutdown_timeout_ms / 1000

    # -- running ------------------------------------------------------------------------------

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Put the cache's actor (under a supervisor of its own) under ``supervisor``."""
        from .actor import CacheHost

        supervisor.add_supervisor(CacheHost(self, context))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Cache]:
        """Run the cache's actor for the body of ``async with`` (without a Runtime): files
        open, write-behind flushes and sweeps run, stale entries are revalidated."""
        supervisor = Supervisor(f"{self.name}.standalone", context=self._context)
        self.attach(supervisor, self._context)
        async with supervisor:
            yield self

    def slow_tiers(self) -> list[SlowTier]:
        return [t for t in self.tiers if not isinstance(t, MemoryTier)]

    # -- reads --------------------------------------------------------------------------------

    async def get(
        self, key: str, namespace: str = "response", *, type: Any = None, default: Any = None
    ) -> Any:
        """The cached value of ``key``, or ``default`` (None) on a miss.

        A cached "not found" (negative caching: ``set(key, None)``) is ``None`` whatever the
        default: pass a sentinel as ``default`` to tell the two apart. ``type`` decodes into
        that type (a msgspec Struct, ``list[float]``, ...); a stored value that does not match
        it is dropped and read as a miss. Raises ``ValueError`` for a namespace that is not
        configured.
        """
        ns = self._namespaces.get(namespace)
        if ns is None:
            raise self._unknown(namespace)
        l1 = self._l1
        if l1 is not None and type is None:
            # The hot path, written out here (a call costs as much as the work): _from_l1.
            entry = l1.lookup(namespace, key, self._wall())
            if entry is not None:
                ns.hits += 1
                bus = self._bus
                if bus is not None and bus.wants(CacheHit):
                    self._events.hit(namespace, key, l1.name)
                value = entry.value
                if value is None:
                    ns.negative += 1
                return value
            self._missed_l1(namespace, key, l1)
        elif l1 is not None:
            value = self._from_l1(ns, key, type)
            if value is not _MISSING:
                return value
        if l1 is not None and len(self.tiers) == 1:
            return self._count(ns, key, None, default)  # L1 is the whole cache
        found = await self._reader.read(
            namespace, key, type, stale_ok=False, skip_l1=l1 is not None
        )
        return self._count(ns, key, found, default)

    def get_nowait(
        self, key: str, namespace: str = "response", *, type: Any = None, default: Any = None
    ) -> Any:
        """``get`` from L1 alone, without waiting: ``default`` when L1 does not have ``key``
        (the slower tiers are not asked; the read counts as a miss).

        For synchronous code on the event loop, and the hottest paths. Raises ``ValueError``
        for a namespace that is not configured.
        """
        ns = self._namespaces.get(namespace)
        if ns is None:
            raise self._unknown(namespace)
        if self._l1 is not None:
            value = self._from_l1(ns, key, type)
            if value is not _MISSING:
                return value
        return self._count(ns, key, None, default)

    def _from_l1(self, ns: _Namespace, key: str, type: Any) -> Any:
        """The hot path: L1's value of ``key``, counted, or ``_MISSING``."""
        l1 = self._l1
        assert l1 is not None
        entry = l1.lookup(ns.name, key, self._wall())
        if entry is None:
            self._missed_l1(ns.name, key, l1)
            return _MISSING
        value = entry.value
        if type is not None and value is not None:
            value = self._converted(l1, entry, type)
            if value is _MISSING:
                return _MISSING
        ns.hits += 1
        bus = self._bus
        if bus is not None and bus.wants(CacheHit):
            self._events.hit(ns.name, key, l1.name)
        if value is None:
            ns.negative += 1
        return value

    def _missed_l1(self, namespace: str, key: str, l1: MemoryTier) -> None:
        bus = self._bus
        if bus is not None and bus.wants(CacheMiss):
            self._events.miss(namespace, key, l1.name)

    def _converted(self, l1: MemoryTier, entry: Any, type: Any) -> Any:
        """L1's value as ``type``; if it is not one it is dropped and ``_MISSING`` returned."""
        try:
            return codec.convert(entry.value, type)
        except DecodeErrors as exc:
            self._reader.undecodable(l1, entry.pkey[0], entry.pkey[1], exc)
            return _MISSING

    def _count(self, ns: _Namespace, key: str, found: Found | None, default: Any) -> Any:
        """Count a read through the tiers in its namespace; its value, or ``default``."""
        if found is None:
            ns.misses += 1
            self._events.miss(ns.name, key, None)
            return default
        ns.hits += 1
        ns.stale += found.stale
        if found.value is None:
            ns.negative += 1
        return found.value

    async def get_or_compute(
        self,
        key: str,
        compute: Compute,
        namespace: str = "response",
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        type: Any = None,
        stale_s: float | None = None,
    ) -> Any:
        """The cached value of ``key``; on a miss, ``compute()``'s (awaited if a coroutine),
        cached. Concurrent callers of one key compute it once (single flight); a ``None``
        result is cached as "not found" when the namespace has ``negative_ttl_s``.

        An entry past its TTL but within its stale window is returned at once while it is
        recomputed in the background (stale-while-revalidate; only while the cache runs).
        ``stale_s`` is the stale window of what this call caches (default: the namespace's
        ``stale_s``; None there: no window). ``type`` as for ``get``. Raises what ``compute``
        raised (to every caller waiting for it), ``TypeError`` for a key that is not a str or
        a result that cannot be cached, ``ValueError`` for a bad namespace, ttl or stale_s.
        """
        ns = self._ns(namespace)
        _check_key(key)
        if not callable(compute):
            raise TypeError(f"compute must be a function of no arguments; got {compute!r}")
        job = Job(
            namespace,
            ns,
            key,
            compute,
            check_seconds("ttl", ttl),
            check_tags(tags),
            check_seconds("stale_s", stale_s),
        )
        found = await self._reader.read(namespace, key, type, stale_ok=True, skip_l1=False)
        self._count(ns, key, found, None)
        if found is None:
            return await self._computations.run(job)
        if found.stale:
            self._computations.revalidate(job)
        return found.value

    async def _store_result(self, job: Job, value: Any) -> None:
        ns = self._namespaces.get(job.namespace)
        if ns is not None:  # a reload may have removed the namespace meanwhile
            await self._set(ns, job.key, value, job.ttl, job.tags, job.stale_s)

    # -- writes -------------------------------------------------------------------------------

    async def set(
        self,
        key: str,
        value: Any,
        namespace: str = "response",
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        """Cache ``value`` for ``ttl`` seconds (default: the namespace's ``ttl_s``, else the
        tiers'), tagged with ``tags`` for ``invalidate_tag``.

        ``None`` caches "not found" for ``ttl`` or the namespace's ``negative_ttl_s``; with
        neither, it only drops the key. Raises ``TypeError`` for a value msgpack cannot carry
        (naming the key and the type) or a key that is not a str, ``ValueError`` for a bad
        namespace, ttl or tag.
        """
        ns = self._ns(namespace)
        _check_key(key)
        await self._set(ns, key, value, check_seconds("ttl", ttl), check_tags(tags), None)

    async def _set(
        self,
        ns: _Namespace,
        key: str,
        value: Any,
        ttl: float | None,
        tags: tuple[str, ...],
        stale_s: float | None,
    ) -> None:
        if await self._writer.write(ns.name, ns.config, key, value, ttl, tags, stale_s):
            ns.sets += 1

    # -- invalidation -------------------------------------------------------------------------

    async def invalidate(self, key: str, namespace: str = "response") -> None:
        """Drop ``key`` from every tier. Raises ``ValueError`` for a bad namespace."""
        await self._writer.invalidate(self._ns(namespace).name, key)

    async def invalidate_namespace(self, namespace: str) -> int:
        """Drop every entry of ``namespace``; returns how many the fullest tier held. Raises
        ``ValueError`` for a namespace that is not configured."""
        return await self._writer.invalidate_namespace(self._ns(namespace).name)

    async def invalidate_tag(self, tag: str, namespace: str | None = None) -> int:
        """Drop every entry tagged ``tag`` (in ``namespace`` only, when given); returns how
        many the fullest tier held. Raises ``ValueError`` for a bad tag or namespace."""
        (tag,) = check_tags((tag,))
        if namespace is not None:
            self._ns(namespace)
        return await self._writer.invalidate_tag(tag, namespace)

    # -- maintenance --------------------------------------------------------------------------

    def shrink(self, fraction: float = 0.5) -> int:
        """Let ``fraction`` (0 < f <= 1) of each memory tier's entries go, chosen by its policy
        (memory pressure: the QuotaEnforcer's recovery action); returns how many went. The
        tiers grow back as the bytes allow, at each sweep. Raises ``ValueError`` for a bad
        fraction."""
        if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be within (0, 1], e.g. 0.5; got {fraction!r}")
        return sum(t.shrink(fraction) for t in self.tiers if isinstance(t, MemoryTier))

    async def flush(self) -> None:
        """Commit every write-behind tier's buffered writes now.

        While the cache runs, its actor does it after the work already in its mailbox (a sweep,
        a batch), so that when this returns that work is done too.
        """
        actor = self._actor
        if actor is not None and actor.state == "running":
            with contextlib.suppress(ChannelFull, ActorStopped):  # full or stopping: do it here
                await actor.ask(Flush(), timeout_s=None)
                return
        await self.flush_tiers()

    async def flush_tiers(self) -> None:
        """Commit the buffered writes of each slow tier, in this task."""
        for tier in self.slow_tiers():
            await tier.flush()

    async def sweep(self) -> int:
        """Drop expired entries from every tier now (the actor does it every
        ``sweep_interval_s``); returns how many."""
        now, count = self._clock.wall(), 0
        for tier in self.tiers:
            if isinstance(tier, MemoryTier):
                for expired in tier.sweep(now):
                    count += expired
                    await anyio.lowlevel.checkpoint()  # a big tier does not hold the loop
            else:
                count += await tier.sweep(now)
        return count

    # -- configuration and statistics ---------------------------------------------------------

    def apply_config(self, config: Config) -> list[str]:
        """Apply a reloaded configuration live; return the $.paths that need a restart.

        Live: namespaces, sweep_interval_s, compression_level, write_behind, and the limits
        and lifetimes of memory tiers. Not live: enabled, redis, and the tiers' order,
        backends, policies, files, URLs and write modes (and the slow tiers' limits).
        """
        new, old = config.cache, self.config
        restart = [
            f"$.cache.{k}" for k in ("enabled", "redis") if getattr(new, k) != getattr(old, k)
        ]
        if reconfigure(self.tiers, old, new):
            tiers = new.tiers
        else:
            restart.append("$.cache.tiers")
            tiers = old.tiers
        self._namespaces = {
            name: self._namespaces.get(name) or _Namespace(name, ns_config)
            for name, ns_config in new.namespaces.items()
        }
        for name, ns in self._namespaces.items():
            ns.config = new.namespaces[name]
        self.config = msgspec.structs.replace(
            new, enabled=old.enabled, redis=old.redis, tiers=tiers
        )
        return restart

    def statistics(self) -> CacheStatistics:
        """Reads, hits and misses in all and per namespace; each tier's counts and size."""
        namespaces = {name: ns.snapshot() for name, ns in self._namespaces.items()}
        hits = sum(ns.hits for ns in namespaces.values())
        misses = sum(ns.misses for ns in namespaces.values())
        return CacheStatistics(
            enabled=self.config.enabled,
            hits=hits,
            misses=misses,
            hit_rate=hit_rate(hits, misses),
            in_flight=len(self._computations),
            revalidations_total=self._computations.revalidations,
            tiers=[tier.statistics() for tier in self.tiers],
            namespaces=namespaces,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _ns(self, namespace: str) -> _Namespace:
        ns = self._namespaces.get(namespace)
        if ns is None:
            raise self._unknown(namespace)
        return ns

    def _unknown(self, namespace: object) -> ValueError:
        known = ", ".join(sorted(self._namespaces)) or "none"
        return ValueError(
            f"namespace {namespace!r} is not configured (cache.namespaces has {known}); "
            "add it to the configuration"
        )


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {key!r} ({type(key).__name__})")
