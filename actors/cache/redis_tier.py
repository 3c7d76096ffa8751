"""The shared tier on Redis (redis-py's asyncio client): one cache for several processes.

Each entry is one Redis string at ``<key_prefix><namespace>:<key>``: a msgpack envelope of the
encoded value, its deadlines and its tags, written with a Redis expiry at the end of its stale
window, so Redis forgets it by itself. A tag is a Redis set of the keys carrying it
(``<key_prefix>#tag:<tag>``). Reads are coalesced: concurrent readers share one ``MGET`` (or
one pipeline of ``GETEX`` that renews the time to idle). Redis's own ``maxmemory`` policy bounds
the server; this tier has no entry or byte limits of its own.

A circuit breaker guards every call: after ``failure_threshold`` consecutive failures the tier
is skipped (reads miss, writes are dropped, nothing waits on a dead server) for
``reset_timeout_s``, then tried again; the cache keeps working on its local tiers meanwhile and
recovers by itself. Failures never reach the cache's callers; they are counted in ``errors``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from runtime.config import RedisConfig, TierConfig
from runtime.logging import get_logger

from .coalesce import Coalescer
from .entry import Record
from .stats import ACTOR, CacheEvents, TierCounts, TierStatistics, hit_rate

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from runtime.breaker import CircuitBreaker

__all__ = ["RedisTier"]

T = TypeVar("T")
_SCAN_COUNT = 1000


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    """What one Redis key holds."""

    data: bytes
    expires_at: float
    keep_until: float
    tags: tuple[str, ...] = ()


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Envelope)


class RedisTier:
    """A tier on the Redis server at ``config.url``, guarded by ``breaker``."""

    backend = "redis"
    is_memory = False
    write = "through"

    def __init__(
        self,
        config: TierConfig,
        *,
        events: CacheEvents,
        redis: RedisConfig,
        breaker: CircuitBreaker,
    ) -> None:
        assert config.url is not None  # the config's rules require it
        self.name = config.name
        self.config = config
        self.url = config.url
        self.tti_s = config.tti_s
        self.ttl_s = config.ttl_s
        self.settings = redis
        self.breaker = breaker
        self.counts = TierCounts()
        self._events = events
        self._prefix = redis.key_prefix
        self._client: Redis | None = None
        self._reads: Coalescer[str, bytes] = Coalescer(self._fetch)
        self._log = get_logger(ACTOR, tier=config.name)

    @property
    def available(self) -> bool:
        """Whether calls go through (a client exists and the breaker is not open)."""
        return self._client is not None and self.breaker.state != "open"

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}{namespace}:{key}"

    def _tag_key(self, tag: str) -> str:
        return f"{self._prefix}#tag:{tag}"

    async def open(self) -> None:
        """Make the client (it connects on first use). Without redis-py, log and go without."""
        try:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:
            self._log.error("redis tier skipped: redis-py is not installed", error=repr(exc))
            return
        timeout_s = self.settings.timeout_ms / 1000
        # One immediate retry: a pooled connection the server closed (a restart) reconnects
        # instead of counting as a failure; a dead server fails twice as fast as it refuses.
        self._client = Redis.from_url(
            self.url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def flush(self) -> None:
        """Nothing waits: every write reaches Redis before ``store`` returns."""

    async def sweep(self, now: float) -> int:
        """Nothing to sweep: Redis expires keys by itself."""
        return 0

    async def _call(self, doing: str, call: Callable[[Redis], Awaitable[T]]) -> T | None:
        """``call(client)`` through the breaker; ``None`` when skipped or failed (logged)."""
        client = self._client
        if client is None or not self.breaker.allow():
            return None
        try:
            result = await call(client)
        except Exception as exc:  # redis errors, OSError, timeouts: all mean "unreachable"
            self.breaker.record_failure()
            self._failed(exc, doing)
            return None
        self.breaker.record_success()
        return result

    def _failed(self, error: BaseException, doing: str) -> None:
        self.counts.errors += 1
        errors = self.counts.errors
        if errors & (errors - 1) == 0:  # 1st, 2nd, 4th...: an outage must not flood the log
            self._log.warning(
                "redis " + doing + " failed; using the local tiers",
                errors=errors,
                breaker=self.breaker.state,
                error=repr(error),
            )

    # -- reads --------------------------------------------------------------------------------

    async def fetch(
        self, namespace: str, key: str, now: float, stale_ok: bool = False
    ) -> Record | None:
        """The record of ``key`` if fresh (or stale and ``stale_ok``); counts the read."""
        if self._client is None or not self.breaker.allow():
            self.counts.misses += 1
            return None
        try:
            blob = await self._reads.get(self._key(namespace, key))
        except Exception as exc:  # the batch's failure, already counted by the breaker
            self._failed(exc, "read")
            blob = None
        record = self._decode(blob, namespace, key)
        if record is None or now >= record.keep_until:
            self.counts.misses += 1
            return None
        if now >= record.expires_at and not stale_ok:
            self.counts.misses += 1
            return None
        self.counts.hits += 1
        return record

    def _decode(self, blob: bytes | None, namespace: str, key: str) -> Record | None:
        if blob is None:
            return None
        try:
            envelope = _decoder.decode(blob)
        except msgspec.DecodeError as exc:
            self._failed(exc, f"decode of {namespace}:{key}")
            return None
        return Record(envelope.data, envelope.expires_at, envelope.keep_until, envelope.tags)

    async def _fetch(self, keys: list[str]) -> dict[str, bytes]:
        """One round trip for ``keys``; raises when Redis fails (counted by the breaker)."""
        client = self._client
        if client is None:
            return {}
        try:
            if self.tti_s is None:
                values = await client.mget(keys)
            else:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.getex(key, px=math.ceil(self.tti_s * 1000))
                values = await pipe.execute()
        except Exception:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        found: list[Any] = list(values)
        return {k: v for k, v in zip(keys, found, strict=True) if v is not None}

    # -- writes -------------------------------------------------------------------------------

    async def store(self, namespace: str, key: str, record: Record, now: float) -> None:
        """Write ``record``; Redis drops it at the end of its stale window (or its idle time)."""
        expires_at, keep_until = record.expires_at, record.keep_until
        if self.ttl_s is not None and now + self.ttl_s < expires_at:
            window_s = keep_until - expires_at if math.isfinite(expires_at) else 0.0
            expires_at, keep_until = now + self.ttl_s, now + self.ttl_s + window_s
        envelope = _Envelope(record.data, expires_at, keep_until, record.tags)
        lifetime_s = min(keep_until - now, math.inf if self.tti_s is None else self.tti_s)
        if lifetime_s <= 0:
            return
        px = math.ceil(lifetime_s * 1000) if math.isfinite(lifetime_s) else None
        redis_key = self._key(namespace, key)

        async def write(client: Redis) -> bool:
            pipe = client.pipeline(transaction=False)
            pipe.set(redis_key, _encoder.encode(envelope), px=px)
            for tag in record.tags:
                pipe.sadd(self._tag_key(tag), redis_key)
            await pipe.execute()
            return True

        if await self._call("write", write):
            self.counts.writes += 1

    async def remove(self, namespace: str, key: str) -> None:
        """Delete ``key``."""
        redis_key = self._key(namespace, key)
        deleted = await self._call("delete", lambda client: client.unlink(redis_key))
        self.counts.invalidations += int(deleted or 0)

    async def remove_namespace(self, namespace: str) -> int:
        """Delete every key of ``namespace`` (a SCAN over the prefix); returns how many."""
        pattern = _glob_escape(f"{self._prefix}{namespace}:") + "*"

        async def delete(client: Redis) -> int:
            count = 0
            batch: list[Any] = []
            async for redis_key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(redis_key)
                if len(batch) >= _SCAN_COUNT:
                    count += await client.unlink(*batch)
                    batch = []
            if batch:
                count += await client.unlink(*batch)
            return count

        count = await self._call("namespace invalidation", delete) or 0
        self.counts.invalidations += count
        return count

    async def remove_tag(self, tag: str, namespace: str | None = None) -> int:
        """Delete every key tagged ``tag`` (of ``namespace`` only, when given)."""
        tag_key = self._tag_key(tag)
        prefix = None if namespace is None else f"{self._prefix}{namespace}:".encode()

        async def delete(client: Redis) -> int:
            tagged: set[Any] = await client.smembers(tag_key)
            members = [m for m in tagged if prefix is None or m.startswith(prefix)]
            if not members:
                return 0
            pipe = client.pipeline(transaction=False)
            pipe.unlink(*members)
            pipe.srem(tag_key, *members)
            deleted, _ = await pipe.execute()
            return int(deleted)

        count = await self._call("tag invalidation", delete) or 0
        self.counts.invalidations += count
        return count

    def statistics(self) -> TierStatistics:
        counts = self.counts
        return TierStatistics(
            name=self.name,
            backend=self.backend,
            policy=None,
            write=self.write,
            available=self.available,
            entries=0,
            bytes=0,
            max_entries=None,
            max_bytes=None,
            hits=counts.hits,
            misses=counts.misses,
            hit_rate=hit_rate(counts.hits, counts.misses),
            writes=counts.writes,
            promotions=counts.promotions,
            evictions={},
            expired={},
            invalidations=counts.invalidations,
            errors=counts.errors,
            read_batches_total=self._reads.batches,
            coalesced_reads_total=self._reads.coalesced,
            breaker=self.breaker.state,
        )


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
