"""The sample history that alert rules read: per series, timestamps and values, as Prometheus
keeps them.

Each evaluation round snapshots the ``MetricsRegistry`` into this store (``ingest``), the way a
Prometheus scrape does: every gauge present gets a sample at the round's time, and a series that
was present last round but is gone now gets a *stale marker*, so it stops being selected at once
instead of lingering for the lookback. Samples can also be appended directly (imports, tests).

Reads follow Prometheus 2.x: an instant read at ``t`` takes the newest sample in
``[t - lookback, t]`` unless that sample is a stale marker; a range read takes the non-stale
samples in ``[t - window, t]``. Times are integer milliseconds (monotonic), as Prometheus's are,
so window edges never suffer float rounding.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from runtime.metrics import Labels

if TYPE_CHECKING:
    from runtime.metrics import Gauge

__all__ = ["DEFAULT_LOOKBACK_MS", "STALE", "Series", "SeriesStore"]

DEFAULT_LOOKBACK_MS = 300_000  # Prometheus's default lookback delta: 5 minutes
STALE = None
"""The value of a stale marker: the series ended here (Prometheus writes a special NaN)."""

SeriesKey = tuple[str, Labels]


class Series:
    """One series: metric ``name``, ``labels`` (sorted pairs, no ``__name__``) and its samples
    in time order. ``values[i]`` is ``STALE`` (``None``) for a stale marker."""

    __slots__ = ("base", "label_map", "labels", "name", "rewrites", "times", "values", "windows")

    def __init__(self, name: str, labels: Labels) -> None:
        self.name = name
        self.labels = labels
        self.label_map = dict(labels)
        self.times: list[int] = []
        self.values: list[float | None] = []
        self.base = 0  # samples pruned so far: sample ``i`` is ``times[i - base]``
        self.rewrites = 0  # samples replaced in place (window aggregates must start over)
        self.windows: dict[int, Any] = {}  # window_ms -> its running aggregate (evaluate.py)

    def append(self, t_ms: int, value: float | None) -> None:
        """Add a sample; one at the newest sample's time replaces it.

        Raises ``ValueError`` for a sample older than the newest (history is append-only).
        """
        times = self.times
        if times and t_ms <= times[-1]:
            if t_ms < times[-1]:
                raise ValueError(
                    f"series {self.name}{dict(self.labels)}: sample at {t_ms} ms is older than "
                    f"the newest ({times[-1]} ms); append samples in time order"
                )
            self.values[-1] = value
            self.rewrites += 1
            return
        times.append(t_ms)
        self.values.append(value)

    def instant(self, t_ms: int, lookback_ms: int) -> float | None:
        """The value at ``t_ms``: the newest sample at most ``lookback_ms`` old, unless stale."""
        times = self.times
        if not times:
            return None
        index = len(times) - 1 if times[-1] <= t_ms else bisect_right(times, t_ms) - 1
        if index < 0 or times[index] < t_ms - lookback_ms:
            return None
        return self.values[index]

    def window(self, t_ms: int, window_ms: int) -> tuple[list[int], list[float]]:
        """The non-stale samples in ``[t_ms - window_ms, t_ms]``: (times, values)."""
        times = self.times
        low = bisect_left(times, t_ms - window_ms)
        high = len(times) if not times or times[-1] <= t_ms else bisect_right(times, t_ms)
        values = self.values[low:high]
        if None in values:
            kept = [i for i, value in enumerate(values) if value is not None]
            return [times[low + i] for i in kept], [v for v in values if v is not None]
        return times[low:high], values  # type: ignore[return-value]  # no None in it

    def prune(self, before_ms: int) -> None:
        """Forget samples older than ``before_ms``."""
        if self.times and self.times[0] < before_ms:
            cut = bisect_left(self.times, before_ms)
            del self.times[:cut]
            del self.values[:cut]
            self.base += cut

    def __repr__(self) -> str:
        return f"<Series {self.name}{self.label_map} {len(self.times)} samples>"


class SeriesStore:
    """Every series by metric name, with their recent samples.

    ``retention_ms``: how much history to keep (the Alerter sets it to the lookback plus the
    widest window its rules read). ``generation`` changes whenever a series appears or goes, so
    readers can cache which series a selector matches.
    """

    def __init__(self, *, retention_ms: int = DEFAULT_LOOKBACK_MS) -> None:
        self.retention_ms = retention_ms
        self.generation = 0
        self._by_name: dict[str, dict[Labels, Series]] = {}
        self._scraped: set[SeriesKey] = set()

    def append(self, name: str, t_ms: int, value: float | None, labels: Labels = ()) -> Series:
        """Add one sample (``value`` ``STALE`` for a stale marker) and return its series.

        Raises ``ValueError`` for a sample older than its series' newest.
        """
        family = self._by_name.get(name)
        if family is None:
            family = self._by_name[name] = {}
        series = family.get(labels)
        if series is None:
            series = family[labels] = Series(name, labels)
            self.generation += 1
        series.append(t_ms, value)
        return series

    def ingest(self, gauges: Iterable[Gauge], t_ms: int) -> int:
        """Snapshot gauges at ``t_ms`` like a scrape; series gone since the last snapshot get a
        stale marker. Returns how many samples were written."""
        seen: set[SeriesKey] = set()
        for gauge in gauges:
            key = (gauge.name, gauge.labels)
            seen.add(key)
            self.append(gauge.name, t_ms, gauge.value, gauge.labels)
        for name, labels in self._scraped - seen:
            self.append(name, t_ms, STALE, labels)
        written = len(seen) + len(self._scraped - seen)
        self._scraped = seen
        return written

    def family(self, name: str) -> dict[Labels, Series]:
        """The series of metric ``name`` by labels (empty if none); do not modify it."""
        return self._by_name.get(name, _EMPTY)

    def prune(self, now_ms: int) -> None:
        """Forget samples older than the retention, and series left with nothing to read."""
        cutoff = now_ms - self.retention_ms
        for name, family in list(self._by_name.items()):
            for labels, series in list(family.items()):
                series.prune(cutoff)
                if not series.times or (len(series.times) == 1 and series.values[0] is STALE):
                    del family[labels]
                    self._scraped.discard((name, labels))
                    self.generation += 1
            if not family:
                del self._by_name[name]

    def __iter__(self) -> Iterator[Series]:
        for family in self._by_name.values():
            yield from family.values()

    def __len__(self) -> int:
        return sum(len(family) for family in self._by_name.values())

    @property
    def samples(self) -> int:
        """How many samples are held, stale markers included."""
        return sum(len(series.times) for series in self)


_EMPTY: dict[Labels, Series] = {}
