"""Evaluating expression trees over a ``SeriesStore`` at one instant, as Prometheus 2.x does.

A tree is compiled once into plain functions (closures over the tree's constants: nothing is
``eval``ed). A ``Compiler`` shared by all rules gives equal subtrees one function, and each
function remembers its result for the current round: a hundred rules that read
``cpu_percent`` read it once per round.

The arithmetic follows Prometheus 2.42 step by step (the Kahan-compensated mean of
``avg_over_time``, the extrapolation of ``rate``), so values agree to the last bit: annotations
print them, and a test compares those with ``promtool``'s.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

from runtime.metrics import Labels

from .expr import Compare, Expr, Matcher, Number, RangeCall, Selector, SetOp
from .series import DEFAULT_LOOKBACK_MS, Series, SeriesStore

__all__ = ["Compiler", "Instant", "VSample", "Vector", "VectorFn"]

VSample = tuple[str | None, Labels, float]
"""One element of an instant vector: metric name (``None`` once a function dropped it),
labels (sorted pairs, without ``__name__``) and value."""
Vector = list[VSample]


class Instant:
    """What one evaluation round reads: the store, the time, the lookback and a round number
    (functions cache their result per round)."""

    __slots__ = ("lookback_ms", "round", "store", "t_ms")

    def __init__(
        self, store: SeriesStore, t_ms: int, round: int, lookback_ms: int = DEFAULT_LOOKBACK_MS
    ) -> None:
        self.store = store
        self.t_ms = t_ms
        self.round = round
        self.lookback_ms = lookback_ms


VectorFn = Callable[[Instant], Vector]


class Compiler:
    """Turns trees into ``VectorFn``s; equal subtrees share one (cached per round)."""

    def __init__(self) -> None:
        self._compiled: dict[Expr, VectorFn] = {}
        self.widest_window_ms = 0

    def compile(self, tree: Expr) -> VectorFn:
        """The function computing ``tree``. Raises ``TypeError`` for a bare number."""
        compiled = self._compiled.get(tree)
        if compiled is None:
            compiled = self._compiled[tree] = _per_round(self._build(tree))
        return compiled

    def _build(self, tree: Expr) -> VectorFn:
        match tree:
            case Selector():
                return _selector(tree)
            case RangeCall():
                self.widest_window_ms = max(self.widest_window_ms, tree.window_ms)
                return _range_call(tree)
            case Compare():
                return _compare(tree, self.compile(tree.vector))
            case SetOp():
                return _set_op(tree, self.compile(tree.left), self.compile(tree.right))
            case Number():
                raise TypeError("a number is not a vector; compare a metric with it")
        raise TypeError(f"not an expression tree: {tree!r}")


def _per_round(fn: VectorFn) -> VectorFn:
    """``fn``, computed at most once per round (results are shared: never mutate them)."""
    last_round = -1
    last: Vector = []

    def cached(at: Instant) -> Vector:
        nonlocal last_round, last
        if at.round != last_round:
            last, last_round = fn(at), at.round
        return last

    return cached


# -- selectors ------------------------------------------------------------------------------


def _matches(matchers: tuple[Matcher, ...]) -> Callable[[Series], bool]:
    """A predicate for series; a missing label reads as "" (so ``x{a=""}`` matches no ``a``)."""
    checks = [_matcher_check(matcher) for matcher in matchers]
    return lambda series: all(check(series) for check in checks)


def _matcher_check(matcher: Matcher) -> Callable[[Series], bool]:
    label, value = matcher.label, matcher.value
    wanted = matcher.op in ("=", "=~")
    pattern = re.compile(value) if matcher.op in ("=~", "!~") else None

    def check(series: Series) -> bool:
        text = series.name if label == "__name__" else series.label_map.get(label, "")
        # Prometheus anchors regular expressions at both ends.
        found = text == value if pattern is None else pattern.fullmatch(text) is not None
        return found == wanted

    return check


class _Matched:
    """The series of a selector, recomputed only when the store's set of series changes."""

    __slots__ = ("generation", "predicate", "selector", "series")

    def __init__(self, selector: Selector) -> None:
        self.selector = selector
        self.predicate = _matches(selector.matchers)
        self.generation = -1
        self.series: list[Series] = []

    def get(self, store: SeriesStore) -> list[Series]:
        if store.generation != self.generation:
            family = store.family(self.selector.name).values()
            self.series = [series for series in family if self.predicate(series)]
            self.generation = store.generation
        return self.series


def _selector(selector: Selector) -> VectorFn:
    matched = _Matched(selector)

    def instant_vector(at: Instant) -> Vector:
        t_ms, lookback_ms = at.t_ms, at.lookback_ms
        out: Vector = []
        for series in matched.get(at.store):
            value = series.instant(t_ms, lookback_ms)
            if value is not None:
                out.append((series.name, series.labels, value))
        return out

    return instant_vector


def _range_call(call: RangeCall) -> VectorFn:
    matched = _Matched(call.selector)
    window_ms = call.window_ms
    if call.function in ("rate", "increase"):
        is_rate = call.function == "rate"

        def reduce(times: list[int], values: list[float], t_ms: int) -> float | None:
            return extrapolated_rate(times, values, t_ms - window_ms, t_ms, window_ms, is_rate)

    else:
        over_time = _OVER_TIME[call.function]

        def reduce(times: list[int], values: list[float], t_ms: int) -> float | None:
            return over_time(values)

    def range_vector(at: Instant) -> Vector:
        t_ms = at.t_ms
        out: Vector = []
        for series in matched.get(at.store):
            times, values = series.window(t_ms, window_ms)
            if values and (result := reduce(times, values, t_ms)) is not None:
                out.append((None, series.labels, result))
        return out

    return range_vector


# -- functions over a window (Prometheus 2.42's arithmetic) -----------------------------------


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
    """``rate`` (per second) or ``increase`` of a counter over ``[start_ms, end_ms]``.

    Counter resets add the value before the reset; the result is extrapolated towards the
    window's edges when the samples come close to them (within 1.1 average intervals), else
    by half an interval, and never below the counter's zero point. ``None`` with fewer than
    two samples.
    """
    if len(values) < 2:
        return None
    result = values[-1] - values[0]
    previous = values[0]
    for value in values[1:]:
        if value < previous:
            result += previous
        previous = value
    to_start = (times[0] - start_ms) / 1000
    to_end = (end_ms - times[-1]) / 1000
    sampled = (times[-1] - times[0]) / 1000
    average_step = sampled / (len(values) - 1)
    if result > 0 and values[0] >= 0:
        to_zero = sampled * (values[0] / result)
        to_start = min(to_start, to_zero)
    threshold = average_step * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_step / 2
    interval += to_end if to_end < threshold else average_step / 2
    factor = interval / sampled
    if is_rate:
        factor /= window_ms // 1000 + (window_ms % 1000) / 1000  # Go's Duration.Seconds()
    return result * factor


# -- comparisons and set operations ---------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def _compare(node: Compare, vector: VectorFn) -> VectorFn:
    holds, threshold = _COMPARE[node.op], node.threshold
    if node.number_first:
        return lambda at: [s for s in vector(at) if holds(threshold, s[2])]
    return lambda at: [s for s in vector(at) if holds(s[2], threshold)]


def _signature(node: SetOp) -> Callable[[VSample], Labels]:
    """What two samples must share to match: every label (the name is never one), the ``on``
    labels, or every label but the ``ignoring`` ones."""
    if node.on is not None:
        on = node.on

        def on_labels(sample: VSample) -> Labels:
            labels = dict(sample[1])
            return tuple((name, labels.get(name, "")) for name in on)

        return on_labels
    if node.ignoring:
        ignoring = frozenset(node.ignoring)
        return lambda sample: tuple(pair for pair in sample[1] if pair[0] not in ignoring)
    return lambda sample: sample[1]


def _set_op(node: SetOp, left: VectorFn, right: VectorFn) -> VectorFn:
    signature = _signature(node)
    if node.op == "and":

        def and_(at: Instant) -> Vector:
            lhs = left(at)
            if not lhs:
                return lhs
            wanted = {signature(s) for s in right(at)}
            return [s for s in lhs if signature(s) in wanted]

        return and_
    if node.op == "unless":

        def unless(at: Instant) -> Vector:
            lhs = left(at)
            if not lhs:
                return lhs
            unwanted = {signature(s) for s in right(at)}
            return [s for s in lhs if signature(s) not in unwanted]

        return unless

    def or_(at: Instant) -> Vector:
        lhs = left(at)
        taken = {signature(s) for s in lhs}
        return lhs + [s for s in right(at) if signature(s) not in taken]

    return or_
