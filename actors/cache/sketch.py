"""The evidence W-TinyLFU decides by: who gets in (a frequency sketch), how big the window is.

``FrequencySketch`` is a count-min sketch: four rows of small saturating counters (0..15, as
Caffeine's 4-bit counters) estimate how often a key was seen recently, in 16 bytes per cached
entry whatever the number of distinct keys. An estimate is the minimum of the key's four
counters: it may overcount (collisions) but never undercounts a key seen at most 15 times since
the last aging. Aging halves every counter after ``sample_size`` additions (10 per entry of
capacity), so the sketch forgets old popularity and follows a changing workload. Two choices
serve accuracy on the long tail of keys seen once or twice, where admission is decided: rows
are four times the capacity (a power of two; Caffeine spends the same 16 counters per entry),
and updates are conservative (only the counters at the minimum are raised).

``WindowClimber`` is the hill climber that sizes the admission window; see its docstring.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["MAX_COUNT", "FrequencySketch", "WindowClimber"]

K = TypeVar("K", bound=Hashable)

MAX_COUNT = 15
_DEPTH = 4
_HALVE = bytes(count >> 1 for count in range(256))
_SAMPLE_FACTOR = 10  # aging period in additions per entry of capacity (the TinyLFU paper's W)

# The climber's tuning, chosen on the LIRS/ARC traces and Zipf traces of bench/cache_hit_rate.
_CLIMB_SAMPLE_FACTOR = 0.25  # misses per sample, per entry of capacity
_CLIMB_STEP_FRACTION = 0.03  # first step, of capacity
_CLIMB_MAX_STEP_FRACTION = 0.25
_CLIMB_STEP_GROWTH = 1.25  # the same direction again: step up
_CLIMB_STEP_DECAY = 0.5  # the direction flipped (we overshot): step down
_CLIMB_SIGNIFICANCE = 3.0  # standard deviations of vote margin before the window moves
_CLIMB_MAX_STRENGTH = 4.0  # a move is the step times the margin's strength, at most this
_GHOST_FRACTION = 0.0625  # how far past each boundary the ghosts look, of capacity


def _table_width(capacity: int) -> int:
    """Counters per row: the power of two at or above ``4 * capacity`` (at least 16)."""
    return max(16, 1 << (4 * capacity - 1).bit_length())


def _check_capacity(capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity!r}; size it to the cache")


class FrequencySketch:
    """Estimates recent access counts of keys; counters age by halving.

    ``capacity`` is the number of entries of the cache the sketch serves: it sizes the rows and
    the aging period. ``seed`` salts the hash, so sketches with different seeds collide on
    different keys. Raises ``ValueError`` if ``capacity`` < 1.
    """

    __slots__ = ("_mask", "_rows", "_salt", "additions", "resets", "sample_size")

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        _check_capacity(capacity)
        width = _table_width(capacity)
        self._mask = width - 1
        self._salt = seed
        self._rows = [bytearray(width) for _ in range(_DEPTH)]
        self.sample_size = _SAMPLE_FACTOR * capacity
        self.additions = 0  # since the last aging
        self.resets = 0

    @property
    def width(self) -> int:
        """Counters per row."""
        return self._mask + 1

    def increment(self, key: Hashable) -> None:
        """Count one access of ``key``; age the whole sketch every ``sample_size`` additions."""
        # Hashing a (salt, key) tuple mixes well, in C; double hashing then gives one index
        # per row (masking makes negative hashes non-negative). Inlined: this runs on every hit.
        mask = self._mask
        mixed = hash((self._salt, key))
        step = (mixed >> 32) | 1
        a = mixed & mask
        b = (a + step) & mask
        c = (b + step) & mask
        d = (c + step) & mask
        row0, row1, row2, row3 = self._rows
        count = min(row0[a], row1[b], row2[c], row3[d])
        if count == MAX_COUNT:
            return
        # Conservative update: a counter above the minimum already counts other keys too.
        count += 1
        if row0[a] < count:
            row0[a] = count
        if row1[b] < count:
            row1[b] = count
        if row2[c] < count:
            row2[c] = count
        if row3[d] < count:
            row3[d] = count
        self.additions += 1
        if self.additions >= self.sample_size:
            self.age()

    def estimate(self, key: Hashable) -> int:
        """The recent access count of ``key`` (0..15); never below the true count before aging."""
        mask = self._mask
        mixed = hash((self._salt, key))
        step = (mixed >> 32) | 1
        a = mixed & mask
        b = (a + step) & mask
        c = (b + step) & mask
        row0, row1, row2, row3 = self._rows
        return min(row0[a], row1[b], row2[c], row3[(c + step) & mask])

    def resize(self, capacity: int) -> None:
        """Serve a cache of ``capacity`` entries from now on; every estimate is kept.

        The aging period follows the capacity. Rows widen when the capacity needs it (each row
        repeated: with power-of-two widths a key's new slots hold its old counts) but never
        narrow, which would cost a pass over every counter. Raises ``ValueError`` if < 1.
        """
        _check_capacity(capacity)
        width = _table_width(capacity)
        if width > self.width:
            repeats = width // self.width
            self._rows = [row * repeats for row in self._rows]
            self._mask = width - 1
        self.sample_size = _SAMPLE_FACTOR * capacity

    def age(self) -> None:
        """Halve every counter (and the addition count), forgetting old popularity."""
        self._rows = [row.translate(_HALVE) for row in self._rows]
        self.additions //= 2
        self.resets += 1


class _Ghosts(Generic[K]):
    """Keys recently pushed across one boundary: did more room there lose a hit?

    ``tick`` counts a departure, ``add`` remembers a departed key, ``hit`` says (once) whether a
    key departed within the last ``depth`` departures.
    """

    __slots__ = ("_departed", "_departures", "_depth")

    def __init__(self, depth: int) -> None:
        self._depth = depth
        self._departures = 0
        self._departed: OrderedDict[K, int] = OrderedDict()  # key -> departure number

    def tick(self) -> None:
        self._departures += 1

    def add(self, key: K) -> None:
        departed = self._departed
        departed.pop(key, None)
        departed[key] = self._departures
        horizon = self._departures - self._depth
        while next(iter(departed.values())) <= horizon:
            departed.popitem(last=False)

    def hit(self, key: K) -> bool:
        departure = self._departed.pop(key, None)
        return departure is not None and departure > self._departures - self._depth


class WindowClimber(Generic[K]):
    """Hill climbing on the size of W-TinyLFU's window, steered by ghost hits.

    Caffeine's climber compares the hit rates of consecutive samples; on real traces that rate
    swings between samples by far more than the window's effect (sprite: 20 points between
    5,000-request samples), so it mostly chases the workload. This one compares, within the
    same requests, the misses a window ``depth`` entries larger would have hit (keys the
    admission filter just rejected) with those a main space ``depth`` entries larger would
    have hit (victims just evicted), and steps toward the larger once the margin is
    significant (votes are counted like Poisson events; below the threshold the evidence
    carries over, halved, to the next sample). The step grows while the direction holds and
    halves when it flips, so the window settles and can still follow a changed workload.

    The policy reports ``window_departure`` / ``main_eviction`` as keys leave, and
    ``record_miss`` on every miss; when that returns True it asks for ``adjustment``.
    """

    __slots__ = (
        "_direction",
        "_main_ghosts",
        "_max_step",
        "_sample_left",
        "_sample_size",
        "_window_ghosts",
        "main_votes",
        "step",
        "window_votes",
    )

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        depth = max(1, round(_GHOST_FRACTION * capacity))
        self._window_ghosts: _Ghosts[K] = _Ghosts(depth)
        self._main_ghosts: _Ghosts[K] = _Ghosts(depth)
        self._sample_size = self._sample_left = max(1, round(_CLIMB_SAMPLE_FACTOR * capacity))
        self.step = max(1.0, _CLIMB_STEP_FRACTION * capacity)
        self._max_step = max(1.0, _CLIMB_MAX_STEP_FRACTION * capacity)
        self._direction = 0
        self.window_votes = self.main_votes = 0

    def window_departure(self, rejected: K | None) -> None:
        """A key left the window; ``rejected`` is it when the admission filter turned it away."""
        self._window_ghosts.tick()
        if rejected is not None:
            self._window_ghosts.add(rejected)

    def main_eviction(self, victim: K) -> None:
        """The main space evicted ``victim`` to admit a window candidate."""
        self._main_ghosts.tick()
        self._main_ghosts.add(victim)

    def record_miss(self, key: K) -> bool:
        """Count a miss on ``key``; True when a sample is complete."""
        if self._window_ghosts.hit(key):
            self.window_votes += 1
        elif self._main_ghosts.hit(key):
            self.main_votes += 1
        self._sample_left -= 1
        return self._sample_left == 0

    def adjustment(self, *, warm: bool = True) -> int:
        """End a sample: the signed change in window entries it calls for (often 0).

        ``warm=False`` discards the sample: while the frequency sketch is still empty every
        candidate ties with its victim and is rejected, which only looks like a case for a
        larger window.
        """
        self._sample_left = self._sample_size
        window_votes, main_votes = self.window_votes, self.main_votes
        total = window_votes + main_votes
        strength = (window_votes - main_votes) / math.sqrt(total) if total else 0.0
        if warm and abs(strength) <= _CLIMB_SIGNIFICANCE:
            self.window_votes, self.main_votes = window_votes // 2, main_votes // 2
            return 0
        self.window_votes = self.main_votes = 0
        if not warm:
            return 0
        direction = 1 if strength > 0 else -1
        if direction == self._direction:
            self.step = min(self._max_step, self.step * _CLIMB_STEP_GROWTH)
        elif self._direction:
            self.step = max(1.0, self.step * _CLIMB_STEP_DECAY)
        self._direction = direction
        return direction * round(self.step * min(_CLIMB_MAX_STRENGTH, abs(strength)))
