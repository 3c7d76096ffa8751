"""A tier's occupancy: entries and bytes under an eviction policy."""

from __future__ import annotations

import pytest

from actors.cache.occupancy import UNBOUNDED_ENTRIES, Occupancy


class Store:
    """A tier's values, as the occupancy sees them: ``drop`` returns the size it frees."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def put(self, occupancy: Occupancy[str], key: str, size: int) -> list[tuple[str, str]]:
        replaced = self.sizes.get(key, 0)
        self.sizes[key] = size
        return occupancy.admit(key, size, replaced, self.drop)

    def drop(self, key: str) -> int:
        return self.sizes.pop(key)


def test_entries_over_max_entries_are_evicted_by_the_policy() -> None:
    """LRU at 2 entries: the least recently used goes, with cause 'entries'."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=2, max_bytes=None)
    store = Store()
    store.put(occupancy, "a", 10)
    store.put(occupancy, "b", 10)
    occupancy.policy.record_access("a")
    assert store.put(occupancy, "c", 10) == [("b", "entries")]
    assert set(store.sizes) == {"a", "c"}
    assert (len(occupancy), occupancy.bytes) == (2, 20)


def test_bytes_over_max_bytes_shed_victims_chosen_by_the_policy() -> None:
    """Past max_bytes the least recent entries go (cause 'bytes') until the bytes fit."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=100, max_bytes=100)
    store = Store()
    for key in "abcd":
        store.put(occupancy, key, 25)
    dropped = store.put(occupancy, "e", 50)
    assert dropped == [("a", "bytes"), ("b", "bytes")]
    assert occupancy.bytes == 100 and set(store.sizes) == {"c", "d", "e"}


def test_after_shedding_bytes_the_entry_budget_stays_at_the_size_values_have() -> None:
    """The policy's capacity shrinks to what fits: later inserts evict by count, for bytes."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=100, max_bytes=100)
    store = Store()
    for index in range(5):
        store.put(occupancy, f"k{index}", 25)
    assert occupancy.policy.capacity == 4
    assert store.put(occupancy, "k5", 25) == [("k1", "bytes")]


def test_a_value_larger_than_the_tier_is_not_kept_and_replaces_nothing() -> None:
    """A value over max_bytes is dropped at once (cause 'oversize'), the old one with it."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=10, max_bytes=100)
    store = Store()
    store.put(occupancy, "a", 40)
    store.put(occupancy, "b", 10)
    assert store.put(occupancy, "a", 101) == [("a", "oversize")]
    assert set(store.sizes) == {"b"} and occupancy.bytes == 10 and "a" not in occupancy.policy


def test_replacing_a_value_counts_only_its_new_size() -> None:
    """A new value for a held key replaces its bytes; the entry count stays."""
    occupancy: Occupancy[str] = Occupancy("lfu", max_entries=10, max_bytes=None)
    store = Store()
    store.put(occupancy, "a", 40)
    store.put(occupancy, "a", 15)
    assert (len(occupancy), occupancy.bytes) == (1, 15)


def test_forget_releases_the_bytes_of_a_key_the_tier_removed_itself() -> None:
    """Expiry or invalidation: the key leaves the policy and its bytes are released once."""
    occupancy: Occupancy[str] = Occupancy("fifo", max_entries=10, max_bytes=None)
    store = Store()
    store.put(occupancy, "a", 40)
    occupancy.forget("a", 40)
    occupancy.forget("a", 40)
    assert (len(occupancy), occupancy.bytes) == (0, 0)


def test_shrink_lets_a_fraction_go_and_regrow_gives_the_budget_back() -> None:
    """Half the entries go (cause 'shrink'); regrow doubles the budget once full again."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=8, max_bytes=None)
    store = Store()
    for index in range(8):
        store.put(occupancy, f"k{index}", 1)
    dropped = occupancy.shrink(0.5, store.drop)
    assert dropped == [(f"k{i}", "shrink") for i in range(4)]
    assert occupancy.policy.capacity == 4
    occupancy.regrow()
    assert occupancy.policy.capacity == 8
    occupancy.regrow()
    assert occupancy.policy.capacity == 8  # at the ceiling (max_entries)


def test_shrinking_everything_empties_the_tier() -> None:
    """A fraction of 1 lets every entry go, the last one included."""
    occupancy: Occupancy[str] = Occupancy("tinylfu", max_entries=4, max_bytes=None)
    store = Store()
    for key in "abc":
        store.put(occupancy, key, 3)
    assert len(occupancy.shrink(1.0, store.drop)) == 3
    assert (len(occupancy), occupancy.bytes, store.sizes) == (0, 0, {})
    assert occupancy.shrink(0.5, store.drop) == []


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, "half"])
def test_shrink_refuses_a_fraction_outside_zero_to_one(fraction: object) -> None:
    """ValueError names the bad fraction."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=4, max_bytes=None)
    with pytest.raises(ValueError, match="fraction must be within"):
        occupancy.shrink(fraction, Store().drop)  # type: ignore[arg-type]


def test_regrow_waits_while_the_bytes_are_near_the_limit() -> None:
    """A budget cut by bytes does not grow back while the bytes are at 90% of max_bytes."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=100, max_bytes=100)
    store = Store()
    for index in range(5):
        store.put(occupancy, f"k{index}", 25)
    occupancy.regrow()
    assert occupancy.policy.capacity == 4
    for key in list(store.sizes):
        store.put(occupancy, key, 5)  # rewritten smaller
    assert occupancy.bytes == 20
    occupancy.regrow()
    assert occupancy.policy.capacity == 8


def test_a_tier_bounded_by_bytes_only_starts_from_a_guess_and_grows_to_the_ceiling() -> None:
    """Without max_entries the first budget comes from max_bytes; the ceiling is fixed."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=None, max_bytes=1_000_000)
    assert occupancy.policy.capacity == 976
    assert occupancy.ceiling == UNBOUNDED_ENTRIES


def test_new_limits_evict_what_no_longer_fits() -> None:
    """A reload to fewer entries and bytes evicts by the policy's order."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=10, max_bytes=None)
    store = Store()
    for index in range(6):
        store.put(occupancy, f"k{index}", 10)
    dropped = occupancy.set_limits(4, 25, store.drop)
    assert dropped == [("k0", "entries"), ("k1", "entries"), ("k2", "bytes"), ("k3", "bytes")]
    assert occupancy.bytes == 20


def test_a_single_value_over_a_lowered_byte_limit_goes_too() -> None:
    """When one value alone exceeds the new max_bytes it is evicted."""
    occupancy: Occupancy[str] = Occupancy("lru", max_entries=10, max_bytes=None)
    store = Store()
    store.put(occupancy, "a", 50)
    assert occupancy.set_limits(10, 20, store.drop) == [("a", "bytes")]
    assert occupancy.bytes == 0


@pytest.mark.parametrize(
    ("max_entries", "max_bytes", "message"),
    [(0, None, "max_entries must be >= 1"), (None, -1, "max_bytes must be >= 1"),
     (True, None, "max_entries must be an int")],
)  # fmt: skip
def test_limits_below_one_or_not_ints_are_refused(
    max_entries: object, max_bytes: object, message: str
) -> None:
    """ValueError names the limit and its value."""
    with pytest.raises(ValueError, match=message):
        Occupancy("lru", max_entries=max_entries, max_bytes=max_bytes)  # type: ignore[arg-type]
