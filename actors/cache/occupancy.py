"""How full a bounded tier is, in entries and in bytes, and which keys go when it is too full.

An eviction policy (``policy.py``) counts keys; a tier is also bounded in bytes. ``Occupancy``
joins the two: the policy's capacity is the tier's *entry budget*. It starts at ``max_entries``
(or, bounded by bytes only, a guess from ``max_bytes``); when the bytes run over, the policy is
shrunk to fit, so that it picks the victims by its own rules (recency, frequency, admission)
and, from then on, evicts by count at the size the values turned out to have. ``regrow`` (each
sweep) hands entries back when the bytes leave room, at most doubling per call, up to the
ceiling (``max_entries``, or ``UNBOUNDED_ENTRIES`` without one). Shrinking a W-TinyLFU policy
restarts its window climber, which is why the budget does not follow every value.

The tier stores the values; whenever the occupancy lets a key go it calls the tier's ``drop``
callback, which forgets the value and returns its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .policy import EvictionPolicy, PolicyName, make_policy

__all__ = ["UNBOUNDED_ENTRIES", "Dropped", "Occupancy"]

K = TypeVar("K", bound=Hashable)
Dropped = list[tuple[Any, str]]
"""Keys let go and why: ``entries`` (over max_entries), ``bytes`` (over max_bytes, or over the
entry budget the bytes left), ``oversize`` (larger than the whole tier), ``shrink``."""

UNBOUNDED_ENTRIES = 1 << 20  # the entry budget's ceiling of a tier bounded by bytes only
_BYTES_PER_ENTRY_GUESS = 1024  # a bytes-only tier's first entry budget is max_bytes / this
_MIN_BUDGET = 64
_REGROW_BELOW = 0.9  # the budget grows while the bytes stay under this share of max_bytes


class Occupancy(Generic[K]):
    """A tier's keys under its policy, counted in entries and bytes.

    Raises ``ValueError`` for a limit below 1 or an unknown policy name.
    """

    __slots__ = ("bytes", "max_bytes", "max_entries", "policy")

    def __init__(
        self,
        policy: PolicyName,
        *,
        max_entries: int | None,
        max_bytes: int | None,
        seed: int = 0,
    ) -> None:
        _check_limits(max_entries, max_bytes)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.policy: EvictionPolicy[K] = make_policy(policy, self._first_budget(), seed=seed)

    def _first_budget(self) -> int:
        if self.max_entries is not None:
            return self.max_entries
        guess = (self.max_bytes or 0) // _BYTES_PER_ENTRY_GUESS
        return max(_MIN_BUDGET, min(UNBOUNDED_ENTRIES, guess))

    @property
    def ceiling(self) -> int:
        """The most entries the budget may grow to."""
        return self.max_entries if self.max_entries is not None else UNBOUNDED_ENTRIES

    def __len__(self) -> int:
        return len(self.policy)

    def admit(self, key: K, size: int, replaced_size: int, drop: Callable[[K], int]) -> Dropped:
        """Count ``key`` (just stored, ``size`` bytes, replacing a value of ``replaced_size``);
        returns the keys let go, each already dropped. ``key`` itself is among them when it is
        larger than the whole tier or the policy turned it away."""
        self.bytes -= replaced_size
        if self.max_bytes is not None and size > self.max_bytes:
            self.policy.remove(key)
            drop(key)
            return [(key, "oversize")]
        self.bytes += size
        # Below its ceiling the entry budget is what the bytes allowed: evictions are for bytes.
        cause = "entries" if self.policy.capacity >= self.ceiling else "bytes"
        dropped: Dropped = [(k, cause) for k in self.policy.admit(key)]
        for k, _ in dropped:
            self.bytes -= drop(k)
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            dropped += self._shed_bytes(drop)
        return dropped

    def forget(self, key: K, size: int) -> None:
        """``key`` (of ``size`` bytes) left the tier by other means: expiry, invalidation."""
        if self.policy.remove(key):
            self.bytes -= size

    def _shed_bytes(self, drop: Callable[[K], int]) -> Dropped:
        """Shrink the entry budget until the bytes fit; the policy picks the victims."""
        assert self.max_bytes is not None
        dropped: Dropped = []
        while self.bytes > self.max_bytes and len(self.policy):
            if len(self.policy) == 1:  # one value over the limit (a lowered one): it goes
                dropped.append((self._drop_last(drop), "bytes"))
                break
            average = self.bytes / len(self.policy)
            excess = math.ceil((self.bytes - self.max_bytes) / average)
            budget = max(1, len(self.policy) - max(1, excess))
            for k in self.policy.resize(budget):
                self.bytes -= drop(k)
                dropped.append((k, "bytes"))
        return dropped

    def shrink(self, fraction: float, drop: Callable[[K], int]) -> Dropped:
        """Let ``fraction`` (0 < f <= 1) of the entries go, by the policy's choice; the entry
        budget stays that low until ``regrow``. Raises ``ValueError`` for a bad fraction."""
        if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be within (0, 1], got {fraction!r}")
        held = len(self.policy)
        keep = held - math.ceil(held * fraction)
        if held == 0:
            return []
        dropped: Dropped = []
        for k in self.policy.resize(max(1, keep)):
            self.bytes -= drop(k)
            dropped.append((k, "shrink"))
        if keep == 0 and len(self.policy):  # a policy holds one key at least: let it go too
            dropped.append((self._drop_last(drop), "shrink"))
        return dropped

    def _drop_last(self, drop: Callable[[K], int]) -> K:
        (last,) = list(self.policy)
        self.policy.remove(last)
        self.bytes -= drop(last)
        return last

    def regrow(self) -> None:
        """Give the budget back while the bytes leave room: at most double it per call."""
        policy = self.policy
        capacity = policy.capacity
        if capacity >= self.ceiling or len(policy) < capacity:
            return  # at the ceiling, or not full by count: more room would not be used
        if self.max_bytes is not None and self.bytes >= _REGROW_BELOW * self.max_bytes:
            return
        grown = capacity * 2
        if self.max_bytes is not None and self.bytes > 0:
            grown = min(grown, int(capacity * _REGROW_BELOW * self.max_bytes / self.bytes))
        policy.resize(min(self.ceiling, max(capacity + 1, grown)))

    def set_limits(
        self, max_entries: int | None, max_bytes: int | None, drop: Callable[[K], int]
    ) -> Dropped:
        """New limits (a reload); returns what had to go to fit them."""
        _check_limits(max_entries, max_bytes)
        self.max_entries, self.max_bytes = max_entries, max_bytes
        budget = min(self.policy.capacity, self.ceiling) if max_entries is None else max_entries
        dropped: Dropped = [(k, "entries") for k in self.policy.resize(budget)]
        for k, _ in dropped:
            self.bytes -= drop(k)
        if max_bytes is not None and self.bytes > max_bytes:
            dropped += self._shed_bytes(drop)
        return dropped


def _check_limits(max_entries: int | None, max_bytes: int | None) -> None:
    for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {value!r}")
