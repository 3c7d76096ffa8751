"""Evaluating expression trees over a ``SeriesStore`` at one instant, as Prometheus 2.x does.

A tree is compiled once into plain functions (closures over the tree's constants: nothing is
``eval``ed). A ``Compiler`` shared by all rules gives equal subtrees one function, and each
selector remembers its result for the current round: a hundred rules that read
``cpu_percent`` read it once per round. Window functions come from running aggregates
(``window.py``), shared by every selector that reads the same series over the same window.

Values agree with Prometheus 2.42 to the last bit wherever they can be seen (an alert's value,
its annotations; a test compares them with ``promtool``'s). ``avg_over_time`` may yield an
``Approximate``: a comparison far enough from its threshold is decided on it, a close one on
the exact value; whoever shows a value takes ``window.exact(value)``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from runtime.alertexpr import Compare, Expr, Matcher, Number, RangeCall, Selector, SetOp
from runtime.metrics import Labels

from .series import DEFAULT_LOOKBACK_MS, Series, SeriesStore
from .window import Approximate, over_time

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
_UNSET = object()


class Compiler:
    """Turns trees into ``VectorFn``s; equal subtrees share one (cached per round)."""

    def __init__(self) -> None:
        self._compiled: dict[Expr, VectorFn] = {}
        self.widest_window_ms = 0

    def compile(self, tree: Expr) -> VectorFn:
        """The function computing ``tree``. Raises ``TypeError`` for a bare number."""
        compiled = self._compiled.get(tree)
        if compiled is None:
            compiled = self._build(tree)
            if isinstance(tree, Selector | RangeCall):  # what rules share: read once a round
                compiled = _per_round(compiled)
            self._compiled[tree] = compiled
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
    function, window_ms = call.function, call.window_ms

    def range_vector(at: Instant) -> Vector:
        t_ms = at.t_ms
        out: Vector = []
        for series in matched.get(at.store):
            # Another selector may have computed this series' window this round already.
            aggregate = series.windows.get(window_ms)
            if aggregate is not None and aggregate.t_ms == t_ms and not series.rewrites:
                result = aggregate.results.get(function, _UNSET)
                if result is _UNSET:
                    result = aggregate.compute(function, series)
            else:
                result = over_time(function, series, t_ms, window_ms)
            if result is not None:
                out.append((None, series.labels, result))
        return out

    return range_vector


# -- comparisons and set operations ---------------------------------------------------------

# ``5 < x`` keeps what ``x > 5`` keeps (NaN fails both), so a number first flips the operator.
_FLIPPED = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}
_HOLDS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge,
    "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
# One list comprehension per operator: the comparison inline, no call per sample.
_FILTERS: dict[str, Callable[[Vector, float], Vector]] = {
    ">": lambda vector, threshold: [s for s in vector if s[2] > threshold],
    "<": lambda vector, threshold: [s for s in vector if s[2] < threshold],
    ">=": lambda vector, threshold: [s for s in vector if s[2] >= threshold],
    "<=": lambda vector, threshold: [s for s in vector if s[2] <= threshold],
    "==": lambda vector, threshold: [s for s in vector if s[2] == threshold],
    "!=": lambda vector, threshold: [s for s in vector if s[2] != threshold],
}


def _compare(node: Compare, vector: VectorFn) -> VectorFn:
    op = _FLIPPED[node.op] if node.number_first else node.op
    threshold = node.threshold
    if not isinstance(node.vector, RangeCall) or node.vector.function != "avg_over_time":
        keep = _FILTERS[op]
        return lambda at: keep(vector(at), threshold)  # exact values only
    holds = _HOLDS[op]

    def compare_approximate(at: Instant) -> Vector:
        out: Vector = []
        for sample in vector(at):
            value = sample[2]
            if type(value) is Approximate and not abs(value - threshold) > value.tolerance:
                value = value.exact()  # too close to call on the approximation
                sample = (sample[0], sample[1], value)
            if holds(value, threshold):
                out.append(sample)
        return out

    return compare_approximate


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
