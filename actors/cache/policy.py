"""Eviction policies: which keys a bounded cache keeps, and which it lets go.

A policy only tracks keys; the cache tier keeps the values. The tier calls ``record_access`` on
every hit (the hot path: a few dictionary operations, plus a sketch update for W-TinyLFU),
``admit`` on every insert (it returns the keys to drop: with W-TinyLFU that may be an earlier
newcomer the admission filter turned away rather than an old key), ``remove`` on invalidation or
expiry, and ``resize`` to shrink under memory pressure. Policies are not thread-safe: one owner
(the tier) calls them.

- ``lru``: least recently used goes first.
- ``fifo``: oldest insert goes first; hits change nothing.
- ``lfu``: fewest hits goes first, the least recent among equals; O(1) per access.
- ``tinylfu``: W-TinyLFU as in Caffeine (Einziger, Friedman, Manes, "TinyLFU: A Highly
  Efficient Cache Admission Policy", ACM ToS 2017): a small LRU window in front of a segmented
  LRU main space; a key leaving the window enters the main space only if a count-min sketch
  says it is used more often than the main space's victim. The window size adapts by hill
  climbing (``sketch.WindowClimber``), so recency-heavy traffic gets a large window (close to
  LRU) and frequency-heavy traffic a small one.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from itertools import chain
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

from .sketch import FrequencySketch, WindowClimber

__all__ = [
    "POLICY_NAMES",
    "EvictionPolicy",
    "FIFOPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "PolicyName",
    "TinyLFUPolicy",
    "make_policy",
]

K = TypeVar("K", bound=Hashable)
PolicyName = Literal["lru", "lfu", "fifo", "tinylfu"]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)
_ABSENT: Any = object()  # a default for dict.pop that no key can be


class EvictionPolicy(Protocol[K]):
    """What a cache tier needs of an eviction policy."""

    @property
    def capacity(self) -> int:
        """The most keys the policy holds."""
        ...

    def record_access(self, key: K) -> None:
        """A hit on ``key``; raises ``KeyError`` if the policy does not hold it."""
        ...

    def admit(self, key: K) -> list[K]:
        """Insert ``key`` (an access if held); returns the keys evicted to make room."""
        ...

    def remove(self, key: K) -> bool:
        """Forget ``key`` (invalidation, expiry); returns whether it was held."""
        ...

    def resize(self, capacity: int) -> list[K]:
        """Change the capacity; returns the keys evicted to fit. Raises ``ValueError`` if < 1."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...

    def __iter__(self) -> Iterator[K]: ...


def _check_capacity(capacity: int) -> int:
    """``capacity`` if it is a positive int; else ``TypeError`` or ``ValueError``."""
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity!r}; a cache holds at least one key")
    return capacity


def _pop_oldest(segment: OrderedDict[K, None], evicted: list[K]) -> None:
    evicted.append(segment.popitem(last=False)[0])


class LRUPolicy(Generic[K]):
    """Evicts the least recently used key. Raises ``ValueError`` if ``capacity`` < 1."""

    __slots__ = ("_capacity", "_order")

    def __init__(self, capacity: int) -> None:
        self._capacity = _check_capacity(capacity)
        self._order: OrderedDict[K, None] = OrderedDict()  # least recent first

    @property
    def capacity(self) -> int:
        """The most keys the policy holds."""
        return self._capacity

    def record_access(self, key: K) -> None:
        """A hit: ``key`` becomes the most recent. Raises ``KeyError`` if not held."""
        self._order.move_to_end(key)

    def admit(self, key: K) -> list[K]:
        """Insert ``key`` (an access if already held); returns the evicted keys."""
        if key in self._order:
            self.record_access(key)
            return []
        evicted = self._shrink_to(self._capacity - 1)
        self._order[key] = None
        return evicted

    def remove(self, key: K) -> bool:
        """Forget ``key``; returns whether it was held."""
        return self._order.pop(key, _ABSENT) is not _ABSENT

    def resize(self, capacity: int) -> list[K]:
        """Change the capacity; returns the keys evicted to fit, oldest first."""
        self._capacity = _check_capacity(capacity)
        return self._shrink_to(capacity)

    def _shrink_to(self, size: int) -> list[K]:
        evicted: list[K] = []
        while len(self._order) > size:
            _pop_oldest(self._order, evicted)
        return evicted

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def __iter__(self) -> Iterator[K]:
        return iter(self._order)


class FIFOPolicy(LRUPolicy[K]):
    """Evicts the oldest inserted key; hits do not reorder. ``ValueError`` if ``capacity`` < 1."""

    __slots__ = ()

    def record_access(self, key: K) -> None:
        """A hit changes nothing in FIFO. Raises ``KeyError`` if ``key`` is not held."""
        if key not in self._order:
            raise KeyError(key)


class LFUPolicy(Generic[K]):
    """Evicts the least frequently used key, the least recent among equals.

    Keys with the same hit count share a bucket kept in recency order, so a hit, an insert and
    an eviction are O(1) (after a ``remove`` empties the lowest bucket, the next eviction scans
    the distinct counts once). Counts start at 1 on insert and are forgotten on eviction.
    Raises ``ValueError`` if ``capacity`` < 1.
    """

    __slots__ = ("_buckets", "_capacity", "_counts", "_min_count")

    def __init__(self, capacity: int) -> None:
        self._capacity = _check_capacity(capacity)
        self._counts: dict[K, int] = {}
        self._buckets: dict[int, OrderedDict[K, None]] = {}  # count -> keys, least recent first
        self._min_count = 0

    @property
    def capacity(self) -> int:
        """The most keys the policy holds."""
        return self._capacity

    def record_access(self, key: K) -> None:
        """A hit: one more use of ``key``. Raises ``KeyError`` if not held."""
        count = self._counts[key]
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]
            if self._min_count == count:
                self._min_count = count + 1
        self._counts[key] = count + 1
        self._bucket(count + 1)[key] = None

    def admit(self, key: K) -> list[K]:
        """Insert ``key`` with one use (an access if already held); returns the evicted keys."""
        if key in self._counts:
            self.record_access(key)
            return []
        evicted = self._shrink_to(self._capacity - 1)
        self._counts[key] = 1
        self._bucket(1)[key] = None
        self._min_count = 1
        return evicted

    def remove(self, key: K) -> bool:
        """Forget ``key``; returns whether it was held."""
        count = self._counts.pop(key, None)
        if count is None:
            return False
        self._drop_from_bucket(count, key)
        return True

    def resize(self, capacity: int) -> list[K]:
        """Change the capacity; returns the keys evicted to fit, least used first."""
        self._capacity = _check_capacity(capacity)
        return self._shrink_to(capacity)

    def _bucket(self, count: int) -> OrderedDict[K, None]:
        bucket = self._buckets.get(count)
        if bucket is None:
            bucket = self._buckets[count] = OrderedDict()
        return bucket

    def _drop_from_bucket(self, count: int, key: K) -> None:
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]  # _min_count may go stale: _shrink_to looks it up again

    def _shrink_to(self, size: int) -> list[K]:
        evicted: list[K] = []
        while len(self._counts) > size:
            if self._min_count not in self._buckets:
                self._min_count = min(self._buckets)
            key = next(iter(self._buckets[self._min_count]))
            del self._counts[key]
            self._drop_from_bucket(self._min_count, key)
            evicted.append(key)
        return evicted

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, key: object) -> bool:
        return key in self._counts

    def __iter__(self) -> Iterator[K]:
        return iter(self._counts)


_WINDOW_FRACTION = 0.01  # W-TinyLFU's initial window, of capacity (Caffeine's)
_PROTECTED_FRACTION = 0.80  # of the main space (Caffeine's)
_ADMIT_WARM_THRESHOLD = 6  # a warm candidate that loses a tie gets a 1/128 lottery ticket
_CLIMB_WARMUP = 0.5  # the climber waits until the sketch has seen half a sample


class TinyLFUPolicy(Generic[K]):
    """W-TinyLFU with an adaptive window, after Caffeine.

    New keys enter an LRU window (``window_fraction`` of the capacity at first). When the
    window overflows, its oldest key meets the probation segment's oldest key: the one the
    frequency sketch deems used more often stays. A hit in probation promotes to the protected
    segment (80% of the main space). With ``adaptive``, a ``WindowClimber`` moves the boundary
    between window and main space. ``seed`` salts the sketch's hash and the tie lottery.

    Raises ``ValueError`` if ``capacity`` < 1 or ``window_fraction`` is not within [0, 1].
    """

    __slots__ = (
        "_capacity",
        "_climber",
        "_probation",
        "_protected",
        "_protected_max",
        "_random",
        "_sketch",
        "_window",
        "_window_max",
    )

    def __init__(
        self,
        capacity: int,
        *,
        seed: int = 0,
        window_fraction: float = _WINDOW_FRACTION,
        adaptive: bool = True,
    ) -> None:
        self._capacity = _check_capacity(capacity)
        if not 0.0 <= window_fraction <= 1.0:
            raise ValueError(f"window_fraction must be within [0, 1], got {window_fraction!r}")
        self._random = random.Random(seed)
        self._sketch = FrequencySketch(capacity, seed=seed)
        self._window: OrderedDict[K, None] = OrderedDict()  # each segment: least recent first
        self._probation: OrderedDict[K, None] = OrderedDict()
        self._protected: OrderedDict[K, None] = OrderedDict()
        self._window_max = min(capacity, max(1, round(capacity * window_fraction)))
        self._protected_max = self._protected_share(self._window_max)
        self._climber: WindowClimber[K] | None = WindowClimber(capacity) if adaptive else None

    def _protected_share(self, window_max: int) -> int:
        return int(_PROTECTED_FRACTION * (self._capacity - window_max))

    @property
    def capacity(self) -> int:
        """The most keys the policy holds."""
        return self._capacity

    @property
    def window_capacity(self) -> int:
        """The current size limit of the admission window (moved by the climber)."""
        return self._window_max

    @property
    def sketch(self) -> FrequencySketch:
        """The frequency sketch that arbitrates admission."""
        return self._sketch

    def record_access(self, key: K) -> None:
        """A hit on ``key``. Raises ``KeyError`` if not held."""
        if key in self._protected:
            self._protected.move_to_end(key)
        elif key in self._window:
            self._window.move_to_end(key)
        else:
            self._promote(key)
        self._sketch.increment(key)

    def admit(self, key: K) -> list[K]:
        """Insert ``key`` into the window (an access if already held); returns evicted keys."""
        if key in self:
            self.record_access(key)
            return []
        self._sketch.increment(key)
        self._window[key] = None
        evicted = self._evict() if len(self._window) > self._window_max else []
        climber = self._climber
        if climber is not None and climber.record_miss(key):
            sketch = self._sketch
            warm = sketch.resets > 0 or sketch.additions >= _CLIMB_WARMUP * sketch.sample_size
            delta = climber.adjustment(warm=warm)
            if delta:
                self._set_window(max(1, min(self._capacity - 1, self._window_max + delta)))
        return evicted

    def remove(self, key: K) -> bool:
        """Forget ``key``; returns whether it was held. Its frequency history stays."""
        for segment in (self._window, self._probation, self._protected):
            if segment.pop(key, _ABSENT) is not _ABSENT:
                return True
        return False

    def resize(self, capacity: int) -> list[K]:
        """Change the capacity; returns the evicted keys. The learned window fraction and the
        frequency history stay; the climber starts over.

        Evicts from probation first (the coldest segment), then protected, then the window.
        Raises ``ValueError`` if ``capacity`` < 1.
        """
        fraction = self._window_max / self._capacity
        self._capacity = _check_capacity(capacity)
        self._sketch.resize(capacity)
        if self._climber is not None:
            self._climber = WindowClimber(capacity)
        self._window_max = min(capacity, max(1, round(capacity * fraction)))
        self._protected_max = self._protected_share(self._window_max)
        self._settle_segments()
        evicted: list[K] = []
        while len(self) > capacity:
            _pop_oldest(self._probation or self._protected or self._window, evicted)
        return evicted

    def _promote(self, key: K) -> None:
        del self._probation[key]  # KeyError if the key is not held at all
        self._protected[key] = None
        if len(self._protected) > self._protected_max:
            self._probation[self._protected.popitem(last=False)[0]] = None

    def _evict(self) -> list[K]:
        """Move window overflow to probation, each candidate dueling probation's victim."""
        evicted: list[K] = []
        window, probation, climber = self._window, self._probation, self._climber
        while len(window) > self._window_max:
            candidate = window.popitem(last=False)[0]
            probation[candidate] = None
            if len(window) + len(probation) + len(self._protected) <= self._capacity:
                if climber is not None:
                    climber.window_departure(None)
                continue
            victim = next(iter(probation))
            admitted = self._admits(candidate, victim)
            loser = victim if admitted else candidate
            del probation[loser]
            evicted.append(loser)
            if climber is not None:
                climber.window_departure(None if admitted else candidate)
                if admitted:
                    climber.main_eviction(victim)
        return evicted

    def _admits(self, candidate: K, victim: K) -> bool:
        """TinyLFU: let ``candidate`` in at ``victim``'s expense if it is used more often."""
        candidate_count = self._sketch.estimate(candidate)
        if candidate_count > self._sketch.estimate(victim):
            return True
        # A small lottery for warm candidates defeats hash flooding: an attacker cannot keep
        # a hot victim in place forever by colliding with it (Caffeine does the same).
        return candidate_count >= _ADMIT_WARM_THRESHOLD and self._random.getrandbits(7) == 0

    def _set_window(self, window_max: int) -> None:
        """Move the window/main boundary; the main space keeps its 20/80 split."""
        self._window_max = window_max
        self._protected_max = self._protected_share(window_max)
        self._settle_segments()
        # New window room is filled with main's coldest keys (as Caffeine does), since only a
        # window overflow evicts: the cache stays within capacity.
        window = self._window
        while len(window) < window_max and (self._probation or self._protected):
            window[(self._probation or self._protected).popitem(last=False)[0]] = None

    def _settle_segments(self) -> None:
        """Move overflow down: protected to probation, window to probation, oldest first."""
        while len(self._protected) > self._protected_max:
            self._probation[self._protected.popitem(last=False)[0]] = None
        while len(self._window) > self._window_max:
            self._probation[self._window.popitem(last=False)[0]] = None

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def __contains__(self, key: object) -> bool:
        return key in self._protected or key in self._window or key in self._probation

    def __iter__(self) -> Iterator[K]:
        return chain(self._window, self._probation, self._protected)


def make_policy(name: PolicyName, capacity: int, *, seed: int = 0) -> EvictionPolicy[Any]:
    """The policy called ``name`` holding at most ``capacity`` keys.

    ``seed`` makes W-TinyLFU's hashing and tie lottery reproducible; the others ignore it.
    Raises ``ValueError`` for an unknown ``name`` or a ``capacity`` < 1.
    """
    if name == "lru":
        return LRUPolicy(capacity)
    if name == "lfu":
        return LFUPolicy(capacity)
    if name == "fifo":
        return FIFOPolicy(capacity)
    if name == "tinylfu":
        return TinyLFUPolicy(capacity, seed=seed)
    raise ValueError(f"policy name must be one of {', '.join(POLICY_NAMES)}; got {name!r}")
