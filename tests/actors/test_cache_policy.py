"""Eviction policies (lru, lfu, fifo, W-TinyLFU), the frequency sketch and the window climber."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import TypeVar

import pytest

from actors.cache.policy import (
    POLICY_NAMES,
    EvictionPolicy,
    FIFOPolicy,
    LFUPolicy,
    LRUPolicy,
    TinyLFUPolicy,
    make_policy,
)
from actors.cache.sketch import MAX_COUNT, FrequencySketch, WindowClimber

K = TypeVar("K", bound=Hashable)


def replay(policy: EvictionPolicy[K], keys: Iterable[K]) -> int:
    """Feed requests as a cache would (hit: record_access, miss: admit); returns the hits."""
    hits = 0
    for key in keys:
        if key in policy:
            policy.record_access(key)
            hits += 1
        else:
            policy.admit(key)
    return hits


def admit_all(policy: EvictionPolicy[K], keys: Iterable[K]) -> list[K]:
    """Admit every key; returns everything evicted, in order."""
    evicted: list[K] = []
    for key in keys:
        evicted.extend(policy.admit(key))
    return evicted


# --- eviction order -------------------------------------------------------------------------


def test_lru_evicts_least_recently_used() -> None:
    """LRU evicts the key whose last use is oldest; a hit refreshes a key."""
    policy = LRUPolicy[str](3)
    admit_all(policy, "abc")
    policy.record_access("a")
    assert policy.admit("d") == ["b"]
    assert policy.admit("e") == ["c"]
    assert list(policy) == ["a", "d", "e"]


def test_lru_admit_of_held_key_is_an_access() -> None:
    """Admitting a key already held evicts nothing and makes it the most recent."""
    policy = LRUPolicy[str](2)
    admit_all(policy, "ab")
    assert policy.admit("a") == []
    assert policy.admit("c") == ["b"]


def test_fifo_ignores_hits() -> None:
    """FIFO evicts in insertion order whatever the hits."""
    policy = FIFOPolicy[str](3)
    admit_all(policy, "abc")
    for _ in range(5):
        policy.record_access("a")
    assert policy.admit("a") == []
    assert policy.admit("d") == ["a"]
    assert policy.admit("e") == ["b"]


def test_lfu_evicts_least_frequently_used() -> None:
    """LFU evicts the key with the fewest uses."""
    policy = LFUPolicy[str](3)
    admit_all(policy, "abc")
    for key in "aab":
        policy.record_access(key)
    assert policy.admit("d") == ["c"]
    assert policy.admit("e") == ["d"]  # d has one use, as the newcomer e will


def test_lfu_breaks_ties_by_recency() -> None:
    """Among keys with equal use counts, LFU evicts the least recently used."""
    policy = LFUPolicy[str](3)
    admit_all(policy, "abc")
    for key in "cab":
        policy.record_access(key)
    assert policy.admit("d") == ["c"]
    assert policy.admit("e") == ["d"]
    policy.record_access("e")
    assert policy.admit("f") == ["a"]


def test_lfu_forgets_counts_of_removed_keys() -> None:
    """A key readmitted after leaving starts again from one use."""
    policy = LFUPolicy[str](2)
    admit_all(policy, "ab")
    for _ in range(3):
        policy.record_access("a")
    policy.remove("a")
    policy.admit("a")
    policy.record_access("b")
    assert policy.admit("c") == ["a"]


def test_tinylfu_rejects_a_cold_candidate_to_keep_hot_keys() -> None:
    """W-TinyLFU's admit may evict the window's cold candidate instead of a hot main key."""
    policy = TinyLFUPolicy[int](100, adaptive=False)
    assert policy.window_capacity == 1
    hot = list(range(100))
    for _ in range(3):
        replay(policy, hot)
    assert policy.admit(1000) == [99]  # the window's previous occupant won its duel
    assert policy.admit(1001) == [1000]  # the cold newcomer loses, no hot key is evicted
    assert set(hot[:99]) <= set(policy)


def test_tinylfu_keeps_frequent_key_through_a_scan() -> None:
    """A scan of one-hit keys flushes a frequently used key out of LRU but not out of W-TinyLFU."""
    trace = [f"hot{i % 10}" for i in range(200)] + [f"scan{i}" for i in range(800)]
    lru, tinylfu = LRUPolicy[str](100), TinyLFUPolicy[str](100)
    replay(lru, trace)
    replay(tinylfu, trace)
    assert not any(f"hot{i}" in lru for i in range(10))
    assert all(f"hot{i}" in tinylfu for i in range(10))


def test_tinylfu_is_reproducible_for_a_seed() -> None:
    """Two W-TinyLFU policies with the same seed evict the same keys on the same trace."""
    rng = random.Random(7)
    trace = [int(rng.paretovariate(1.0)) for _ in range(5000)]
    runs = []
    for _ in range(2):
        policy = TinyLFUPolicy[int](50, seed=3)
        runs.append((replay(policy, trace), sorted(policy)))
    assert runs[0] == runs[1]


# --- remove, record_access errors, resize ---------------------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_remove_forgets_key(name: str) -> None:
    """remove drops a held key (True), is a no-op for an absent one (False), frees its room."""
    policy = make_policy(name, 3)  # type: ignore[arg-type]
    admit_all(policy, "abc")
    assert policy.remove("b") is True
    assert policy.remove("b") is False
    assert "b" not in policy
    assert len(policy) == 2
    assert policy.admit("d") == []
    assert set(policy) == {"a", "c", "d"}


def test_tinylfu_remove_from_every_segment() -> None:
    """remove finds a key in the window, in probation and in protected."""
    policy = TinyLFUPolicy[int](100, adaptive=False)
    admit_all(policy, range(50))
    policy.record_access(10)  # probation -> protected
    window_key = 49
    assert policy.remove(window_key) and policy.remove(0) and policy.remove(10)
    assert not {0, 10, 49} & set(policy)
    assert len(policy) == 47


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_record_access_of_absent_key_raises(name: str) -> None:
    """record_access on a key the policy does not hold raises KeyError."""
    policy = make_policy(name, 3)  # type: ignore[arg-type]
    policy.admit("a")
    with pytest.raises(KeyError):
        policy.record_access("z")


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_resize_shrinks_and_grows(name: str) -> None:
    """resize evicts down to a smaller capacity and a larger one admits without evicting."""
    policy = make_policy(name, 20)  # type: ignore[arg-type]
    admit_all(policy, range(20))
    evicted = policy.resize(5)
    assert len(evicted) == 15 and len(policy) == 5 and policy.capacity == 5
    assert not set(evicted) & set(policy)
    assert len(admit_all(policy, range(100, 110))) == 10
    assert len(policy) == 5
    assert policy.resize(50) == []
    assert admit_all(policy, range(200, 245)) == []
    assert len(policy) == 50


def test_lru_resize_evicts_least_recent_first() -> None:
    """Shrinking an LRU evicts its least recently used keys, oldest first."""
    policy = LRUPolicy[str](4)
    admit_all(policy, "abcd")
    policy.record_access("a")
    assert policy.resize(2) == ["b", "c"]


def test_tinylfu_resize_keeps_window_fraction_and_history() -> None:
    """W-TinyLFU's resize scales the window with the capacity, widens the sketch to fit the
    new capacity and keeps what the sketch knew."""
    policy = TinyLFUPolicy[int](1000, window_fraction=0.2, adaptive=False)
    replay(policy, [*range(1000), *[7] * 9])
    policy.resize(100)
    assert policy.window_capacity == 20
    policy.resize(100_000)
    assert policy.sketch.width >= 100_000 and policy.sketch.sample_size == 1_000_000
    assert policy.sketch.estimate(7) >= 10


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_resize_to_bad_capacity_raises_and_changes_nothing(name: str) -> None:
    """resize to a capacity below 1 raises ValueError naming capacity; the policy is intact."""
    policy = make_policy(name, 3)  # type: ignore[arg-type]
    admit_all(policy, "abc")
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        policy.resize(0)
    assert policy.capacity == 3 and set(policy) == {"a", "b", "c"}


# --- construction errors --------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("capacity", [0, -5])
def test_make_policy_rejects_capacity_below_one(name: str, capacity: int) -> None:
    """A capacity below 1 raises ValueError naming the parameter and the value."""
    with pytest.raises(ValueError, match=rf"capacity must be >= 1, got {capacity}"):
        make_policy(name, capacity)  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [2.5, "10", True])
def test_make_policy_rejects_non_int_capacity(capacity: object) -> None:
    """A capacity that is not an int raises TypeError naming the parameter."""
    with pytest.raises(TypeError, match="capacity must be an int"):
        make_policy("lru", capacity)  # type: ignore[arg-type]


def test_make_policy_rejects_unknown_name() -> None:
    """An unknown policy name raises ValueError listing the known ones."""
    with pytest.raises(ValueError, match="policy name must be one of lru, lfu, fifo, tinylfu"):
        make_policy("arc", 10)  # type: ignore[arg-type]


def test_make_policy_builds_each_policy() -> None:
    """make_policy returns the class named, with the capacity given."""
    classes = {"lru": LRUPolicy, "lfu": LFUPolicy, "fifo": FIFOPolicy, "tinylfu": TinyLFUPolicy}
    for name, cls in classes.items():
        policy = make_policy(name, 7)  # type: ignore[arg-type]
        assert type(policy) is cls and policy.capacity == 7


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_tinylfu_rejects_window_fraction_out_of_range(fraction: float) -> None:
    """A window_fraction outside [0, 1] raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match="window_fraction must be within"):
        TinyLFUPolicy(10, window_fraction=fraction)


def test_sketch_rejects_capacity_below_one() -> None:
    """A sketch for a capacity below 1 raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        FrequencySketch(0)


# --- randomized invariants ------------------------------------------------------------------


class Reference:
    """A slow, obviously right LRU/FIFO/LFU to compare the real ones against."""

    def __init__(self, kind: str, capacity: int) -> None:
        self.kind, self.capacity = kind, capacity
        self.keys: OrderedDict[int, int] = OrderedDict()  # key -> uses, least recent first

    def access(self, key: int) -> None:
        self.keys[key] += 1
        if self.kind != "fifo":
            self.keys.move_to_end(key)

    def shrink_to(self, size: int) -> None:
        while len(self.keys) > size:
            if self.kind == "lfu":
                victim = min(self.keys, key=lambda k: self.keys[k])  # first = least recent
            else:
                victim = next(iter(self.keys))
            del self.keys[victim]

    def admit(self, key: int) -> None:
        self.shrink_to(self.capacity - 1)
        self.keys[key] = 1


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_keep_invariants(name: str, seed: int) -> None:
    """Under random admits, hits, removes and resizes the held set matches what was admitted
    minus what was evicted or removed, never exceeds capacity, and (lru/fifo/lfu) equals a
    reference model's."""
    rng = random.Random(seed)
    capacity = rng.randint(1, 12)
    policy = make_policy(name, capacity, seed=seed)  # type: ignore[arg-type]
    reference = Reference(name, capacity)  # W-TinyLFU has no simple model: invariants only
    held: set[int] = set()
    for _ in range(3000):
        key, roll = int(rng.paretovariate(0.8)) % 40, rng.random()
        if roll < 0.05:
            assert policy.remove(key) is (key in held)
            held.discard(key)
            reference.keys.pop(key, None)
        elif roll < 0.07:
            capacity = rng.randint(1, 12)
            evicted = policy.resize(capacity)
            assert set(evicted) <= held
            held -= set(evicted)
            reference.capacity = capacity
            reference.shrink_to(capacity)
        elif key in held:
            policy.record_access(key)
            if name != "tinylfu":
                reference.access(key)
        else:
            evicted = policy.admit(key)
            assert key not in evicted or name == "tinylfu"
            held |= {key}
            held -= set(evicted)
            reference.admit(key)
        assert set(policy) == held and len(policy) == len(held) <= capacity
        assert all(k in policy for k in held)
        if name != "tinylfu":
            assert set(reference.keys) == held


# --- the frequency sketch -------------------------------------------------------------------


def test_sketch_never_undercounts_before_aging() -> None:
    """Every estimate is at least the key's true count (up to 15) until the sketch ages."""
    sketch = FrequencySketch(64, seed=5)
    rng = random.Random(5)
    counts: dict[int, int] = {}
    for _ in range(sketch.sample_size - 1):
        key = rng.randrange(400)
        counts[key] = counts.get(key, 0) + 1
        sketch.increment(key)
    assert sketch.resets == 0
    assert all(sketch.estimate(k) >= min(c, MAX_COUNT) for k, c in counts.items())
    exact = sum(sketch.estimate(k) == min(c, MAX_COUNT) for k, c in counts.items())
    assert exact >= 0.8 * len(counts)  # collisions overcount only a few


def test_sketch_saturates_at_max_count() -> None:
    """A counter stops at 15 however often the key is seen."""
    sketch = FrequencySketch(100)
    for _ in range(40):
        sketch.increment("hot")
    assert sketch.estimate("hot") == MAX_COUNT
    assert sketch.estimate("never") == 0


def test_sketch_ages_after_sample_size_additions() -> None:
    """The sketch halves its counters when the sample_size-th addition is counted."""
    sketch = FrequencySketch(10)
    assert sketch.sample_size == 100
    for _ in range(12):
        sketch.increment("a")
    filler = 0
    while sketch.additions < sketch.sample_size - 1:
        sketch.increment(f"filler{filler}")
        filler += 1
    assert sketch.resets == 0
    before = sketch.estimate("a")
    assert before >= 12
    sketch.increment("a")  # the hundredth addition
    assert sketch.resets == 1 and sketch.additions == 50
    assert sketch.estimate("a") == (before + 1) // 2


def test_sketch_resize_keeps_every_estimate() -> None:
    """Growing the sketch widens its rows without changing an estimate; shrinking keeps them."""
    sketch = FrequencySketch(16, seed=2)
    rng = random.Random(2)
    for _ in range(150):
        sketch.increment(rng.randrange(60))
    before = {k: sketch.estimate(k) for k in range(60)}
    sketch.resize(1000)
    assert sketch.width == 4096 and sketch.sample_size == 10_000
    assert {k: sketch.estimate(k) for k in range(60)} == before
    sketch.resize(10)
    assert sketch.width == 4096 and sketch.sample_size == 100
    assert {k: sketch.estimate(k) for k in range(60)} == before


def test_sketch_resize_rejects_capacity_below_one() -> None:
    """Resizing a sketch to a capacity below 1 raises ValueError naming the parameter."""
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        FrequencySketch(10).resize(0)


def test_sketch_age_halves_each_estimate() -> None:
    """age() makes every estimate exactly half (rounded down) of what it was."""
    sketch = FrequencySketch(32, seed=1)
    rng = random.Random(1)
    for _ in range(300):
        sketch.increment(rng.randrange(100))
    before = {k: sketch.estimate(k) for k in range(100)}
    sketch.age()
    assert {k: sketch.estimate(k) for k in range(100)} == {k: v // 2 for k, v in before.items()}
    assert any(v >= 2 for v in before.values())


# --- the adaptive window --------------------------------------------------------------------


def recency_trace(rng: random.Random, length: int) -> list[int]:
    """Each request re-uses one of the last 60 new keys (70%) or is a new key (30%)."""
    recent: list[int] = []
    trace, fresh = [], 0
    for _ in range(length):
        if recent and rng.random() < 0.7:
            trace.append(rng.choice(recent))
        else:
            fresh += 1
            recent = [*recent[-59:], fresh]
            trace.append(fresh)
    return trace


def frequency_trace(rng: random.Random, length: int) -> list[int]:
    """80% of requests go to a fixed hot set of 150 keys, 20% to keys never seen again."""
    return [rng.randrange(150) if rng.random() < 0.8 else 1_000_000 + i for i in range(length)]


def test_window_grows_on_recency_heavy_traffic() -> None:
    """On traffic that re-uses recent keys, the window grows and W-TinyLFU nears LRU."""
    trace = recency_trace(random.Random(11), 30_000)
    tinylfu = TinyLFUPolicy[int](200)
    static = TinyLFUPolicy[int](200, adaptive=False)
    hits = replay(tinylfu, trace)
    assert tinylfu.window_capacity >= 40  # from 2
    assert hits > replay(static, trace)
    assert hits >= replay(LRUPolicy[int](200), trace) * 0.95


def test_window_shrinks_on_frequency_heavy_traffic() -> None:
    """On a stable hot set with one-hit noise, a large window shrinks and hits improve."""
    trace = frequency_trace(random.Random(12), 30_000)
    tinylfu = TinyLFUPolicy[int](200, window_fraction=0.5)
    static = TinyLFUPolicy[int](200, window_fraction=0.5, adaptive=False)
    hits = replay(tinylfu, trace)
    assert tinylfu.window_capacity <= 75  # from 100
    assert hits > replay(static, trace)
    assert hits > replay(LRUPolicy[int](200), trace)


def test_climber_waits_for_significant_evidence() -> None:
    """A vote margin within noise moves nothing and carries over halved to the next sample."""
    climber = WindowClimber[int](1000)
    climber.window_votes, climber.main_votes = 12, 8  # 0.9 standard deviations
    assert climber.adjustment() == 0
    assert (climber.window_votes, climber.main_votes) == (6, 4)


def test_climber_steps_toward_more_ghost_hits_and_halves_on_reversal() -> None:
    """Significant votes move the window their way; a reversal halves the step."""
    climber = WindowClimber[int](1000)
    climber.window_votes, climber.main_votes = 40, 0  # 6.3 standard deviations
    grow = climber.adjustment()
    assert grow > 0 and (climber.window_votes, climber.main_votes) == (0, 0)
    step = climber.step
    climber.window_votes, climber.main_votes = 0, 40
    assert climber.adjustment() < 0
    assert climber.step == step / 2


def test_climber_ignores_samples_before_warm_up() -> None:
    """A sample taken while the sketch is still empty is discarded, however one-sided."""
    climber = WindowClimber[int](1000)
    climber.window_votes = 100
    assert climber.adjustment(warm=False) == 0
    assert climber.window_votes == 0


def test_climber_counts_ghost_hits_within_depth_only() -> None:
    """A miss on a key rejected within the ghost depth is a window vote; an older one is not."""
    climber = WindowClimber[int](160)  # ghost depth 10 departures
    climber.window_departure(1)
    assert climber.record_miss(1) is False
    assert climber.window_votes == 1
    climber.window_departure(2)
    for _ in range(10):
        climber.window_departure(None)
    climber.record_miss(2)
    climber.main_eviction(3)
    climber.record_miss(3)
    assert (climber.window_votes, climber.main_votes) == (1, 1)
