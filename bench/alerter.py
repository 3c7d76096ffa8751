"""The cost of one Alerter round with 1,000 rules, against the 5 ms target.

A round is what the evaluator actor does every ``evaluation_interval_ms``: snapshot the metrics
registry into the series store, evaluate every rule, step every alert's state, hand out the
transitions. The workload looks like a busy assistant's:

- about 120 series: system gauges (CPU per core, memory, swap, disk per mount, load), the
  runtime's own process, per-device speech gauges, per-plugin gauges and a few counters,
  sampled once a second and moved by a seeded random walk between rounds;
- 1,000 rules drawn (seeded) from the shapes people write: each condition a plain comparison
  of a gauge (67%, half with a label matcher), ``avg_over_time``/``max_over_time`` over 1, 5
  or 10 minutes (21%) or the ``rate`` of a counter (12%); 15% of the rules join two conditions
  with ``and``/``or``; ``for`` of 0 to 5 minutes, some ``keep_firing_for``, annotations with
  ``{{ $value }}``; thresholds put a minority of them over the line at any time;
- a store warmed with 10 minutes of history (600 samples a series), as after 10 minutes of
  running, so every window is full.

Side by side in one process, rounds interleaved: the Alerter's whole round
(``Alerter.evaluate_now``: rules compiled once, equal selectors read once a round, window
functions from running aggregates), and a naive evaluator that walks each rule's tree every
round and computes window functions from the samples, sharing nothing (evaluation only: no
snapshot, no state machine). The ratio says what compiling, sharing and the running aggregates
buy.

Run ``python -m bench.alerter [--quick] [--rounds N]``. Prints a table and writes
``bench/results/alerter.json``. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from actors.alerter import Alerter
from actors.alerter.expr import Compare, Expr, Matcher, RangeCall, Selector, SetOp, parse_expr
from actors.alerter.series import DEFAULT_LOOKBACK_MS, Series, SeriesStore
from actors.alerter.window import (
    avg_over_time,
    extrapolated_rate,
    max_over_time,
    min_over_time,
)
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import AlertRule, Config
from runtime.events import EventBus
from runtime.logging import configure_logging, reset_logging
from runtime.metrics import Labels, MetricsRegistry

RESULTS_PATH = Path(__file__).parent / "results" / "alerter.json"
TARGET_MS = 5.0  # a round's median CPU time (p99 reported beside it)
INTERVAL_S = 1.0


@dataclass(frozen=True)
class Sizes:
    """How much work a run does."""

    rules: int
    history_s: int  # warm-up: seconds of 1 Hz history in the store before measuring
    rounds: int  # measured rounds per side


FULL = Sizes(rules=1000, history_s=600, rounds=300)
QUICK = Sizes(rules=1000, history_s=120, rounds=60)


# -- the workload -----------------------------------------------------------------------------

DEVICES = ("kitchen", "bedroom", "hall", "office", "garage")
PLUGINS = tuple(f"plugin{i}" for i in range(12))
MOUNTS = ("/", "/home", "/var")
# name -> (label name, label values, typical value, spread)
GAUGES: dict[str, tuple[str | None, tuple[str, ...], float, float]] = {
    "cpu_percent": (None, (), 35.0, 30.0),
    "cpu_core_percent": ("core", tuple(str(i) for i in range(8)), 35.0, 40.0),
    "memory_percent": (None, (), 60.0, 25.0),
    "swap_percent": (None, (), 10.0, 10.0),
    "load1": (None, (), 1.5, 1.5),
    "disk_used_percent": ("mount", MOUNTS, 70.0, 20.0),
    "process_rss_bytes": (None, (), 1.2e9, 8e8),
    "process_threads": (None, (), 40.0, 20.0),
    "event_loop_lag_ms": (None, (), 5.0, 20.0),
    "stt_queue_depth": ("device", DEVICES, 2.0, 4.0),
    "tts_latency_ms": ("device", DEVICES, 300.0, 300.0),
    "wake_word_latency_ms": ("device", DEVICES, 200.0, 200.0),
    "plugin_rss_mb": ("plugin", PLUGINS, 150.0, 120.0),
    "plugin_cpu_percent": ("plugin", PLUGINS, 5.0, 10.0),
    "cache_hit_ratio": ("tier", ("l1", "l2", "l3"), 0.9, 0.1),
}
COUNTERS: dict[str, tuple[str, tuple[str, ...], float]] = {
    "requests_total": ("task_class", ("wake_word", "voice", "command", "background"), 20.0),
    "deadline_misses_total": ("task_class", ("wake_word", "voice", "command"), 0.2),
    "plugin_errors_total": ("plugin", PLUGINS, 0.05),
}


class Workload:
    """The gauges and counters, moved by a seeded random walk each round."""

    def __init__(self, registry: MetricsRegistry, rng: random.Random) -> None:
        self.registry = registry
        self.rng = rng
        self.levels: dict[tuple[str, str | None, str], float] = {}
        for name, (label, values, typical, _) in GAUGES.items():
            for value in values or ("",):
                self.levels[(name, label, value)] = typical
        self.totals = {(n, label, v): 0.0 for n, (label, vs, _) in COUNTERS.items() for v in vs}
        self.step()

    def step(self) -> None:
        """One second passes: gauges drift, counters count (some reset now and then)."""
        rng = self.rng
        for key, level in self.levels.items():
            name, label, value = key
            _, _, typical, spread = GAUGES[name]
            level += rng.gauss(0.0, spread / 20) + (typical - level) * 0.01
            self.levels[key] = level = min(max(level, 0.0), typical + 3 * spread)
            self._set(name, level, label, value)
        for key, total in self.totals.items():
            name, label, value = key
            rate = COUNTERS[name][2]
            total = 0.0 if rng.random() < 0.001 else total + rng.expovariate(1 / rate)
            self.totals[key] = total
            self._set(name, total, label, value)

    def _set(self, name: str, value: float, label: str | None, label_value: str) -> None:
        if label is None:
            self.registry.set(name, value)
        else:
            self.registry.set(name, value, **{label: label_value})


def _term(rng: random.Random) -> str:
    """One condition: a rate of a counter (12%), a window function over a gauge (21%) or a
    plain comparison of a gauge (67%); half the gauge selectors carry a label matcher."""
    if rng.random() < 0.12:
        name, (label, values, rate) = rng.choice(list(COUNTERS.items()))
        window = rng.choice(("1m", "5m"))
        selector = f'{name}{{{label}="{rng.choice(values)}"}}' if rng.random() < 0.5 else name
        return f"rate({selector}[{window}]) > {rate * rng.uniform(1.0, 1.4):.3g}"
    name, (gauge_label, gauge_values, typical, spread) = rng.choice(list(GAUGES.items()))
    selector = name
    if gauge_label is not None and rng.random() < 0.5:
        op = rng.choice(("=", "=", "!=", "=~"))
        value = rng.choice(gauge_values) + (".*" if op == "=~" else "")
        selector = f'{name}{{{gauge_label}{op}"{value}"}}'
    threshold = f"{typical + spread * rng.uniform(0.3, 2.0):.4g}"
    if rng.random() < 0.24:
        function = rng.choice(("avg_over_time", "max_over_time"))
        window = rng.choice(("1m", "5m", "10m"))
        return f"{function}({selector}[{window}]) > {threshold}"
    return f"{selector} > {threshold}"


def build_rules(count: int, rng: random.Random) -> list[AlertRule]:
    """``count`` rules in the shapes people write (see the module docstring)."""
    rules = []
    for index in range(count):
        expr = _term(rng)
        if rng.random() < 0.15:
            expr = f"{expr} {rng.choice(('and', 'or'))} {_term(rng)}"
        rules.append(
            AlertRule(
                name=f"Rule{index:04d}",
                expr=expr,
                for_=rng.choice((0.0, 0.0, 30.0, 60.0, 300.0)),
                keep_firing_for=rng.choice((0.0, 0.0, 0.0, 60.0)),
                labels={"severity": rng.choice(("info", "warning", "critical"))},
                annotations={"summary": f"rule {index}: {{{{ $value }}}}"},
            )
        )
    return rules


# -- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One way of running the rounds, and what its rounds cost: CPU time of the thread (what
    the round costs; the target) and wall time (that plus whatever else ran meanwhile)."""

    name: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    wall_p50_ms: float
    wall_p99_ms: float


@dataclass(frozen=True)
class RuleEvaluation:
    """What ``measure_rule_evaluation`` found."""

    rules: int
    series: int
    samples: int
    firing: int
    pending: int
    transitions_per_round: float
    rounds: int
    ours: Side
    naive: Side
    target_ms: float

    @property
    def ratio(self) -> float:
        """How many times the Alerter's whole round fits in the naive evaluation alone
        (median CPU time)."""
        return self.naive.p50_ms / self.ours.p50_ms

    @property
    def passed(self) -> bool:
        """The target: a round takes at most ``target_ms`` of CPU (the median round)."""
        return self.ours.p50_ms <= self.target_ms


def _percentile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(fraction * (len(sorted_ms) - 1)))]


def _side(name: str, cpu_s: list[float], wall_s: list[float]) -> Side:
    cpu = sorted(d * 1000 for d in cpu_s)
    wall = sorted(d * 1000 for d in wall_s)
    return Side(
        name, statistics.median(cpu), _percentile(cpu, 0.99), cpu[-1], statistics.fmean(cpu),
        statistics.median(wall), _percentile(wall, 0.99),
    )  # fmt: skip


class _Timer:
    """Times a block in thread CPU time and in wall time."""

    def __init__(self) -> None:
        self.cpu_s: list[float] = []
        self.wall_s: list[float] = []

    def __enter__(self) -> None:
        self._cpu, self._wall = time.thread_time(), time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.cpu_s.append(time.thread_time() - self._cpu)
        self.wall_s.append(time.perf_counter() - self._wall)


class Naive:
    """The baseline: each rule walks its own tree every round, computing window functions from
    the samples (Prometheus's arithmetic, as the Alerter's exact path does), sharing nothing."""

    def __init__(self, rules: list[AlertRule], store: SeriesStore) -> None:
        self.trees = [parse_expr(rule.expr) for rule in rules]
        self.store = store

    def evaluate(self, t_ms: int) -> int:
        """Every rule's result at ``t_ms``; returns how many samples held."""
        return sum(len(self._vector(tree, t_ms)) for tree in self.trees)

    def _vector(self, tree: Expr, t_ms: int) -> list[tuple[Labels, float]]:
        match tree:
            case Selector():
                found = ((s, s.instant(t_ms, DEFAULT_LOOKBACK_MS)) for s in self._series(tree))
                return [(s.labels, v) for s, v in found if v is not None]
            case RangeCall():
                return self._range(tree, t_ms)
            case Compare():
                holds = _OPS[tree.op]
                inner = self._vector(tree.vector, t_ms)
                if tree.number_first:
                    return [(labels, v) for labels, v in inner if holds(tree.threshold, v)]
                return [(labels, v) for labels, v in inner if holds(v, tree.threshold)]
            case SetOp():
                left, right = self._vector(tree.left, t_ms), self._vector(tree.right, t_ms)
                keys = {labels for labels, _ in right}
                if tree.op == "or":
                    taken = {labels for labels, _ in left}
                    return left + [(labels, v) for labels, v in right if labels not in taken]
                wanted = tree.op == "and"
                return [(labels, v) for labels, v in left if (labels in keys) == wanted]
        raise TypeError(tree)

    def _range(self, call: RangeCall, t_ms: int) -> list[tuple[Labels, float]]:
        out = []
        for series in self._series(call.selector):
            times, values = series.window(t_ms, call.window_ms)
            if call.function in ("rate", "increase"):
                start_ms = t_ms - call.window_ms
                is_rate = call.function == "rate"
                value = extrapolated_rate(times, values, start_ms, t_ms, call.window_ms, is_rate)
            elif values:
                value = _OVER_TIME[call.function](values)
            else:
                value = None
            if value is not None:
                out.append((series.labels, value))
        return out

    def _series(self, selector: Selector) -> list[Series]:
        return [
            series
            for series in self.store.family(selector.name).values()
            if all(_matches(m, series.label_map.get(m.label, "")) for m in selector.matchers)
        ]


def _matches(matcher: Matcher, text: str) -> bool:
    if matcher.op in ("=", "!="):
        return (text == matcher.value) == (matcher.op == "=")
    return (re.fullmatch(matcher.value, text) is not None) == (matcher.op == "=~")


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge,
    "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_OVER_TIME: dict[str, Callable[[list[float]], float]] = {
    "avg_over_time": avg_over_time, "max_over_time": max_over_time,
    "min_over_time": min_over_time,
}  # fmt: skip


def measure_rule_evaluation(
    rules: int = 1000, *, rounds: int = 300, history_s: int = 600, seed: int = 7
) -> RuleEvaluation:
    """Time ``rounds`` Alerter rounds of ``rules`` rules over a store warmed with ``history_s``
    seconds of samples (and, interleaved, the naive evaluation). Synchronous: a round is pure
    computation. Logs go where the shipped config sends them (a JSON file, level info; here in
    a temporary directory): a transition's log line is part of a round's cost. Resets the
    logging configuration when done."""
    with tempfile.TemporaryDirectory() as directory:
        configure_logging(level="info", file=Path(directory) / "bench.jsonl", console=False)
        try:
            return _measure(rules, rounds, history_s, seed)
        finally:
            reset_logging()


def _measure(rules: int, rounds: int, history_s: int, seed: int) -> RuleEvaluation:
    rng = random.Random(seed)
    clock = FakeClock()
    registry = MetricsRegistry(clock=clock)
    workload = Workload(registry, rng)
    rule_list = build_rules(rules, rng)
    config = msgspec.structs.replace(
        Config(),
        alerts=msgspec.structs.replace(Config().alerts, rules=rule_list, history_path=None),
    )
    context = ActorContext(clock=clock, events=EventBus(clock=clock), metrics=registry)
    alerter = Alerter(config, context)  # not running: its hand-outs find no actors (no cost)
    naive = Naive(rule_list, alerter.series)
    for _ in range(history_s):  # warm up: fill every window, settle the alerts
        _tick(clock, workload)
        alerter.evaluate_now()
    ours, theirs = _Timer(), _Timer()
    transitions = 0
    gc.collect()
    for _ in range(rounds):
        _tick(clock, workload)
        with ours:
            outcome = alerter.evaluate_now()
        transitions += len(outcome.transitions)
        t_ms = round(clock.now() * 1000)
        with theirs:
            naive.evaluate(t_ms)  # the store already holds this round's snapshot
    stats = alerter.statistics()
    return RuleEvaluation(
        rules=stats.rules,
        series=stats.series,
        samples=stats.samples,
        firing=stats.firing,
        pending=stats.pending,
        transitions_per_round=transitions / rounds,
        rounds=rounds,
        ours=_side("alerter round", ours.cpu_s, ours.wall_s),
        naive=_side("naive evaluation only", theirs.cpu_s, theirs.wall_s),
        target_ms=TARGET_MS,
    )


def _tick(clock: FakeClock, workload: Workload) -> None:
    clock._now += INTERVAL_S  # no timers involved: move the fake clock directly
    workload.step()


# -- reporting --------------------------------------------------------------------------------


_COLUMNS = ("cpu p50 ms", "cpu p99 ms", "cpu max ms", "wall p50 ms", "wall p99 ms")


def table(result: RuleEvaluation) -> str:
    rows = [
        f"{result.rules} rules over {result.series} series ({result.samples:,} samples held); "
        f"at the end {result.firing} firing, {result.pending} pending; "
        f"{result.transitions_per_round:.1f} transitions a round; {result.rounds} rounds",
        "",
        "| side                  | " + " | ".join(_COLUMNS) + " |",
        "|-----------------------|" + "|".join("-" * (len(c) + 1) + ":" for c in _COLUMNS) + "|",
    ]
    for side in (result.ours, result.naive):
        rows.append(
            f"| {side.name:<21} | {side.p50_ms:10.3f} | {side.p99_ms:10.3f} | "
            f"{side.max_ms:10.3f} | {side.wall_p50_ms:11.3f} | {side.wall_p99_ms:11.3f} |"
        )
    verdict = "PASS" if result.passed else "FAIL"
    rows += [
        "",
        f"naive evaluation / alerter round (median cpu): {result.ratio:.1f}x",
        f"target: a round's cpu time (median) <= {result.target_ms:g} ms -> {verdict}",
    ]
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "msgspec": version("msgspec"),
    }


def write_results(result: RuleEvaluation, sizes: Sizes, path: Path = RESULTS_PATH) -> None:
    record = {
        "benchmark": "alerter",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "sizes": asdict(sizes),
        "result": {**asdict(result), "ratio": round(result.ratio, 3)},
        "pass": result.passed,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when the target is met, else 1."""
    parser = argparse.ArgumentParser(prog="python -m bench.alerter", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 minutes of history, 60 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds must be >= 1, got {args.rounds}")
        sizes = Sizes(sizes.rules, sizes.history_s, args.rounds)
    result = measure_rule_evaluation(sizes.rules, rounds=sizes.rounds, history_s=sizes.history_s)
    print(table(result))
    write_results(result, sizes, args.output)
    print(f"wrote {args.output}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
