"""A cached entry as each kind of tier holds it, and its lifetime.

Entry times are wall-clock seconds (``clock.wall()``) in every tier: a SQLite file outlives the
process and a Redis server is shared between processes, so a deadline must mean the same
moment to all of them.

An entry is *fresh* until ``expires_at``; between ``expires_at`` and ``keep_until`` it is
*stale*: a plain read misses it, ``get_or_compute`` may serve it while it recomputes it
(stale-while-revalidate); at ``keep_until`` it is gone. Without a stale window the two are
equal. A tier's own ``ttl_s`` caps ``expires_at`` (the stale window keeps its length after the
cap); its ``tti_s`` ends an entry not read for that long, stale window or not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = [
    "INFINITY",
    "MemoryEntry",
    "Record",
    "check_seconds",
    "check_tags",
    "lifetime",
    "within_tier",
]

INFINITY = math.inf


class MemoryEntry:
    """An entry of a memory tier: the value itself (or its compressed bytes) and its times.

    ``pkey`` is ``(namespace, key)``, made once at insert: the policy and the tag index key on
    it, and a hit does not build a tuple.
    """

    __slots__ = ("accessed_at", "expires_at", "keep_until", "pkey", "size", "tags", "value")

    def __init__(
        self,
        pkey: tuple[str, str],
        value: Any,
        size: int,
        expires_at: float,
        keep_until: float,
        accessed_at: float,
        tags: tuple[str, ...],
    ) -> None:
        self.pkey = pkey
        self.value = value
        self.size = size
        self.expires_at = expires_at
        self.keep_until = keep_until
        self.accessed_at = accessed_at
        self.tags = tags


class Record(NamedTuple):
    """An entry on its way to or from a slow tier: encoded value, deadlines and tags."""

    data: bytes
    expires_at: float
    keep_until: float
    tags: tuple[str, ...] = ()


def lifetime(now: float, ttl_s: float | None, stale_s: float | None) -> tuple[float, float]:
    """``(expires_at, keep_until)`` of an entry written at ``now``; ``None`` means no limit."""
    expires_at = INFINITY if ttl_s is None else now + ttl_s
    return expires_at, expires_at if stale_s is None else expires_at + stale_s


def within_tier(
    expires_at: float, keep_until: float, now: float, ttl_s: float | None
) -> tuple[float, float]:
    """An entry's deadlines in a tier whose own ``ttl_s`` (if any) runs from ``now``."""
    if ttl_s is None or now + ttl_s >= expires_at:
        return expires_at, keep_until
    capped = now + ttl_s
    window_s = 0.0 if expires_at == INFINITY else keep_until - expires_at  # inf - inf is nan
    return capped, capped + window_s


def check_seconds(name: str, value: float | None) -> float | None:
    """A lifetime argument: seconds > 0, or None; infinity means None (forever).

    Raises ``ValueError`` naming the argument and the bad value.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0 or None, got {value!r}")
    return None if math.isinf(value) else float(value)


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags as a tuple of non-empty strs. Raises ``ValueError`` for a str or an empty tag."""
    if tags == ():
        return ()
    if isinstance(tags, str):
        raise ValueError(f"tags must be a list of str, got the str {tags!r}; write [{tags!r}]")
    checked = tuple(tags)
    for tag in checked:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"each tag must be a non-empty str, got {tag!r}")
    return checked
