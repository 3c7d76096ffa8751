"""Prometheus itself: a real server scrapes /metrics, promtool checks the alerting rules and the
dashboard's queries, and the rules file stays equal to the shipped config.yaml rules."""

from __future__ import annotations

import json
import re
import shutil
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.sampler.sample import Sample, gauges
from runtime import Runtime, load_config
from runtime.config import parse_duration
from runtime.exporter import MetricsExporter
from runtime.exposition import exported_name
from tests.runtime.test_exporter import exposition, full_snapshot, promtool, runtime_config

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "alerts.rules.yml"
DASHBOARD = ROOT / "dashboards" / "jarvis-runtime.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": "127.0.0.1:1", "$task_class": ".+"}


def prometheus() -> str:
    """The prometheus binary; fails the test (never skips) when it is not installed."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        pytest.fail("prometheus is missing: run .ci/install-system-deps (Debian package)")
    return found


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels and variables."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    return exprs + [v["definition"] for v in board["templating"]["list"] if "definition" in v]


def substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if expr.startswith("label_values("):  # Grafana's function: the series selector inside
        expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels and keywords removed)."""
    expr = re.sub(r'"[^"]*"', '""', substituted(expr))
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", expr))
    return names - {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def exported_series() -> set[str]:
    """Every series name the runtime can export: ours, the sampler's gauges, Prometheus's ALERTS."""
    ours = {
        sample.name
        for family in text_string_to_metric_families(exposition(full_snapshot()))
        for sample in family.samples
    }
    sampled = {exported_name(name)[0] for name, _, _ in gauges(Sample(cpu_percent_per_core=(1.0,)))}
    return ours | sampled | {"ALERTS"}


# -- the alerting rules -----------------------------------------------------------------------


async def test_rules_file_passes_promtool_check_rules() -> None:
    """promtool accepts dashboards/alerts.rules.yml."""
    result = await anyio.run_process([promtool(), "check", "rules", str(RULES)], check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS: 3 rules found" in result.stdout


def test_rules_file_is_equivalent_to_the_shipped_rules() -> None:
    """Each rule of config.yaml is in the file, in order: same name, expr, for, keep_firing_for,
    labels and annotations."""
    shipped = load_config(ROOT / "config.yaml", env={}).alerts.rules
    (group,) = yaml.safe_load(RULES.read_text())["groups"]
    assert [r["alert"] for r in group["rules"]] == [r.name for r in shipped]
    for rule, ours in zip(group["rules"], shipped, strict=True):
        assert rule["expr"] == ours.expr, rule["alert"]
        assert parse_duration(rule.get("for", "0s")) == ours.for_, rule["alert"]
        assert parse_duration(rule.get("keep_firing_for", "0s")) == ours.keep_firing_for
        assert rule.get("labels", {}) == ours.labels and rule["annotations"] == ours.annotations


async def test_rules_fire_in_prometheus_after_their_for(tmp_path: Path) -> None:
    """promtool's rule unit test: each alert is pending before its `for` and firing after."""
    series = {
        "HighMemoryUsage": ("memory_percent", "90", 5),
        "HighCpuUsage": ("cpu_percent", "95", 10),
        "RuntimeOverMemoryBudget": ("process_rss_bytes", "3e9", 1),
    }
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": f'{name}{{job="jarvis"}}', "values": f"{value}x20"}],
            "alert_rule_test": [
                {
                    "eval_time": f"{minutes - 1}m" if minutes > 1 else "30s",
                    "alertname": alert,
                    "exp_alerts": [],
                },
                {
                    "eval_time": f"{minutes}m",
                    "alertname": alert,
                    "exp_alerts": [
                        {
                            "exp_labels": {"job": "jarvis", **rule["labels"]},
                            "exp_annotations": rule["annotations"],
                        }
                    ],
                },
            ],
        }
        for alert, (name, value, minutes) in series.items()
        for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
        if rule["alert"] == alert
    ]
    spec = tmp_path / "rules_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "tests": tests}))
    result = await anyio.run_process([promtool(), "test", "rules", str(spec)], check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# -- the dashboard ----------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard_of_our_panels() -> None:
    """Unique panel ids, every query on the datasource variable, panels within 24 columns."""
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "jarvis-runtime" and board["title"] == "jarvis-runtime"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"] for panel in board["panels"]).lower()
    for topic in ("latency", "deadline misses", "cache hit rate", "cpu", "memory", "restarts"):
        assert topic in titles, topic
    for panel in board["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


async def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every query, as recording rules, passes promtool check rules (PromQL syntax)."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substituted(expr)}
        for i, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = await anyio.run_process([promtool(), "check", "rules", str(path)], check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_dashboard_reads_only_series_the_runtime_exports() -> None:
    """No panel queries a metric name the exporter never writes (a typo shows as no data)."""
    exported = exported_series()
    for expr in dashboard_queries():
        assert metric_names(expr) <= exported, (expr, metric_names(expr) - exported)


# -- a real Prometheus server -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def api(base: str, path: str, **params: str) -> Any:
    """GET a Prometheus API path; the decoded ``data``. Raises OSError while it is not up."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"

    def get() -> Any:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    body = await anyio.to_thread.run_sync(get)
    assert body["status"] == "success", body
    return body["data"]


async def wait_for_series(base: str, query: str, log: Path, *, timeout_s: float = 20) -> Any:
    """Poll a query until it returns series: Prometheus must start, then scrape (1 s interval)."""
    try:
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    result = (await api(base, "/api/v1/query", query=query))["result"]
                except OSError:  # not listening yet
                    result = []
                if result:
                    return result
                await anyio.sleep(0.2)
    except TimeoutError:
        said = await anyio.Path(log).read_text()
        pytest.fail(f"no {query} after {timeout_s} s; Prometheus said:\n{said}")


def prometheus_config(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "prometheus.yml"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "jarvis", "static_configs": [{"targets": [target]}]}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def voice_turn(text: str) -> str:
    return text.upper()


async def test_a_real_prometheus_scrapes_our_series(tmp_path: Path) -> None:
    """Prometheus scrapes the endpoint; its API returns our counters, histograms (sub-ms
    quantiles), custom gauges and rules, and every dashboard query evaluates."""
    async with Runtime(runtime_config(tmp_path)) as rt, MetricsExporter(rt) as exporter:
        for _ in range(5):
            await rt.submit(voice_turn, "hi", task_class="voice")
        rt.metrics.set("stt_queue_depth", 4, device="kitchen")
        port, log = free_port(), tmp_path / "prometheus.log"
        command = [
            prometheus(),
            f"--config.file={prometheus_config(tmp_path, f'127.0.0.1:{exporter.port}')}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with log.open("wb") as output:
            process = await anyio.open_process(command, stdout=output, stderr=output)
            try:
                await check_prometheus(f"http://127.0.0.1:{port}", log)
            finally:
                with anyio.CancelScope(shield=True):
                    process.terminate()
                    with anyio.move_on_after(10):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()


async def check_prometheus(base: str, log: Path) -> None:
    (done,) = await wait_for_series(base, 'jarvis_tasks_completed_total{task_class="voice"}', log)
    assert done["metric"]["job"] == "jarvis" and float(done["value"][1]) == 5
    (p50,) = await wait_for_series(
        base,
        'histogram_quantile(0.5, jarvis_task_latency_seconds_bucket{stage="end_to_end",'
        'task_class="voice"})',
        log,
    )
    assert 0 < float(p50["value"][1]) < 0.01  # resolved below a millisecond's buckets too
    (depth,) = await wait_for_series(base, "stt_queue_depth", log)
    assert depth["metric"]["device"] == "kitchen" and float(depth["value"][1]) == 4
    groups = (await api(base, "/api/v1/rules"))["groups"]
    loaded = [rule["name"] for group in groups for rule in group["rules"]]
    assert loaded == ["HighMemoryUsage", "HighCpuUsage", "RuntimeOverMemoryBudget"]
    for expr in dashboard_queries():
        if not expr.startswith("label_values("):
            await api(base, "/api/v1/query", query=substituted(expr))  # asserts success
