"""Window functions at O(1) a round: running aggregates of a series over a sliding window.

Evaluation times only move forward, so from one round to the next a window gains the samples
that arrived and loses those that left. Each series keeps, per window length, a running sum
and count, monotonic deques for the largest and smallest value, and the counter resets inside.
From those:

- ``max_over_time``/``min_over_time`` are exact (a maximum is a maximum) when the window holds
  no NaN or infinity;
- ``rate``/``increase`` are exact when the window holds no counter reset: the first and the
  last sample are all Prometheus's arithmetic then reads;
- ``avg_over_time`` is *approximate*: sum / count, with a bound on how far Prometheus's
  compensated mean can be from it (a few units in the last place of the largest value). A
  comparison farther than that from its threshold is decided by the approximation; the exact
  mean is computed from the samples, Prometheus's way, only when a comparison is too close to
  call or the value is shown (an alert's value, its annotations).

Anything else (NaN or infinity in the window, a reset, time going backwards, a rewritten or
pruned sample) falls back to computing from the samples themselves.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable

from .series import Series

__all__ = [
    "Approximate",
    "WindowAggregate",
    "avg_over_time",
    "exact",
    "extrapolate",
    "extrapolated_rate",
    "max_over_time",
    "min_over_time",
    "over_time",
]

_EPSILON = sys.float_info.epsilon
_RESUM_EVERY = 1024  # updates of the running sum before it is summed afresh (bounds its drift)


# -- the functions, computed from the samples (Prometheus 2.42's arithmetic) -------------------


def _kahan_inc(increment: float, total: float, compensation: float) -> tuple[float, float]:
    new_total = total + increment
    # Neumaier's improvement: compensate with whichever term lost precision.
    if abs(total) >= abs(increment):
        compensation += (total - new_total) + increment
    else:
        compensation += (increment - new_total) + total
    return new_total, compensation


def avg_over_time(values: list[float]) -> float:
    """The mean, as Prometheus computes it: incremental, Kahan-compensated, Inf-aware."""
    mean = count = compensation = 0.0
    for value in values:
        count += 1
        if math.isinf(mean):
            if math.isinf(value) and (mean > 0) == (value > 0):
                continue  # same-signed infinities: the mean is right already
            if not math.isinf(value) and not math.isnan(value):
                continue  # a finite value cannot move an infinite mean
        mean, compensation = _kahan_inc(value / count - mean / count, mean, compensation)
    return mean if math.isinf(mean) else mean + compensation


def max_over_time(values: list[float]) -> float:
    """The largest value; NaN only if every value is NaN."""
    best = values[0]
    for value in values:
        if value > best or math.isnan(best):
            best = value
    return best


def min_over_time(values: list[float]) -> float:
    """The smallest value; NaN only if every value is NaN."""
    best = values[0]
    for value in values:
        if value < best or math.isnan(best):
            best = value
    return best


_OVER_TIME: dict[str, Callable[[list[float]], float]] = {
    "avg_over_time": avg_over_time,
    "max_over_time": max_over_time,
    "min_over_time": min_over_time,
}


def extrapolated_rate(
    times: list[int], values: list[float], start_ms: int, end_ms: int, window_ms: int, is_rate: bool
) -> float | None:
    """``rate`` (per second) or ``increase`` of a counter's samples over ``[start_ms, end_ms]``;
    ``None`` with fewer than two samples. A counter reset adds the value before it."""
    if len(values) < 2:
        return None
    result = values[-1] - values[0]
    previous = values[0]
    for value in values[1:]:
        if value < previous:
            result += previous
        previous = value
    return extrapolate(
        result, times[0], times[-1], values[0], len(values), start_ms, end_ms, window_ms, is_rate
    )


def extrapolate(
    result: float, first_ms: int, last_ms: int, first_value: float, count: int,
    start_ms: int, end_ms: int, window_ms: int, is_rate: bool,
) -> float:  # fmt: skip
    """Prometheus's extrapolation of a counter's ``result`` (last - first, resets added) from
    its first and last sample to the window's edges.

    All the way to an edge when the sample is within 1.1 average intervals of it, else half an
    interval; never past the counter's zero point.
    """
    to_start = (first_ms - start_ms) / 1000
    to_end = (end_ms - last_ms) / 1000
    sampled = (last_ms - first_ms) / 1000
    average_step = sampled / (count - 1)
    if result > 0 and first_value >= 0:
        to_start = min(to_start, sampled * (first_value / result))
    threshold = average_step * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_step / 2
    interval += to_end if to_end < threshold else average_step / 2
    factor = interval / sampled
    if is_rate:
        factor /= window_ms // 1000 + (window_ms % 1000) / 1000  # Go's Duration.Seconds()
    return result * factor


# -- running aggregates ---------------------------------------------------------------------


class Approximate(float):
    """A value known to within ``tolerance``; ``exact()`` computes it exactly (once)."""

    __slots__ = ("_compute", "_exact", "tolerance")

    _compute: Callable[[], float] | None
    _exact: float
    tolerance: float

    def __new__(
        cls, approximation: float, tolerance: float, compute: Callable[[], float]
    ) -> Approximate:
        value = super().__new__(cls, approximation)
        value.tolerance = tolerance
        value._compute = compute
        return value

    def exact(self) -> float:
        if self._compute is not None:
            self._exact, self._compute = self._compute(), None
        return self._exact


def exact(value: float) -> float:
    """``value`` itself, or the exact value behind an ``Approximate``."""
    return value.exact() if type(value) is Approximate else value


class WindowAggregate:
    """The samples of one series in ``[t - window_ms, t]``, kept up to date as ``t`` moves.

    Indices are absolute (``series.base`` plus the position in the series' lists), so pruning
    the series' front does not disturb them.
    """

    __slots__ = (
        "_extremes", "_hi", "_indices", "_lo", "_magnitude", "_max", "_min", "_nonfinite",
        "_resets", "_rewrites", "_total", "_updates", "results", "t_ms", "window_ms",
    )  # fmt: skip

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.t_ms: int | None = None
        self._rewrites = -1
        self._extremes = False  # the max/min deques are kept once max/min_over_time is asked
        self._clear(0)

    def _clear(self, lo: int) -> None:
        self._lo = self._hi = lo  # the window is samples [lo, hi)
        self._indices: deque[int] = deque()  # its non-stale samples
        self._max: deque[int] = deque()  # decreasing values: the front is the largest
        self._min: deque[int] = deque()  # increasing values: the front is the smallest
        self._resets: deque[int] = deque()  # the left sample of each decreasing neighbour pair
        self._total = 0.0  # the sum of the finite values
        self._magnitude = 0.0  # the sum of their absolute values (bounds the sum's error)
        self._nonfinite = 0
        self._updates = 0
        self.results: dict[str, float | None] = {}

    def current(self, series: Series, t_ms: int) -> bool:
        """Whether the window ends at ``t_ms`` already (its ``results`` are for then)."""
        return t_ms == self.t_ms and series.rewrites == self._rewrites

    def advance(self, series: Series, t_ms: int) -> None:
        """Move the window's end to ``t_ms`` (nothing to do if it is there already)."""
        if t_ms == self.t_ms and series.rewrites == self._rewrites:
            return
        times, values, base = series.times, series.values, series.base
        lo = base + bisect_left(times, t_ms - self.window_ms)
        hi = base + (len(times) if not times or times[-1] <= t_ms else bisect_right(times, t_ms))
        backwards = self.t_ms is None or t_ms < self.t_ms or lo < self._lo
        if backwards or series.rewrites != self._rewrites or self._lo < base or lo >= self._hi:
            self._clear(lo)  # start over: from here on only what is new is added
        for index in range(self._hi, hi):
            value = values[index - base]
            if value is not None:
                self._push(index, value, values, base)
        while self._indices and self._indices[0] < lo:
            self._pop(values, base)
        self._lo, self._hi, self.t_ms, self._rewrites = lo, hi, t_ms, series.rewrites
        self.results = {}
        if self._updates >= _RESUM_EVERY:
            self._resum(values, base)

    def _push(self, index: int, value: float, values: list[float | None], base: int) -> None:
        indices = self._indices
        if indices:
            previous = values[indices[-1] - base]
            assert previous is not None
            if value < previous:
                self._resets.append(indices[-1])
        indices.append(index)
        if not math.isfinite(value):
            self._nonfinite += 1
            return  # the aggregates cover finite values; any other sends reads to the samples
        self._total += value
        self._magnitude += abs(value)
        self._updates += 1
        if not self._extremes:
            return
        largest, smallest = self._max, self._min
        while largest and values[largest[-1] - base] < value:  # type: ignore[operator]
            largest.pop()
        largest.append(index)
        while smallest and values[smallest[-1] - base] > value:  # type: ignore[operator]
            smallest.pop()
        smallest.append(index)

    def _pop(self, values: list[float | None], base: int) -> None:
        index = self._indices.popleft()
        value = values[index - base]
        assert value is not None
        if self._resets and self._resets[0] == index:
            self._resets.popleft()
        if not math.isfinite(value):
            self._nonfinite -= 1
            return
        self._total -= value
        self._magnitude -= abs(value)
        self._updates += 1
        for extreme in (self._max, self._min):
            if extreme and extreme[0] == index:
                extreme.popleft()

    def _resum(self, values: list[float | None], base: int) -> None:
        window = (values[i - base] for i in self._indices)
        finite = [v for v in window if v is not None and math.isfinite(v)]
        self._total = sum(finite)
        self._magnitude = sum(map(abs, finite))
        self._updates = 0

    # -- reading ------------------------------------------------------------------------------

    def compute(self, function: str, series: Series) -> float | None:
        """``function`` over the window at its current end (cached until it moves)."""
        if function in self.results:
            return self.results[function]
        result = self._compute(function, series)
        self.results[function] = result
        return result

    def _compute(self, function: str, series: Series) -> float | None:
        count = len(self._indices)
        if count == 0:
            return None
        if function in ("rate", "increase"):
            return self._rate(series, count, function == "rate")
        if self._nonfinite:
            over = {"avg_over_time": avg_over_time, "max_over_time": max_over_time}
            return (over.get(function) or min_over_time)(self._samples(series)[1])
        if function == "avg_over_time":
            # The running sums drift by at most a few units in the last place of their size
            # per update, and the exact mean lies within the same order of the true one.
            tolerance = 4 * (count + _RESUM_EVERY + 2) * _EPSILON * self._magnitude
            t_ms, window_ms = self.t_ms, self.window_ms  # this window, even once it moves on
            assert t_ms is not None
            return Approximate(
                self._total / count,
                tolerance,
                lambda: avg_over_time(series.window(t_ms, window_ms)[1]),
            )
        if not self._extremes:  # asked for the first time: keep the deques from now on
            self._extremes = True
            self._rebuild(series)
        values, base = series.values, series.base
        largest = values[self._max[0] - base]
        smallest = values[self._min[0] - base]
        assert largest is not None and smallest is not None
        return largest if function == "max_over_time" else smallest

    def _rate(self, series: Series, count: int, is_rate: bool) -> float | None:
        if count < 2:
            return None
        assert self.t_ms is not None
        start_ms, end_ms = self.t_ms - self.window_ms, self.t_ms
        if self._nonfinite or self._resets:
            times, values = self._samples(series)
            return extrapolated_rate(times, values, start_ms, end_ms, self.window_ms, is_rate)
        first, last = self._indices[0] - series.base, self._indices[-1] - series.base
        first_value, last_value = series.values[first], series.values[last]
        assert first_value is not None and last_value is not None
        return extrapolate(
            last_value - first_value, series.times[first], series.times[last], first_value,
            count, start_ms, end_ms, self.window_ms, is_rate,
        )  # fmt: skip

    def _samples(self, series: Series) -> tuple[list[int], list[float]]:
        """The window's samples as they stand in the series (for the exact computations)."""
        assert self.t_ms is not None
        return series.window(self.t_ms, self.window_ms)

    def _rebuild(self, series: Series) -> None:
        """Aggregate the current window again from its samples."""
        assert self.t_ms is not None
        t_ms, self.t_ms = self.t_ms, None
        self.advance(series, t_ms)


def over_time(function: str, series: Series, t_ms: int, window_ms: int) -> float | None:
    """``function`` (avg/max/min_over_time, rate, increase) of ``series`` over
    ``[t_ms - window_ms, t_ms]``; ``None`` when it has no value there."""
    aggregate = series.windows.get(window_ms)
    if aggregate is None:
        aggregate = series.windows[window_ms] = WindowAggregate(window_ms)
    aggregate.advance(series, t_ms)
    return aggregate.compute(function, series)
