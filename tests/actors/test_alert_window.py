"""Window functions from running aggregates: always what the samples themselves give, and a
comparison decided on an approximate mean only when the exact one could not change it."""

from __future__ import annotations

import math
import random

import pytest

from actors.alerter.evaluate import Compiler, Instant
from actors.alerter.rules import RuleGroup
from actors.alerter.series import STALE, Series, SeriesStore
from actors.alerter.window import (
    Approximate,
    avg_over_time,
    exact,
    extrapolated_rate,
    max_over_time,
    min_over_time,
    over_time,
)
from runtime.alertexpr import parse_expr
from runtime.config import AlertRule

FUNCTIONS = ("avg_over_time", "max_over_time", "min_over_time", "rate", "increase")


def from_samples(function: str, series: Series, t_ms: int, window_ms: int) -> float | None:
    """The function computed from the window's samples, Prometheus's way."""
    times, values = series.window(t_ms, window_ms)
    if function in ("rate", "increase"):
        start_ms, is_rate = t_ms - window_ms, function == "rate"
        return extrapolated_rate(times, values, start_ms, t_ms, window_ms, is_rate)
    if not values:
        return None
    over = {"avg_over_time": avg_over_time, "max_over_time": max_over_time}
    return over.get(function, min_over_time)(values)


def same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def random_value(rng: random.Random, previous: float) -> float | None:
    roll = rng.random()
    if roll < 0.05:
        return STALE
    if roll < 0.07:
        return rng.choice((math.nan, math.inf, -math.inf))
    if roll < 0.1:
        return rng.uniform(0, 5)  # a counter reset
    return previous + rng.choice((0.1, 0.2, 0.7, 1.3, 2.9))


@pytest.mark.parametrize("seed", range(6))
def test_running_aggregates_give_what_the_samples_give(seed: int) -> None:
    """Across gaps, stale markers, NaN and infinities, resets, pruning, a rewritten sample and
    time stepping back, every function equals its computation from the samples (the mean
    exactly once asked, and within its tolerance before)."""
    rng = random.Random(seed)
    series = Series("x", ())
    t_ms, previous, checked = 0, 0.0, 0
    for step in range(400):
        t_ms += rng.choice((1000, 1000, 1000, 2500))
        value = random_value(rng, previous)
        series.append(t_ms, value)
        previous = value if value is not None and math.isfinite(value) else previous
        if step == 200:
            series.append(t_ms, 42.0)  # rewritten in place
        if step % 50 == 49:
            series.prune(t_ms - 60_000)
        at = t_ms - 3000 if step % 37 == 0 else t_ms  # now and then, an earlier time
        for window_ms in (5000, 30_000, 60_000):
            for function in FUNCTIONS:
                got = over_time(function, series, at, window_ms)
                want = from_samples(function, series, at, window_ms)
                if type(got) is Approximate and want is not None:
                    assert abs(got - want) <= got.tolerance
                assert same(exact(got) if got is not None else None, want), (step, function)
                checked += 1
    assert checked == 400 * 3 * 5


def load_series() -> SeriesStore:
    """load1 at 5.4, 6.2, 6.1, 4.6: the mean by sum/count is 5.575000000000001, Prometheus's
    compensated mean 5.574999999999999 (checked with promtool)."""
    store = SeriesStore()
    for i, value in enumerate((5.4, 6.2, 6.1, 4.6)):
        store.append("load1", i * 60_000, value)
    return store


def test_the_approximation_differs_from_prometheus_in_the_last_bit() -> None:
    """The case this is about: the approximate mean is not Prometheus's, the exact one is."""
    value = over_time("avg_over_time", load_series().family("load1")[()], 180_000, 180_000)
    assert type(value) is Approximate and float(value) == 5.575000000000001
    assert value.exact() == 5.574999999999999 and abs(value - value.exact()) <= value.tolerance


@pytest.mark.parametrize(
    ("condition", "holds"),
    [("> 5.575", False), (">= 5.575", False), ("< 5.575", True), ("<= 5.575", True),
     ("== 5.574999999999999", True), ("!= 5.575", True), ("> 5.574", True)],
)  # fmt: skip
def test_a_close_comparison_is_decided_on_the_exact_mean(condition: str, holds: bool) -> None:
    """Near its threshold a comparison uses Prometheus's exact mean, whether the rule is
    answered with others (a threshold group) or by its own tree (inside an and)."""
    store = load_series()
    expr = f"avg_over_time(load1[3m]) {condition}"
    direct = Compiler().compile(parse_expr(expr))(Instant(store, 180_000, 1))
    assert bool(direct) == holds
    rules = [
        AlertRule(name="Grouped", expr=expr),
        AlertRule(name="Alone", expr=f"{expr} and load1 > 0"),
    ]
    group = RuleGroup(rules, store)
    group.evaluate(180_000)
    firing = group.alerts("firing")
    assert sorted(a.rule.name for a in firing) == (["Alone", "Grouped"] if holds else [])
    assert all(a.value == 5.574999999999999 for a in firing)


def test_a_number_first_comparison_is_grouped_with_the_flipped_operator() -> None:
    """'5 < x' and 'x > 5' select the same samples, NaN in neither."""
    store = SeriesStore()
    for device, value in (("a", 4.0), ("b", 6.0), ("c", math.nan)):
        store.append("x", 0, value, (("device", device),))
    rules = [AlertRule(name="First", expr="5 < x"), AlertRule(name="Second", expr="x > 5")]
    group = RuleGroup(rules, store)
    group.evaluate(0)
    assert [(a.rule.name, a.labels["device"]) for a in group.alerts("firing")] == [
        ("First", "b"), ("Second", "b"),
    ]  # fmt: skip


def test_an_approximate_mean_stays_the_mean_of_its_own_window() -> None:
    """Made exact after the window moved on, a mean is still the one of its own window."""
    store = load_series()
    series = store.family("load1")[()]
    earlier = over_time("avg_over_time", series, 180_000, 180_000)
    store.append("load1", 240_000, 100.0)
    later = over_time("avg_over_time", series, 240_000, 180_000)
    assert type(earlier) is Approximate and type(later) is Approximate
    assert exact(later) == avg_over_time([6.2, 6.1, 4.6, 100.0])
    assert exact(earlier) == 5.574999999999999
