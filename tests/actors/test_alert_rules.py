"""The pure parts of the Alerter: the series store (lookback, staleness, pruning), evaluation
(matchers, matching, shared work) and the rule state machine."""

from __future__ import annotations

import math
from typing import Any

import pytest

from actors.alerter.evaluate import Compiler, Instant
from actors.alerter.rules import RuleGroup
from actors.alerter.series import STALE, Series, SeriesStore
from actors.alerter.window import avg_over_time, extrapolated_rate
from runtime.alertexpr import parse_expr
from runtime.clock import FakeClock
from runtime.config import AlertRule
from runtime.metrics import MetricsRegistry

KITCHEN = (("device", "kitchen"),)


def rule(name: str = "A", expr: str = "x > 1", **fields: Any) -> AlertRule:
    return AlertRule(name=name, expr=expr, **fields)


def evaluate(store: SeriesStore, expr: str, t_ms: int, round: int = 1) -> list[Any]:
    return Compiler().compile(parse_expr(expr))(Instant(store, t_ms, round))


# -- the series store -------------------------------------------------------------------------


def test_a_series_is_append_only() -> None:
    """A sample at the newest time replaces it; an older one is refused, naming both times."""
    series = Series("x", KITCHEN)
    series.append(1000, 1.0)
    series.append(1000, 2.0)
    assert (series.times, series.values) == ([1000], [2.0])
    with pytest.raises(ValueError, match="sample at 500 ms is older than the newest \\(1000 ms\\)"):
        series.append(500, 3.0)


def test_instant_reads_take_the_newest_sample_within_the_lookback() -> None:
    """The lookback includes its edge; a stale newest sample hides older ones; a read before
    the newest sample finds the one before it."""
    series = Series("x", ())
    for t_ms, value in ((0, 1.0), (60_000, 2.0), (120_000, STALE), (180_000, 4.0)):
        series.append(t_ms, value)
    assert series.instant(90_000, 300_000) == 2.0
    assert series.instant(150_000, 300_000) is None  # the newest at 150 s is the stale marker
    assert series.instant(480_000, 300_000) == 4.0  # exactly 5 minutes old: still counts
    assert series.instant(480_001, 300_000) is None
    assert series.instant(-1, 300_000) is None and Series("y", ()).instant(0, 1) is None


def test_window_reads_skip_stale_markers_and_include_both_edges() -> None:
    """A range read holds the non-stale samples in [t - window, t]."""
    series = Series("x", ())
    for t_ms, value in ((0, 1.0), (1000, STALE), (2000, 3.0), (3000, 4.0)):
        series.append(t_ms, value)
    assert series.window(2000, 2000) == ([0, 2000], [1.0, 3.0])
    assert series.window(3000, 1000) == ([2000, 3000], [3.0, 4.0])


def test_ingest_snapshots_gauges_and_marks_vanished_ones_stale() -> None:
    """Each snapshot samples every gauge; a gauge gone since the last one gets a stale marker
    once; series created change the store's generation."""
    registry = MetricsRegistry(clock=FakeClock())
    registry.set("x", 1.0, device="kitchen")
    registry.set("y", 2.0)
    store = SeriesStore()
    assert store.ingest(registry, 0) == 2 and store.generation == 2
    registry.remove("x", device="kitchen")
    assert store.ingest(registry, 1000) == 2
    assert store.ingest(registry, 2000) == 1
    assert store.family("x")[KITCHEN].values == [1.0, STALE]
    assert len(store) == 2 and store.samples == 5


def test_prune_forgets_old_samples_and_dead_series() -> None:
    """Samples older than the retention go; a series left with nothing but a stale marker goes
    too (and the generation moves, so selectors look again)."""
    store = SeriesStore(retention_ms=1000)
    store.append("x", 0, 1.0)
    store.append("x", 500, STALE)
    store.append("y", 0, 1.0)
    store.append("y", 1500, 2.0)
    generation = store.generation
    store.prune(1600)
    assert store.family("x") == {} and store.family("y")[()].times == [1500]
    assert store.generation == generation + 1


# -- evaluation -------------------------------------------------------------------------------


def test_matchers_treat_a_missing_label_as_empty_and_anchor_regexes() -> None:
    """x{a=""} selects series without a; regular expressions match whole values; __name__
    may be matched too."""
    store = SeriesStore()
    store.append("x", 0, 1.0, (("room", "kitchen"),))
    store.append("x", 0, 2.0, ())
    assert [v for *_, v in evaluate(store, 'x{room=""} > 0', 0)] == [2.0]
    assert evaluate(store, 'x{room=~"kit"} > 0', 0) == []
    assert [v for *_, v in evaluate(store, 'x{room=~"kit.*"} > 0', 0)] == [1.0]
    assert len(evaluate(store, 'x{__name__="x"} > 0', 0)) == 2
    assert evaluate(store, 'x{__name__!="x"} > 0', 0) == []


def test_set_operations_match_on_chosen_labels() -> None:
    """and/unless match on all labels by default, on() on the listed ones (none: anything),
    ignoring() on all but the listed ones; or adds only unmatched right-side samples."""
    store = SeriesStore()
    store.append("a", 0, 1.0, (("d", "1"), ("r", "x")))
    store.append("b", 0, 1.0, (("d", "1"),))
    assert evaluate(store, "a > 0 and b > 0", 0) == []
    assert len(evaluate(store, "a > 0 and on(d) b > 0", 0)) == 1
    assert len(evaluate(store, "a > 0 and ignoring(r) b > 0", 0)) == 1
    assert len(evaluate(store, "a > 0 and on() b > 0", 0)) == 1
    assert evaluate(store, "a > 0 unless on(d) b > 0", 0) == []
    assert [name for name, *_ in evaluate(store, "a > 0 or on(d) b > 0", 0)] == ["a"]
    assert [name for name, *_ in evaluate(store, "a > 5 or b > 0", 0)] == ["b"]


def test_range_functions_need_enough_samples() -> None:
    """rate needs two samples; the over_time functions one; none at all gives no sample."""
    assert extrapolated_rate([0], [1.0], -60_000, 0, 60_000, True) is None
    store = SeriesStore()
    store.append("c", 0, 5.0)
    assert evaluate(store, "rate(c[1m]) >= 0", 0) == []
    assert [v for *_, v in evaluate(store, "min_over_time(c[1m]) >= 0", 0)] == [5.0]
    assert evaluate(store, "max_over_time(c[1m]) >= 0", 120_000) == []
    assert avg_over_time([math.inf, 1.0, math.inf]) == math.inf


def test_rules_reading_the_same_metric_share_one_read_per_round() -> None:
    """Equal subtrees compile to one function that reads the store once per round."""
    store = SeriesStore()
    store.append("x", 0, 5.0)
    group = RuleGroup([rule("A", "x > 1"), rule("B", "x > 2"), rule("C", "x > 9")], store)
    reads = []
    original = Series.instant

    def counted(self: Series, t_ms: int, lookback_ms: int) -> float | None:
        reads.append(t_ms)
        return original(self, t_ms, lookback_ms)

    Series.instant = counted  # type: ignore[method-assign]
    try:
        group.evaluate(0)
        group.evaluate(0)  # a new round reads again
    finally:
        Series.instant = original  # type: ignore[method-assign]
    assert reads == [0, 0]
    assert [a.rule.name for a in group.alerts("firing")] == ["A", "B"]


# -- the state machine ------------------------------------------------------------------------


def test_a_label_rendering_empty_is_dropped_and_labels_override() -> None:
    """Rule labels are rendered per sample; an empty one removes the label (as in Prometheus),
    and alertname is always the rule's name."""
    store = SeriesStore()
    store.append("x", 0, 5.0, (("alertname", "spoof"), ("owner", ""), ("room", "k")))
    labels = {"owner": "{{ $labels.owner }}", "room": "room-{{ $labels.room }}"}
    group = RuleGroup([rule(labels=labels)], store)
    group.evaluate(0)
    [alert] = group.alerts("firing")
    assert alert.labels == {"alertname": "A", "room": "room-k"}


def test_annotations_render_lazily_and_follow_the_value() -> None:
    """Annotations render when read, from the latest sample, and are cached until it changes;
    a label template using $value makes each value its own alert."""
    store = SeriesStore()
    group = RuleGroup(
        [rule(annotations={"v": "{{ $value }}"}), rule("B", labels={"v": "{{ $value }}"})], store
    )
    store.append("x", 0, 5.0)
    group.evaluate(0)
    alert = group.alerts("firing")[0]
    first = alert.annotations()
    assert first == {"v": "5"} and alert.annotations() is first
    store.append("x", 1000, 6.0)
    group.evaluate(1000)
    assert alert.annotations() == {"v": "6"}
    assert [a.labels["v"] for a in group.alerts("firing")[1:]] == ["6"]


def test_a_label_clash_fails_the_rule_without_touching_its_state() -> None:
    """Two samples with the same alert labels fail the rule's round; its alerts stay as they
    were."""
    store = SeriesStore()
    group = RuleGroup([rule(labels={"device": "all"})], store)
    store.append("x", 0, 5.0, KITCHEN)
    group.evaluate(0)
    store.append("x", 1000, 5.0, (("device", "hall"),))
    outcome = group.evaluate(1000)
    assert outcome.errors[0][0] == "A" and "several series" in outcome.errors[0][1]
    assert outcome.transitions == [] and len(group.alerts("firing")) == 1


def test_due_again_lists_firing_alerts_sent_a_repeat_interval_ago() -> None:
    """Only firing alerts that were sent, and at least repeat_ms ago, are due again."""
    store = SeriesStore()
    group = RuleGroup([rule(), rule("P", for_=60.0)], store)
    store.append("x", 0, 5.0)
    group.evaluate(0)
    [firing] = group.alerts("firing")
    assert group.due_again(10_000, 5000) == []  # never sent
    firing.last_sent_ms = 0
    assert group.due_again(4999, 5000) == [] and group.due_again(5000, 5000) == [firing]


def test_replace_refuses_a_bad_rule_and_keeps_the_old_ones() -> None:
    """A rule that does not parse makes replace raise ValueError and change nothing; the
    store's retention follows the widest window."""
    store = SeriesStore()
    group = RuleGroup([rule()], store)
    with pytest.raises(ValueError, match="at column"):
        group.replace([rule("B", "x >")])
    assert [s.rule.name for s in group.states] == ["A"]
    group.replace([rule("W", "max_over_time(x[10m]) > 1")])
    assert store.retention_ms == 300_000 + 600_000
