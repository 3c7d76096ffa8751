"""Adaptive concurrency: additive increase, multiplicative decrease (AIMD), as TCP does.

Background work may use more slots while the machine keeps up and gives them back fast when it
does not: each healthy measurement adds ``increase`` to the limit, each overloaded one
multiplies it by ``decrease_factor``; the limit stays within ``[minimum, maximum]``. Pure: the
service measures (loop lag, CPU) and feeds the verdict in.
"""

from __future__ import annotations

import math

__all__ = ["AIMDLimit"]


class AIMDLimit:
    """A concurrency limit that grows by ``increase`` and shrinks by ``decrease_factor``.

    Starts at ``initial`` (default: ``maximum``). Raises ``ValueError`` for ``minimum`` < 1,
    ``maximum`` < ``minimum``, ``increase`` <= 0 or ``decrease_factor`` outside (0, 1).
    """

    __slots__ = ("_value", "decrease_factor", "increase", "maximum", "minimum")

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        increase: float = 1.0,
        decrease_factor: float = 0.5,
    ) -> None:
        if minimum < 1:
            raise ValueError(f"minimum must be >= 1 (work must progress), got {minimum}")
        if increase <= 0 or not math.isfinite(increase):
            raise ValueError(f"increase must be a finite number > 0, got {increase}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        self.minimum = minimum
        self.maximum = minimum
        self.increase = increase
        self.decrease_factor = decrease_factor
        self._value = float(minimum)
        self.resize(maximum)
        self._value = float(self.maximum if initial is None else self._clamp(initial))

    @property
    def limit(self) -> int:
        """The current limit, a whole number of slots."""
        return int(self._value)

    def update(self, overloaded: bool) -> int:
        """Feed one measurement's verdict; return the new limit."""
        return self.decrease() if overloaded else self.grow()

    def grow(self) -> int:
        """Additive increase, up to ``maximum``; return the new limit."""
        self._value = self._clamp(self._value + self.increase)
        return self.limit

    def decrease(self) -> int:
        """Multiplicative decrease, down to ``minimum``; return the new limit."""
        self._value = self._clamp(self._value * self.decrease_factor)
        return self.limit

    def resize(self, maximum: int) -> None:
        """Change the ceiling (a reloaded ``max_concurrency``); the limit is clamped to it.

        Raises ``ValueError`` when ``maximum`` is below ``minimum``.
        """
        if maximum < self.minimum:
            raise ValueError(f"maximum must be >= minimum ({self.minimum}), got {maximum}")
        self.maximum = maximum
        self._value = self._clamp(self._value)

    def _clamp(self, value: float) -> float:
        return min(float(self.maximum), max(float(self.minimum), value))

    def __repr__(self) -> str:
        return f"<AIMDLimit {self.limit} in [{self.minimum}, {self.maximum}]>"
