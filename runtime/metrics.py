"""Gauges by name and labels: what the Sampler measures and what users set, in one place.

``rt.metrics.set("stt_queue_depth", 4, device="kitchen")`` writes a gauge; the Sampler writes its
readings the same way; alert rules and the Prometheus exporter read them. Names and label names
follow Prometheus's rules, so every gauge can be exported as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from .clock import Clock, RealClock

__all__ = ["Gauge", "Labels", "MetricsRegistry"]

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: a hashable, canonical form of ``**labels``."""

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Gauge(NamedTuple):
    """One series: its name, labels, latest value and when it was set (monotonic seconds)."""

    name: str
    labels: Labels
    value: float
    updated_at: float


class MetricsRegistry:
    """The current value of every gauge. Setting one is a dict write: safe on hot paths."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or RealClock()
        self._gauges: dict[tuple[str, Labels], Gauge] = {}
        self._help: dict[str, str] = {}
        self._valid_names: set[str] = set()  # validated once: set() stays a dict write

    def set(self, name: str, value: float, /, **labels: object) -> None:
        """Set gauge ``name`` with ``labels`` to ``value``.

        Raises ``ValueError`` for a name or label name Prometheus would refuse, or a value that
        is not a real number; nothing is changed then.
        """
        if name not in self._valid_names:
            if not _NAME.match(name):
                raise ValueError(
                    f"metric name {name!r} is invalid: use letters, digits, '_' and ':', "
                    "not starting with a digit"
                )
            self._valid_names.add(name)
        key = (name, self._labels(name, labels)) if labels else (name, ())
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"metric {name!r}: value must be a number, got {value!r}")
        self._gauges[key] = Gauge(name, key[1], float(value), self._clock.now())

    @staticmethod
    def _labels(name: str, labels: dict[str, object]) -> Labels:
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(
                    f"metric {name!r}: label name {label!r} is invalid: use letters, digits "
                    "and '_', not starting with a digit or '__'"
                )
        return tuple(sorted((k, str(v)) for k, v in labels.items()))

    def describe(self, name: str, help_text: str) -> None:
        """Attach a help text (shown by the Prometheus exporter)."""
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is invalid")
        self._help[name] = help_text

    def help_text(self, name: str) -> str | None:
        return self._help.get(name)

    def get(self, name: str, /, **labels: object) -> float | None:
        """The value of one series, or ``None`` if it was never set."""
        gauge = self._gauges.get((name, self._labels(name, labels)))
        return gauge.value if gauge is not None else None

    def remove(self, name: str, /, **labels: object) -> bool:
        """Forget one series; returns whether it existed."""
        return self._gauges.pop((name, self._labels(name, labels)), None) is not None

    def series(self, name: str) -> list[Gauge]:
        """Every series of ``name``, in label order."""
        return sorted((g for g in self._gauges.values() if g.name == name), key=lambda g: g.labels)

    def names(self) -> list[str]:
        return sorted({g.name for g in self._gauges.values()})

    def __iter__(self) -> Iterator[Gauge]:
        return iter(list(self._gauges.values()))

    def __len__(self) -> int:
        return len(self._gauges)
