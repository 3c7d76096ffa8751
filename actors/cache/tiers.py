"""The tiers a configuration asks for, in its order, and what the cache needs of each kind.

Memory tiers (``memory``, ``compressed``) are synchronous: a read touches the structure
directly. Slow tiers (``sqlite``, ``redis``) are asynchronous and own their I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from runtime.config import CacheSection, TierConfig

from .entry import Record
from .memory import CompressedTier, MemoryTier
from .redis_tier import RedisTier
from .sqlite import SqliteTier
from .stats import CacheEvents, TierCounts, TierStatistics

if TYPE_CHECKING:
    from runtime.actor import ActorContext

__all__ = ["SlowTier", "Tier", "build_tiers", "reconfigure", "restart_shape"]


class SlowTier(Protocol):
    """What the cache needs of a tier with I/O (``SqliteTier``, ``RedisTier``)."""

    counts: TierCounts

    @property
    def name(self) -> str: ...

    @property
    def write(self) -> str:
        """``through`` or ``behind``."""
        ...

    @property
    def available(self) -> bool: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def fetch(
        self, namespace: str, key: str, now: float, stale_ok: bool = False
    ) -> Record | None: ...

    async def store(self, namespace: str, key: str, record: Record, now: float) -> None: ...

    async def remove(self, namespace: str, key: str) -> None: ...

    async def remove_namespace(self, namespace: str) -> int: ...

    async def remove_tag(self, tag: str, namespace: str | None = None) -> int: ...

    async def flush(self) -> None: ...

    async def sweep(self, now: float) -> int: ...

    def statistics(self) -> TierStatistics: ...


Tier = MemoryTier | SlowTier


def build_tiers(
    section: CacheSection, context: ActorContext, events: CacheEvents, *, seed: int = 0
) -> list[Tier]:
    """One tier per ``section.tiers`` entry, in order (none when the cache is disabled)."""
    if not section.enabled:
        return []
    return [_build(config, section, context, events, seed) for config in section.tiers]


def _build(
    config: TierConfig,
    section: CacheSection,
    context: ActorContext,
    events: CacheEvents,
    seed: int,
) -> Tier:
    match config.backend:
        case "memory":
            return MemoryTier(config, events=events, seed=seed)
        case "compressed":
            return CompressedTier(config, events=events, level=section.compression_level, seed=seed)
        case "sqlite":
            return SqliteTier(
                config,
                clock=context.clock,
                events=events,
                write_behind=section.write_behind,
                seed=seed,
            )
        case "redis":
            redis = section.redis
            breaker = context.circuit_breaker(
                f"cache.{config.name}",
                failure_threshold=redis.failure_threshold,
                reset_timeout_s=redis.reset_timeout_s,
            )
            return RedisTier(config, events=events, redis=redis, breaker=breaker)
    raise ValueError(f"backend must be memory, compressed, sqlite or redis; got {config.backend!r}")


def restart_shape(config: TierConfig) -> tuple[object, ...]:
    """What of a tier cannot change without rebuilding it: a reload that changes it needs a
    restart. (Memory tiers take new limits and lifetimes live.)"""
    shape: tuple[object, ...] = (config.name, config.backend, config.policy, config.path)
    shape += (config.url, config.write)
    if config.backend not in ("memory", "compressed"):
        shape += (config.max_entries, config.max_bytes, config.ttl_s, config.tti_s)
    return shape


def reconfigure(tiers: list[Tier], old: CacheSection, new: CacheSection) -> bool:
    """Apply ``new`` to ``tiers`` (built from ``old``) live; ``False`` (nothing changed) when
    the tiers' shapes differ and only a restart can apply it."""
    if [restart_shape(t) for t in new.tiers] != [restart_shape(t) for t in old.tiers]:
        return False
    for tier, config in zip(tiers, new.tiers, strict=False):
        if isinstance(tier, CompressedTier):
            tier.level = new.compression_level
        if isinstance(tier, MemoryTier):
            tier.reconfigure(config)
        elif isinstance(tier, SqliteTier):
            tier.write_behind = new.write_behind
    return True
