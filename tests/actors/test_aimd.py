"""AIMDLimit: additive increase, multiplicative decrease, within bounds (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.scheduler.aimd import AIMDLimit


def test_starts_at_the_maximum_unless_told_otherwise() -> None:
    """The limit starts at maximum; an initial value is clamped into the bounds."""
    assert AIMDLimit(8).limit == 8
    assert AIMDLimit(8, initial=3).limit == 3
    assert AIMDLimit(8, minimum=2, initial=0).limit == 2
    assert AIMDLimit(8, initial=20).limit == 8


def test_grows_additively_up_to_the_maximum() -> None:
    """Each healthy measurement adds ``increase``; the limit never passes maximum."""
    limit = AIMDLimit(4, initial=1, increase=1.0)
    assert [limit.update(False) for _ in range(5)] == [2, 3, 4, 4, 4]


def test_fractional_increase_accumulates() -> None:
    """An increase below 1 adds a slot every few measurements."""
    limit = AIMDLimit(4, initial=1, increase=0.5)
    assert [limit.grow() for _ in range(4)] == [1, 2, 2, 3]


def test_decreases_multiplicatively_down_to_the_minimum() -> None:
    """Each overloaded measurement multiplies by decrease_factor; never below minimum."""
    limit = AIMDLimit(16, decrease_factor=0.5)
    assert [limit.update(True) for _ in range(6)] == [8, 4, 2, 1, 1, 1]


def test_recovers_in_a_sawtooth() -> None:
    """After a decrease the limit climbs back one slot per healthy measurement."""
    limit = AIMDLimit(8)
    verdicts = [True, False, False, True, False]
    assert [limit.update(v) for v in verdicts] == [4, 5, 6, 3, 4]


def test_resize_clamps_the_current_limit() -> None:
    """A lower maximum pulls the limit down; a higher one lets it grow again."""
    limit = AIMDLimit(8)
    limit.resize(3)
    assert limit.limit == 3 and limit.maximum == 3
    limit.resize(5)
    assert limit.limit == 3
    assert limit.grow() == 4


def test_resize_below_the_minimum_is_refused() -> None:
    """resize() raises ValueError when the maximum would be below the minimum."""
    limit = AIMDLimit(8, minimum=2)
    with pytest.raises(ValueError, match=r"maximum must be >= minimum \(2\), got 1"):
        limit.resize(1)
    assert limit.maximum == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maximum": 4, "minimum": 0}, "minimum must be >= 1"),
        ({"maximum": 1, "minimum": 2}, "maximum must be >= minimum"),
        ({"maximum": 4, "increase": 0.0}, "increase must be a finite number > 0"),
        ({"maximum": 4, "increase": float("inf")}, "increase must be a finite number > 0"),
        ({"maximum": 4, "decrease_factor": 1.0}, r"decrease_factor must be in \(0, 1\)"),
        ({"maximum": 4, "decrease_factor": 0.0}, r"decrease_factor must be in \(0, 1\)"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """Bounds and factors outside their ranges raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match=message):
        AIMDLimit(**kwargs)
