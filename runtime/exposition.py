"""Prometheus exposition machinery: metric families built from plain statistics.

``Families`` collects samples (summing duplicates, refusing a name taken by another type);
``exported_name`` makes a name Prometheus-conventional; ``select_buckets`` picks a histogram's
exported buckets; ``walk_statistics`` exports a service's statistics whatever their shape;
``add_registry_gauges`` exports ``rt.metrics``. Pure and synchronous: ``runtime.scrape`` uses it
in the HTTP server's thread. Nothing here raises on odd statistics: values that are not numbers
are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Protocol

import msgspec
from prometheus_client.metrics_core import Metric

from .metrics import Labels

__all__ = [
    "LATENCY_BUCKETS_S",
    "Families",
    "Histogram",
    "HistogramData",
    "add_registry_gauges",
    "as_dict",
    "as_number",
    "by_name",
    "exported_name",
    "select_buckets",
    "walk_statistics",
]

# 1-2.5-5 per decade from 10 µs to 10 s: what a wake word (sub-millisecond on the loop) and a
# command (seconds) both need, in 19 buckets instead of the profiler's 181.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    *(m * 10.0**e for e in range(-5, 1) for m in (1.0, 2.5, 5.0)),
    10.0,
)

# Abbreviated units Prometheus's lint refuses, and what they become (name token, scale).
_UNIT_TOKENS: dict[str, tuple[str, float]] = {
    "ms": ("seconds", 1e-3),
    "us": ("seconds", 1e-6),
    "ns": ("seconds", 1e-9),
    "s": ("seconds", 1.0),
    "kb": ("bytes", 2.0**10),
    "mb": ("bytes", 2.0**20),  # the configuration's _mb is 2**20 bytes
    "gb": ("bytes", 2.0**30),
}
# Statistics fields that count events since start: exported as counters.
_COUNTING_WORDS = (
    "hits misses evictions expired expirations invalidations invalidated sets writes reads "
    "errors promotions calls refused throttled terminated warned warnings timeouts exceeded "
    "completed failed died replaced rejected dropped"
)
_COUNTER_FIELDS = frozenset(_COUNTING_WORDS.split())
# The label a field's breakdown gets (``evictions: {capacity: 3}`` -> ``cause="capacity"``).
_BREAKDOWN_LABELS = {"evictions": "cause", "expired": "kind", "exceeded": "quota"}


class Histogram(Protocol):
    """What a histogram must offer: the profiler's ``LatencyHistogram`` does."""

    @property
    def sum_s(self) -> float: ...

    @property
    def count(self) -> int: ...

    def cumulative_buckets(self) -> list[tuple[float, int]]: ...


class HistogramData(msgspec.Struct, frozen=True):
    """A histogram as plain data: cumulative ``(le, count)`` pairs ending with
    ``(inf, count)``, the sum of the values (seconds) and their count."""

    buckets: list[tuple[float, int]]
    sum_s: float
    count: int

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        return self.buckets


def exported_name(name: str) -> tuple[str, float]:
    """The Prometheus-conventional name of a registry gauge and the factor its value takes.

    Abbreviated units become base units (``loop_lag_ms`` -> ``loop_lag_seconds`` x 0.001,
    ``read_bytes_per_s`` -> ``read_bytes_per_second``), and a histogram's suffix gets one more
    word (``cpu_count`` -> ``cpu_count_value``): Prometheus's lint refuses both. Other names
    are kept.
    """
    tokens = name.split("_")
    scale = 1.0
    for index, token in enumerate(tokens):
        if index == 0 or token not in _UNIT_TOKENS:
            continue
        if token == "s" and tokens[index - 1] == "per":
            tokens[index] = "second"
            continue
        tokens[index], factor = _UNIT_TOKENS[token]
        scale *= factor
    if tokens[-1] in ("count", "sum", "bucket") and len(tokens) > 1:
        tokens.append("value")  # those suffixes belong to histograms: cpu_count_value
    return "_".join(tokens), scale


@lru_cache(maxsize=8)
def _bucket_indexes(bounds: tuple[float, ...], targets: tuple[float, ...]) -> tuple[int, ...]:
    chosen: list[int] = []
    for target in targets:
        index = min(range(len(bounds)), key=lambda i: abs(math.log(bounds[i] / target)))
        if not chosen or index > chosen[-1]:
            chosen.append(index)
    return tuple(chosen)


def select_buckets(
    buckets: list[tuple[float, int]], targets: tuple[float, ...] = LATENCY_BUCKETS_S
) -> list[tuple[float, int]]:
    """The cumulative buckets whose bounds lie nearest ``targets`` (in ratio), plus +Inf.

    Cumulative counts stay exact for any subset of bounds. ``buckets`` must end with +Inf.
    """
    finite = tuple(le for le, _ in buckets[:-1] if le > 0)
    offset = len(buckets) - 1 - len(finite)
    picked = [buckets[offset + i] for i in _bucket_indexes(finite, targets)] if finite else []
    return [*picked, buckets[-1]]


class Families:
    """Families under construction: samples with equal labels are summed, a name taken by
    another type is refused (counted in ``conflicts``)."""

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[str, str]] = {}
        self._samples: dict[str, dict[tuple[str, Labels], float]] = {}
        self.conflicts = 0

    def names(self) -> set[str]:
        return set(self._kinds)

    def _family(self, name: str, kind: str, help_text: str) -> dict[tuple[str, Labels], float]:
        known = self._kinds.setdefault(name, (kind, help_text))
        if known[0] != kind:
            self.conflicts += 1
            return {}  # written to and dropped: the first type of a name wins
        return self._samples.setdefault(name, {})

    def add(self, name: str, kind: str, help_text: str, value: Any, /, **labels: str) -> None:
        """One sample of a gauge or counter (``name`` without ``_total``); non-numbers skipped."""
        number = as_number(value)
        if number is None:
            return
        sample = f"{name}_total" if kind == "counter" else name
        samples = self._family(name, kind, help_text)
        key = (sample, tuple(sorted(labels.items())))
        samples[key] = samples.get(key, 0.0) + number

    def histogram(self, name: str, help_text: str, data: Histogram, /, **labels: str) -> None:
        samples = self._family(name, "histogram", help_text)
        base = tuple(sorted(labels.items()))
        for le, count in select_buckets(data.cumulative_buckets()):
            key = (f"{name}_bucket", tuple(sorted((*base, ("le", _le(le))))))
            samples[key] = samples.get(key, 0.0) + count
        for suffix, value in (("_sum", data.sum_s), ("_count", float(data.count))):
            samples[(name + suffix, base)] = samples.get((name + suffix, base), 0.0) + value

    def metrics(self) -> list[Metric]:
        out = []
        for name, (kind, help_text) in self._kinds.items():
            metric = Metric(name, help_text, kind)
            for (sample, labels), value in self._samples.get(name, {}).items():
                metric.add_sample(sample, dict(labels), value)
            out.append(metric)
        return out


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def by_name(value: Any) -> dict[str, dict[str, Any]]:
    """Dicts by name, from ``{name: {...}}`` or ``[{"name": name, ...}]``; else empty."""
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
        return {str(v["name"]): v for v in value}
    return {}


def walk_statistics(
    families: Families,
    prefix: str,
    stats: Mapping[str, Any],
    labels: dict[str, str],
    *,
    section: str = "",
    depth: int = 0,
) -> None:
    """Export a service's statistics whatever their shape.

    A number becomes ``{prefix}_{field}`` (a counter for counting fields such as ``hits``,
    ``evictions`` or ``*_total``, else a gauge); a dict of numbers a labelled breakdown
    (``evictions: {ttl: 2}`` -> ``cause="ttl"``); dicts by name (``tiers``, ``namespaces``,
    ``plugins``) recurse with a label (``tier="l1"``). Three levels deep at most.
    """
    help_text = f"From rt.statistics().services[{section!r}]" if section else "Statistics"
    for field, value in stats.items():
        field = str(field)
        children = by_name(value)
        if children and depth < 3:
            label = field[:-1] if field.endswith("s") else field
            for child, child_stats in children.items():
                walk_statistics(
                    families,
                    f"{prefix}_{label}",
                    child_stats,
                    {**labels, label: child},
                    section=section,
                    depth=depth + 1,
                )
        elif isinstance(value, dict):
            label = _BREAKDOWN_LABELS.get(field, "kind")
            for key, item in value.items():
                _walkas_number(families, prefix, field, help_text, item, {**labels, label: key})
        else:
            _walkas_number(families, prefix, field, help_text, value, labels)


def _walkas_number(
    families: Families,
    prefix: str,
    field: str,
    help_text: str,
    value: Any,
    labels: dict[str, str],
) -> None:
    number = as_number(value)
    if number is None or not field.isidentifier():
        return
    name, scale = exported_name(f"{prefix}_{field}")
    if name.endswith("_total") or field in _COUNTER_FIELDS:
        families.add(name.removesuffix("_total"), "counter", help_text, number * scale, **labels)
    else:
        families.add(name, "gauge", help_text, number * scale, **labels)


def add_registry_gauges(
    families: Families, gauges: Iterable[tuple[str, Labels, float]], help_texts: Mapping[str, str]
) -> None:
    """The gauges of ``rt.metrics`` under their exported names; ``*_total`` ones are counters,
    as their name says. A gauge whose exported name another family has (one already in
    ``families``, or another gauge's) is left out and counted in ``families.conflicts``."""
    taken = families.names()
    source_of: dict[str, str] = {}
    for name, labels, value in gauges:
        exported, scale = exported_name(name)
        kind = "counter" if exported.endswith("_total") else "gauge"
        base = exported.removesuffix("_total")
        if base in taken or source_of.setdefault(base, name) != name:
            families.conflicts += 1
            continue
        help_text = help_texts.get(name) or f"{name}, from rt.metrics"
        if scale != 1.0:
            help_text += f" ({name} x {scale:g})"
        families.add(base, kind, help_text, value * scale, **dict(labels))
