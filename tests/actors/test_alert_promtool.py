"""Alert semantics checked against Prometheus itself.

Each scenario in ``alert_scenarios/`` gives input series in promtool's notation, alert rules
(in our config's format) and the transitions we expect. The test feeds the expanded series into
the Alerter's series store at their timestamps, steps the evaluation on the fake clock at the
scenario's evaluation interval, and records which alerts fire at every evaluation time (labels
and annotations). Then it writes a promtool unit test whose ``alert_rule_test`` entries, at
EVERY evaluation time and for every rule, list exactly those alerts, and runs
``promtool test rules``: promtool passes only if Prometheus agrees with us everywhere.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from actors.alerter import Alerter
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import parse_config
from runtime.events import AlertEvent, EventBus

SCENARIOS = sorted((Path(__file__).parent / "alert_scenarios").glob("*.yaml"))
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN"
_EXPANDING = re.compile(rf"^(?P<start>{_NUMBER})(?:(?P<step>[-+](?:\d+\.?\d*|\.\d+)))?x(?P<n>\d+)$")
_SERIES = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?$")
_LABEL = re.compile(r'\s*([A-Za-z_]\w*)\s*=\s*"([^"]*)"\s*,?')
MISSING = "missing"
STALE = "stale"


def promtool() -> str:
    """The promtool binary; fails the test (never skips) when it is not installed."""
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail(
            "promtool is missing: run .ci/install-system-deps (Debian package 'prometheus')"
        )
    return found


# -- promtool's series notation -----------------------------------------------------------------


def _number(text: str) -> float:
    return float(text.replace("Inf", "inf").replace("NaN", "nan"))


def expand_values(text: str) -> list[float | str]:
    """promtool's ``values``: ``'1 2+3x2 _ _x2 stale 5x1'`` -> each step's value, ``MISSING``
    or ``STALE``. ``a+bxn`` is ``n+1`` values from ``a`` by repeated addition of ``b``."""
    out: list[float | str] = []
    for token in text.split():
        if token == "_":
            out.append(MISSING)
        elif token.startswith("_x"):
            out += [MISSING] * int(token[2:])
        elif token == "stale":
            out.append(STALE)
        elif (match := _EXPANDING.match(token)) is not None:
            value = _number(match["start"])
            step = float(match["step"]) if match["step"] else 0.0
            for _ in range(int(match["n"]) + 1):
                out.append(value)
                value += step
        else:
            out.append(_number(token))
    return out


def parse_series(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``'cpu{core="1"}'`` -> ``("cpu", (("core", "1"),))``."""
    match = _SERIES.match(text.strip())
    assert match is not None, f"bad series {text!r}"
    labels = tuple(sorted(_LABEL.findall(match["labels"] or "")))
    return match["name"], labels


def duration_ms(text: str | int) -> int:
    if isinstance(text, int):
        return text * 1000
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", text))


def show(t_ms: int) -> str:
    """A time as promtool and our expectations write it: ``90s``, ``2m``, ``1500ms``."""
    if t_ms % 60_000 == 0:
        return f"{t_ms // 60_000}m"
    return f"{t_ms // 1000}s" if t_ms % 1000 == 0 else f"{t_ms}ms"


# -- running a scenario through our Alerter -------------------------------------------------------


def alerter_config(scenario: dict[str, Any]) -> Any:
    """Our config for the scenario (validated like any config file)."""
    section = {
        "evaluation_interval_ms": duration_ms(scenario["evaluation_interval"]),
        "history_path": None,
        "rules": scenario["rules"],
    }
    return parse_config(yaml.safe_dump({"alerts": section}))


async def run_ours(scenario: dict[str, Any]) -> tuple[dict[int, list[Any]], list[str]]:
    """Evaluate the scenario with our Alerter: the firing alerts at each evaluation time, and
    every transition as ``"<time> <kind> <name>{labels}"``."""
    clock = FakeClock()
    bus = EventBus(clock=clock)
    alerter = Alerter(alerter_config(scenario), ActorContext(clock=clock, events=bus))
    interval_ms = duration_ms(scenario.get("interval", "1m"))
    step_ms = duration_ms(scenario["evaluation_interval"])
    samples = sorted(
        (i * interval_ms, name, labels, value)
        for entry in scenario["input_series"]
        for name, labels in [parse_series(entry["series"])]
        for i, value in enumerate(expand_values(entry["values"]))
        if value != MISSING
    )
    firing: dict[int, list[Any]] = {}
    transitions: list[str] = []
    with bus.subscribe(AlertEvent) as events:
        async with alerter.running():
            for t_ms in range(0, duration_ms(scenario["duration"]) + 1, step_ms):
                while samples and samples[0][0] <= t_ms:
                    at_ms, name, labels, value = samples.pop(0)
                    sample = None if isinstance(value, str) else value  # str: STALE
                    alerter.series.append(name, at_ms, sample, labels)
                await clock.advance_to(t_ms / 1000)
                firing[t_ms] = alerter.active()
                happened = []
                while len(events):
                    happened.append(_describe(events.receive_nowait(), clock, t_ms))
                transitions += sorted(happened)  # one round's order is not semantics
    return firing, transitions


def _describe(event: AlertEvent, clock: FakeClock, t_ms: int) -> str:
    kind = type(event).__name__.removeprefix("Alert").lower()
    labels = ",".join(f"{k}={v}" for k, v in sorted(event.labels.items()) if k != "alertname")
    assert math.isclose(event.at, clock.wall())  # published in the round, at its time
    return f"{show(t_ms)} {kind} {event.name}{{{labels}}}"


# -- the same scenario through promtool -----------------------------------------------------------


def promtool_files(scenario: dict[str, Any], firing: dict[int, list[Any]], directory: Path) -> Path:
    """A rules file and a unit test expecting exactly ``firing`` at every evaluation time."""
    rules = [_prometheus_rule(rule) for rule in scenario["rules"]]
    interval = scenario["evaluation_interval"]
    groups = {"groups": [{"name": "scenario", "interval": interval, "rules": rules}]}
    (directory / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    cases = []
    for t_ms, alerts in firing.items():
        for rule in scenario["rules"]:
            expected = [
                {
                    "exp_labels": {k: v for k, v in a.labels.items() if k != "alertname"},
                    "exp_annotations": a.annotations,
                }
                for a in alerts
                if a.name == rule["name"]
            ]
            cases.append(
                {"eval_time": show(t_ms), "alertname": rule["name"], "exp_alerts": expected}
            )
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": interval,
        "tests": [
            {
                "interval": scenario.get("interval", "1m"),
                "input_series": scenario["input_series"],
                "alert_rule_test": cases,
            }
        ],
    }
    path = directory / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return path


def _prometheus_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"alert": rule["name"], "expr": rule["expr"]}
    for key in ("for", "keep_firing_for", "labels", "annotations"):
        if key in rule:
            out[key] = rule[key]
    return out


async def run_promtool(test_file: Path) -> tuple[int, str]:
    result = await anyio.run_process(
        [promtool(), "test", "rules", test_file.name], cwd=test_file.parent, check=False
    )
    return result.returncode, (result.stdout + result.stderr).decode()


# -- the tests ------------------------------------------------------------------------------------


def test_the_corpus_covers_the_semantics() -> None:
    """The corpus holds at least 15 scenarios spanning for, keep_firing_for, flapping, gaps,
    staleness, and/or and the range functions."""
    texts = [path.read_text() for path in SCENARIOS]
    assert len(SCENARIOS) >= 15
    for needle in ("for:", "keep_firing_for:", " and ", " or ", "_x", "stale", "avg_over_time",
                   "max_over_time", "rate(", "flap"):  # fmt: skip
        assert any(needle in text for text in texts), f"no scenario uses {needle!r}"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario_agrees_with_promtool(path: Path, tmp_path: Path) -> None:
    """Our Alerter's transitions are the expected ones, and promtool finds exactly our firing
    alerts (labels and annotations) at every evaluation time."""
    scenario = yaml.safe_load(await anyio.Path(path).read_text())
    firing, transitions = await run_ours(scenario)
    assert transitions == scenario["transitions"]
    code, output = await run_promtool(promtool_files(scenario, firing, tmp_path))
    assert code == 0, f"promtool disagrees with our Alerter on {path.name}:\n{output}"


def test_expand_values_follows_promtool_notation() -> None:
    """'a+bxn' gives n+1 values by repeated addition; '_', '_xn' and 'stale' mark gaps."""
    assert expand_values("1 -2+4x3 1-2x2 7x1 _ _x2 stale NaN") == [
        1.0, -2.0, 2.0, 6.0, 10.0, 1.0, -1.0, -3.0, 7.0, 7.0,
        MISSING, MISSING, MISSING, STALE, pytest.approx(math.nan, nan_ok=True),
    ]  # fmt: skip
    assert expand_values("0+0.1x3")[-1] == 0.1 + 0.1 + 0.1  # not 0.3: added up, as promtool does
    assert parse_series('cpu{core="1", mode="user"}') == ("cpu", (("core", "1"), ("mode", "user")))


async def test_a_wrong_expectation_is_caught_by_promtool(tmp_path: Path) -> None:
    """The cross-check can fail: promtool rejects a file that claims an alert fires when it
    does not."""
    scenario = yaml.safe_load(await anyio.Path(SCENARIOS[0]).read_text())
    firing, _ = await run_ours(scenario)
    busy_time = next(t for t, alerts in firing.items() if alerts)
    firing[busy_time] = []
    code, output = await run_promtool(promtool_files(scenario, firing, tmp_path))
    assert code != 0 and "FAILED" in output
