"""How a round evaluates many rules at once: rules that compare the same vector with a number
are answered together.

Most rules read ``<vector> > <number>`` (or ``<``, ``>=``, ``<=``), and many share the vector
(``cpu_percent > 80``, ``cpu_percent > 95``, ...). For each such vector the plan keeps the
rules' thresholds sorted: per sample of the vector, one binary search finds every rule the
sample satisfies, so a quiet rule costs nothing at all. Every other rule (``and``/``or``,
``==``, a NaN threshold) evaluates its own compiled tree. Both give exactly what each rule's
own tree would: the same samples, in the same order, with the same values.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.alertexpr import Compare, RangeCall, Selector

from .evaluate import Compiler, Instant, Vector, VectorFn
from .window import Approximate

if TYPE_CHECKING:
    from .rules import CompiledRule

__all__ = ["EvaluationPlan"]

_FLIPPED = {">": "<", "<": ">", ">=": "<=", "<=": ">="}
_ORDERING = (">", ">=", "<", "<=")


def _satisfied(op: str, thresholds: list[float], value: float) -> tuple[int, int]:
    """Which sorted thresholds t a sample value v satisfies, as the slice [start, stop): for
    v > t the thresholds below v, v >= t those at or below, v < t above, v <= t at or above."""
    if op == ">":
        return 0, bisect_left(thresholds, value)
    if op == ">=":
        return 0, bisect_right(thresholds, value)
    if op == "<":
        return bisect_right(thresholds, value), len(thresholds)
    return bisect_left(thresholds, value), len(thresholds)


class _ThresholdGroup:
    """The rules comparing one vector by one operator, by ascending threshold."""

    __slots__ = ("indices", "op", "thresholds", "vector")

    def __init__(self, vector: VectorFn, op: str, members: list[tuple[float, int]]) -> None:
        members.sort()
        self.vector = vector
        self.op = op
        self.thresholds = [threshold for threshold, _ in members]
        self.indices = [index for _, index in members]

    def collect(self, at: Instant, results: dict[int, Vector]) -> None:
        """Append each sample of the vector to the result of every rule it satisfies."""
        op, thresholds, indices = self.op, self.thresholds, self.indices
        for sample in self.vector(at):
            value = sample[2]
            if value != value:
                continue  # NaN satisfies no comparison
            if type(value) is Approximate:
                low = _satisfied(op, thresholds, value - value.tolerance)
                if low == _satisfied(op, thresholds, value + value.tolerance):
                    start, stop = low  # no threshold within the tolerance: settled
                else:  # a threshold is too close to call: use the exact value
                    value = value.exact()
                    sample = (sample[0], sample[1], value)
                    start, stop = _satisfied(op, thresholds, value)
            else:
                start, stop = _satisfied(op, thresholds, value)
            for index in indices[start:stop]:
                found = results.get(index)
                if found is None:
                    results[index] = [sample]
                else:
                    found.append(sample)


class EvaluationPlan:
    """Computes, for one round, every rule's result (``index -> samples``; quiet rules absent)."""

    def __init__(self, rules: Sequence[CompiledRule], compiler: Compiler) -> None:
        members: dict[tuple[VectorFn, str], list[tuple[float, int]]] = {}
        self._own: list[tuple[int, VectorFn]] = []
        for index, rule in enumerate(rules):
            grouped = _grouping(rule, compiler)
            if grouped is None:
                self._own.append((index, rule.vector))
            else:
                vector, op, threshold = grouped
                members.setdefault((vector, op), []).append((threshold, index))
        self._groups = [_ThresholdGroup(v, op, m) for (v, op), m in members.items()]

    def results(self, at: Instant) -> dict[int, Vector]:
        results: dict[int, Vector] = {}
        for group in self._groups:
            group.collect(at, results)
        for index, vector in self._own:
            result = vector(at)
            if result:
                results[index] = result
        return results


def _grouping(rule: CompiledRule, compiler: Compiler) -> tuple[VectorFn, str, float] | None:
    """``(vector, operator, threshold)`` for a rule that compares a selector or a window
    function with a number by an ordering operator; ``None`` for any other rule."""
    tree = rule.tree
    if not isinstance(tree, Compare) or not isinstance(tree.vector, Selector | RangeCall):
        return None
    op = _FLIPPED.get(tree.op) if tree.number_first else tree.op
    if op not in _ORDERING or math.isnan(tree.threshold):
        return None
    return compiler.compile(tree.vector), op, tree.threshold
