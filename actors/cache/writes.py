"""A write through the tiers, and invalidation from all of them.

A write goes to every tier, in order: memory tiers at once, slow tiers by their ``write`` mode
(``set`` waits for a write-through tier, not for a write-behind one). Every invalidation bumps
the computations' epoch: a computation under way may have read what was invalidated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.config import NamespaceConfig

from . import codec
from .compute import Computations
from .entry import Record, lifetime
from .memory import MemoryTier
from .stats import CacheEvents
from .tiers import Tier

__all__ = ["Writer"]


class Writer:
    """Writes to and invalidates ``tiers`` (the cache's list)."""

    def __init__(
        self,
        tiers: list[Tier],
        events: CacheEvents,
        wall: Callable[[], float],
        computations: Computations,
    ) -> None:
        self._tiers = tiers
        self._events = events
        self._wall = wall
        self._computations = computations

    async def write(
        self,
        namespace: str,
        config: NamespaceConfig,
        key: str,
        value: Any,
        ttl: float | None,
        tags: tuple[str, ...],
        stale_s: float | None,
    ) -> bool:
        """Store ``value`` (``None``: "not found"); ``False`` when there was nothing to store
        (a ``None`` without negative caching: the key is dropped instead).

        Raises ``TypeError`` naming the key and the type when msgpack cannot carry the value.
        """
        if value is None:
            ttl = ttl if ttl is not None else config.negative_ttl_s
            if ttl is None:
                await self.invalidate(namespace, key)
                return False
            data, stale_s = codec.NEGATIVE, None
        else:
            data = codec.encode(value, key, namespace)
            ttl = ttl if ttl is not None else config.ttl_s
            stale_s = stale_s if stale_s is not None else config.stale_s
        now = self._wall()
        expires_at, keep_until = lifetime(now, ttl, stale_s)
        record = Record(data, expires_at, keep_until, tags)
        for tier in self._tiers:
            if isinstance(tier, MemoryTier):
                tier.put(namespace, key, value, data, expires_at, keep_until, tags, now)
            else:
                await tier.store(namespace, key, record, now)
        return True

    async def invalidate(self, namespace: str, key: str) -> None:
        """Drop ``key`` from every tier."""
        self._computations.epoch += 1
        for tier in self._tiers:
            if isinstance(tier, MemoryTier):
                tier.remove(namespace, key)
            else:
                await tier.remove(namespace, key)
        self._events.invalidated(namespace, key=key)

    async def invalidate_namespace(self, namespace: str) -> int:
        """Drop every entry of ``namespace``; returns how many the fullest tier held."""
        self._computations.epoch += 1
        count = 0
        for tier in self._tiers:
            if isinstance(tier, MemoryTier):
                count = max(count, tier.remove_namespace(namespace))
            else:
                count = max(count, await tier.remove_namespace(namespace))
        self._events.invalidated(namespace, count=count)
        return count

    async def invalidate_tag(self, tag: str, namespace: str | None) -> int:
        """Drop every entry tagged ``tag`` (of ``namespace`` only, when given)."""
        self._computations.epoch += 1
        count = 0
        for tier in self._tiers:
            if isinstance(tier, MemoryTier):
                count = max(count, tier.remove_tag(tag, namespace))
            else:
                count = max(count, await tier.remove_tag(tag, namespace))
        self._events.invalidated(namespace or "*", tag=tag, count=count)
        return count
