"""The Prometheus exporter: names, buckets, families from statistics, and the HTTP endpoint."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors.profiler.histogram import LatencyHistogram
from runtime import ConfigError, Runtime, load_config
from runtime.clock import FakeClock
from runtime.config import Config
from runtime.exporter import MetricsExporter, RuntimeCollector, render
from runtime.exposition import (
    LATENCY_BUCKETS_S,
    Families,
    HistogramData,
    exported_name,
    select_buckets,
)
from runtime.scrape import Snapshot, take_snapshot

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def promtool() -> str:
    """The promtool binary; fails the test (never skips) when it is not installed."""
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail("promtool is missing: run .ci/install-system-deps (Debian package prometheus)")
    return found


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exposition(snapshot: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(lambda: snapshot))
    return generate_latest(registry).decode()


def types_of(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def histogram_of(*values_s: float) -> HistogramData:
    histogram = LatencyHistogram()
    for value in values_s:
        histogram.record(value)
    return HistogramData(histogram.cumulative_buckets(), histogram.sum_s, histogram.count)


def mailbox(depth: int) -> dict[str, Any]:
    return {"name": None, "policy": "block", "capacity": 100, "depth": depth, "high_water": 7}


def statistics(**services: Any) -> dict[str, Any]:
    """``msgspec.to_builtins(rt.statistics())`` of a runtime with a nested supervisor."""
    writer = {"name": "writer", "restarts": 4, "handled": 2, "failed": 1, "mailbox": mailbox(5)}
    scheduler = {
        "name": "scheduler",
        "restarts": 1,
        "handled": 9,
        "failed": 0,
        "mailbox": mailbox(3),
    }
    return {
        "name": "jarvis",
        "uptime_s": 5.0,
        "supervisor": {
            "name": "jarvis",
            "restarts": 1,
            "actors": [scheduler],
            "supervisors": [
                {"name": "cache", "restarts": 4, "actors": [writer], "supervisors": []}
            ],
        },
        "dead_letters": {"total": 3, "kept": 3, "by_reason": {"timeout": 2, "closed": 1}},
        "events": {
            "published": {"TaskQueued": 5},
            "dropped": 1,
            "subscriptions": [{"name": None, "depth": 2}, {"name": None, "depth": 1}],
        },
        "services": services,
    }


SCHEDULER = {
    "queued": 1,
    "active": 2,
    "overloaded": False,
    "background_paused": True,
    "loop_lag_s": 0.002,
    "slots": {"loop": 64, "thread": 8},
    "busy": {"loop": 1, "thread": 2},
    "pools": {"background": {"size": 2, "busy": 1, "completed": 7, "died": 1}},
    "classes": {
        "voice": {
            "queue_depth": 1,
            "running": 2,
            "limit": 4,
            "completed": 10,
            "refused": 2,
            "deadline_misses": 3,
            "failed": 1,
            "wait": {"count": 10, "p50_s": 0.001},
        },
    },
}
CACHE = {
    "hits": 90,
    "misses": 10,
    "hit_rate": 0.9,
    "tiers": [
        {
            "name": "l1",
            "hits": 80,
            "misses": 20,
            "bytes": 4096,
            "entries": 12,
            "evictions": {"capacity": 3, "ttl": 1},
        },
        {"name": "l3", "hits": 10, "misses": 10, "size_ms": 2.0},
    ],
    "namespaces": {"response": {"hits": 60, "misses": 5}, "embedding": {"hits": 30, "misses": 5}},
}
QUOTAS = {
    "plugins": {
        "weather": {
            "calls": 12,
            "refused": 2,
            "throttled": 1,
            "terminated": 0,
            "exceeded": {"rate": 2},
            "cpu_percent": 3.5,
            "memory_mb": 10,
            "running": 1,
            "status": "ok",
        }
    },
}
ALERTS = [
    {
        "name": "HighMemoryUsage",
        "state": "firing",
        "value": 91.0,
        "labels": {"alertname": "HighMemoryUsage", "severity": "warning"},
    },
    {
        "name": "HighCpuUsage",
        "state": "pending",
        "value": 95.0,
        "labels": {"alertname": "HighCpuUsage", "severity": "warning"},
    },
]


def full_snapshot() -> Snapshot:
    """Every family: scheduler, profiler, cache, quotas, alerts and registry gauges."""
    return Snapshot(
        name="jarvis",
        uptime_s=5.0,
        statistics=statistics(
            scheduler=SCHEDULER,
            profiler={"classes": {"voice": {}}},
            cache=CACHE,
            quotas=QUOTAS,
            alerts={"rules": 3, "pending": 1, "firing": 1, "evaluations": 40},
        ),
        gauges=[
            ("cpu_count", (), 2.0),
            ("cpu_percent", (), 12.5),
            ("cpu_percent", (("core", "0"),), 20.0),
            ("disk_read_bytes_per_s", (), 100.0),
            ("disk_read_bytes_total", (), 5000.0),
            ("process_cpu_percent", (), 30.0),
            ("children_cpu_percent", (), 10.0),
            ("process_rss_bytes", (), 80 * 2.0**20),
            ("children_rss_bytes", (), 20 * 2.0**20),
            ("profiler_loop_lag_ms", (), 1.5),
            ("stt_queue_depth", (("device", "kitchen"),), 4.0),
        ],
        help={"stt_queue_depth": "Utterances waiting for speech-to-text"},
        latency={"voice": {"end_to_end": histogram_of(0.0002, 0.0004, 0.3)}},
        loop_lag=histogram_of(0.001),
        deadlines_s={"voice": 1.0},
        budget={"memory_bytes": 2**31, "cpu_percent": 20.0},
        alerts=ALERTS,
    )


# -- names and buckets ------------------------------------------------------------------------


def test_exported_name_turns_abbreviated_units_into_base_units() -> None:
    """_ms becomes _seconds (x 0.001), _per_s becomes _per_second, _mb becomes _bytes."""
    assert exported_name("profiler_loop_lag_ms") == ("profiler_loop_lag_seconds", 1e-3)
    assert exported_name("disk_read_bytes_per_s") == ("disk_read_bytes_per_second", 1.0)
    assert exported_name("plugin_memory_mb") == ("plugin_memory_bytes", 2.0**20)
    assert exported_name("memory_percent") == ("memory_percent", 1.0)


def test_exported_name_keeps_histogram_suffixes_off_gauges() -> None:
    """A gauge named like a histogram's series (cpu_count) gets one more word."""
    assert exported_name("cpu_count") == ("cpu_count_value", 1.0)
    assert exported_name("latency_sum") == ("latency_sum_value", 1.0)
    assert exported_name("count") == ("count", 1.0)


def test_select_buckets_keeps_cumulative_counts_exact() -> None:
    """Each exported bucket counts exactly the values <= its bound; +Inf counts them all."""
    values = [0.00001, 0.00003, 0.0002, 0.0002, 0.0007, 0.004, 0.02, 0.3, 2.0, 50.0]
    data = histogram_of(*values)
    picked = select_buckets(data.buckets)
    assert picked[-1] == (float("inf"), len(values))
    for le, count in picked[:-1]:
        assert count == sum(1 for v in values if v <= le), le


def test_select_buckets_resolve_sub_millisecond_latency() -> None:
    """The exported bounds follow 1-2.5-5 from 10 us to 10 s, each within 1% of its target."""
    picked = select_buckets(histogram_of(0.001).buckets)
    bounds = [le for le, _ in picked[:-1]]
    assert len(bounds) == len(LATENCY_BUCKETS_S) == 19
    for bound, target in zip(bounds, LATENCY_BUCKETS_S, strict=True):
        assert abs(bound / target - 1) < 0.01
    assert sum(1 for b in bounds if b < 0.001) == 6


# -- families ---------------------------------------------------------------------------------


def test_families_sum_duplicates_and_refuse_a_name_of_another_type() -> None:
    """Equal label sets add up; a name taken by another type is dropped and counted."""
    families = Families()
    families.add("depth", "gauge", "d", 2, queue="a")
    families.add("depth", "gauge", "d", 3, queue="a")
    families.add("depth", "counter", "d", 7, queue="b")
    families.add("depth", "gauge", "d", "not a number", queue="c")
    (metric,) = families.metrics()
    assert [(s.labels, s.value) for s in metric.samples] == [({"queue": "a"}, 5.0)]
    assert families.conflicts == 1


def test_scheduler_statistics_become_gauges_and_counters_per_class() -> None:
    """Queue depth and running are gauges; completed, refused and misses are _total counters."""
    text = exposition(full_snapshot())
    samples = parse(text)
    voice = (("task_class", "voice"),)
    assert samples[("jarvis_task_queue_depth", voice)] == 1
    assert samples[("jarvis_tasks_completed_total", voice)] == 10
    assert samples[("jarvis_tasks_refused_total", voice)] == 2
    assert samples[("jarvis_task_deadline_misses_total", voice)] == 3
    assert samples[("jarvis_task_deadline_seconds", voice)] == 1.0
    assert samples[("jarvis_scheduler_background_paused", ())] == 1
    assert samples[("jarvis_executor_busy", (("executor", "thread"),))] == 2
    assert samples[("jarvis_scheduler_pool_died_total", (("pool", "background"),))] == 1
    assert types_of(text)["jarvis_tasks_completed"] == "counter"


def test_latency_histograms_export_buckets_sum_and_count() -> None:
    """A class's histogram has le buckets (sub-millisecond ones too), _sum and _count."""
    samples = parse(exposition(full_snapshot()))
    labels = (("stage", "end_to_end"), ("task_class", "voice"))
    assert samples[("jarvis_task_latency_seconds_count", labels)] == 3
    assert samples[("jarvis_task_latency_seconds_sum", labels)] == pytest.approx(0.3006)
    buckets = {
        float(dict(k[1])["le"]): v
        for k, v in samples.items()
        if k[0] == "jarvis_task_latency_seconds_bucket"
    }
    assert buckets[0.0001] == 0 and buckets[0.000501187] == 2 and buckets[float("inf")] == 3
    assert samples[("jarvis_loop_lag_seconds_count", ())] == 1


def test_supervisor_tree_gives_restarts_and_mailbox_depths_per_actor() -> None:
    """Actors of nested supervisors are labelled with their supervisor; restarts are counters."""
    samples = parse(exposition(full_snapshot()))
    writer = (("actor", "writer"), ("supervisor", "cache"))
    assert samples[("jarvis_actor_restarts_total", writer)] == 4
    assert samples[("jarvis_mailbox_depth", writer)] == 5
    assert (
        samples[("jarvis_mailbox_depth", (("actor", "scheduler"), ("supervisor", "jarvis")))] == 3
    )
    assert samples[("jarvis_supervisor_restarts_total", (("supervisor", "cache"),))] == 4
    assert samples[("jarvis_dead_letters_total", ())] == 3
    assert samples[("jarvis_dead_letters_by_reason_total", (("reason", "timeout"),))] == 2
    # Two unnamed subscriptions are one series, summed, not a duplicate.
    assert samples[("jarvis_event_subscription_depth", (("subscription", "unnamed"),))] == 3


def test_cache_statistics_export_per_tier_and_namespace() -> None:
    """Hits and misses per tier and namespace, evictions by cause, bytes; units normalized."""
    samples = parse(exposition(full_snapshot()))
    l1 = (("tier", "l1"),)
    assert samples[("jarvis_cache_hits_total", ())] == 90
    assert samples[("jarvis_cache_hit_rate", ())] == 0.9
    assert samples[("jarvis_cache_tier_hits_total", l1)] == 80
    assert samples[("jarvis_cache_tier_bytes", l1)] == 4096
    assert samples[("jarvis_cache_tier_evictions_total", (("cause", "capacity"), *l1))] == 3
    assert samples[("jarvis_cache_tier_size_seconds", (("tier", "l3"),))] == 0.002
    assert samples[("jarvis_cache_namespace_misses_total", (("namespace", "response"),))] == 5


def test_quota_statistics_export_per_plugin() -> None:
    """Calls, refusals and throttles per plugin are counters; strings are left out."""
    samples = parse(exposition(full_snapshot()))
    weather = (("plugin", "weather"),)
    assert samples[("jarvis_quota_plugin_calls_total", weather)] == 12
    assert samples[("jarvis_quota_plugin_throttled_total", weather)] == 1
    assert samples[("jarvis_quota_plugin_exceeded_total", (*weather, ("quota", "rate")))] == 2
    assert samples[("jarvis_quota_plugin_memory_bytes", weather)] == 10 * 2**20
    assert not any(name.startswith("jarvis_quota_plugin_status") for name, _ in samples)


def test_alerts_are_one_series_each_with_alertname_and_alertstate() -> None:
    """A pending and a firing alert give two jarvis_alerts series carrying the rule's labels."""
    samples = parse(exposition(full_snapshot()))
    firing = (("alertname", "HighMemoryUsage"), ("alertstate", "firing"), ("severity", "warning"))
    pending = (("alertname", "HighCpuUsage"), ("alertstate", "pending"), ("severity", "warning"))
    assert samples[("jarvis_alerts", firing)] == 1 and samples[("jarvis_alerts", pending)] == 1
    assert samples[("jarvis_alert_firing", ())] == 1


def test_missing_services_have_no_families() -> None:
    """With no scheduler, profiler, cache, quotas or alerter, none of their families appear."""
    text = exposition(Snapshot(name="jarvis", uptime_s=1.0, statistics=statistics()))
    names = set(types_of(text))
    assert "jarvis_actor_restarts" in names and "jarvis_runtime_uptime_seconds" in names
    for prefix in ("jarvis_task", "jarvis_cache", "jarvis_quota", "jarvis_alerts", "jarvis_loop"):
        assert not [n for n in names if n.startswith(prefix)], prefix


def test_registry_gauges_keep_their_names_and_total_ones_are_counters() -> None:
    """cpu_percent stays (with and without labels); *_total is a counter; help texts kept."""
    text = exposition(full_snapshot())
    samples = parse(text)
    assert samples[("cpu_percent", ())] == 12.5
    assert samples[("cpu_percent", (("core", "0"),))] == 20.0
    assert samples[("disk_read_bytes_total", ())] == 5000
    assert samples[("profiler_loop_lag_seconds", ())] == pytest.approx(0.0015)
    assert samples[("cpu_count_value", ())] == 2
    assert types_of(text)["disk_read_bytes"] == "counter"
    assert "# HELP stt_queue_depth Utterances waiting for speech-to-text" in text


def test_registry_gauge_clashing_with_a_family_is_left_out_and_counted() -> None:
    """A custom gauge named like one of ours, or like another gauge once renamed, is dropped."""
    snapshot = msgspec.structs.replace(
        full_snapshot(),
        gauges=[("jarvis_task_queue_depth", (), 99.0), ("x_ms", (), 1.0), ("x_seconds", (), 2.0)],
    )
    samples = parse(exposition(snapshot))
    assert samples[("jarvis_task_queue_depth", (("task_class", "voice"),))] == 1
    assert ("jarvis_task_queue_depth", ()) not in samples
    assert samples[("x_seconds", ())] == 0.001
    assert samples[("jarvis_exporter_conflicts", ())] == 2


def test_every_family_passes_promtool_check_metrics() -> None:
    """promtool's lint accepts the exposition of a snapshot holding every kind of family."""
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposition(full_snapshot()).encode(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()


# -- the runtime and the endpoint -------------------------------------------------------------


def runtime_config(tmp_path: Path, **env: str) -> Config:
    """A runtime without worker processes or a sampler (fast to start), port 0."""
    base = {
        "JARVIS_RUNTIME__LOGGING__FILE": str(tmp_path / "runtime.jsonl"),
        "JARVIS_RUNTIME__LOGGING__CONSOLE": "false",
        "JARVIS_RUNTIME__SAMPLER__ENABLED": "false",
        "JARVIS_RUNTIME__SCHEDULER__CLASSES__BACKGROUND__EXECUTOR": "thread",
        "JARVIS_RUNTIME__SCHEDULER__PROCESS_WORKERS": "0",
        "JARVIS_RUNTIME__METRICS__PROMETHEUS__PORT": "0",
    }
    return load_config(None, env={**base, **env})


async def fetch(url: str) -> tuple[int, str]:
    """GET ``url`` in a thread (the endpoint needs the loop free): status and body."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await anyio.to_thread.run_sync(get)


async def voice_turn(text: str) -> str:
    return text.upper()


async def test_endpoint_serves_a_running_runtime_and_promtool_accepts_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    """After work is submitted, a scrape on port 0 shows it, and promtool checks it clean."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        for _ in range(3):
            await rt.submit(voice_turn, "hi", task_class="voice")
        rt.metrics.set("stt_queue_depth", 4, device="kitchen")
        async with MetricsExporter(rt) as exporter:
            assert exporter.port > 0 and exporter.url.startswith("http://127.0.0.1:")
            status, text = await fetch(exporter.url)
    assert status == 200
    samples = parse(text)
    voice = (("task_class", "voice"),)
    assert samples[("jarvis_tasks_completed_total", voice)] == 3
    assert samples[("jarvis_task_latency_seconds_count", (("stage", "end_to_end"), *voice))] == 3
    assert samples[("stt_queue_depth", (("device", "kitchen"),))] == 4
    result = await anyio.run_process(
        [promtool(), "check", "metrics"], input=text.encode(), check=False
    )
    assert result.returncode == 0, result.stderr.decode()


async def test_a_scrape_reads_the_runtime_on_its_event_loop(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server thread hands the reading to the loop: statistics() runs on the loop's thread."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        threads: list[int] = []
        original = rt.statistics

        def spy() -> Any:
            threads.append(threading.get_ident())
            return original()

        monkeypatch.setattr(rt, "statistics", spy)
        async with MetricsExporter(rt) as exporter:
            status, _ = await fetch(exporter.url)
    assert status == 200 and threads == [threading.get_ident()]


async def test_render_gives_the_scrape_text_without_http(tmp_path: Path, clock: FakeClock) -> None:
    """render(rt) is the exposition a scrape would get: the same families."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        await rt.submit(voice_turn, "hi", task_class="wake_word")
        text = render(rt).decode()
        async with MetricsExporter(rt) as exporter:
            _, scraped = await fetch(exporter.url)
    assert set(types_of(text)) == set(types_of(scraped))
    assert parse(text)[("jarvis_tasks_completed_total", (("task_class", "wake_word"),))] == 1


async def test_disabled_profiler_means_no_latency_histograms(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Without a profiler the scrape has no task latency families, and still succeeds."""
    config = runtime_config(tmp_path, JARVIS_RUNTIME__PROFILER__ENABLED="false")
    async with Runtime(config, clock=clock) as rt:
        await rt.submit(voice_turn, "hi", task_class="voice")
        names = set(types_of(render(rt).decode()))
    assert "jarvis_tasks_completed" in names
    assert "jarvis_task_latency_seconds" not in names and "jarvis_loop_lag_seconds" not in names


async def test_address_comes_from_the_config(tmp_path: Path, clock: FakeClock) -> None:
    """Without arguments the exporter listens on metrics.prometheus.host and .port."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    config = runtime_config(tmp_path, JARVIS_RUNTIME__METRICS__PROMETHEUS__PORT=str(free_port))
    async with Runtime(config, clock=clock) as rt, MetricsExporter(rt) as exporter:
        assert (exporter.host, exporter.port) == ("127.0.0.1", free_port)
        assert exporter.url == f"http://127.0.0.1:{free_port}/metrics"


async def test_a_port_in_use_is_a_config_error_naming_the_port(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Listening on a taken port raises ConfigError at $.metrics.prometheus.port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
            with pytest.raises(ConfigError) as caught:
                await MetricsExporter(rt, port=port).start()
    (problem,) = caught.value.problems
    assert problem.path == "$.metrics.prometheus.port" and str(port) in problem.message


async def test_an_unusable_host_is_a_config_error_naming_the_host(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A host that is not a local address raises ConfigError at $.metrics.prometheus.host."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        with pytest.raises(ConfigError) as caught:
            await MetricsExporter(rt, host="192.0.2.1").start()  # TEST-NET-1: never local
    (problem,) = caught.value.problems
    assert problem.path == "$.metrics.prometheus.host" and "192.0.2.1" in problem.message


async def test_port_before_start_and_a_second_start_raise(tmp_path: Path, clock: FakeClock) -> None:
    """port and url need a started exporter; starting twice is refused."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        exporter = MetricsExporter(rt)
        with pytest.raises(RuntimeError, match="not started"):
            _ = exporter.url
        async with exporter:
            with pytest.raises(RuntimeError, match="already started"):
                await exporter.start()


async def test_aclose_stops_serving_and_is_idempotent(tmp_path: Path, clock: FakeClock) -> None:
    """After aclose the port refuses connections; a second aclose does nothing."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        exporter = MetricsExporter(rt)
        await exporter.start()
        port = exporter.port
        await exporter.aclose()
        await exporter.aclose()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", port)


async def test_a_failed_scrape_answers_500_with_the_reason(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When reading the runtime raises, the scrape gets a 500 naming the error; serving goes on."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        original = rt.statistics

        def broken() -> Any:
            raise ValueError("statistics unavailable")

        async with MetricsExporter(rt) as exporter:
            monkeypatch.setattr(rt, "statistics", broken)
            status, body = await fetch(exporter.url)
            monkeypatch.setattr(rt, "statistics", original)
            again, _ = await fetch(exporter.url)
    assert status == 500 and "statistics unavailable" in body
    assert again == 200


class _Alert(msgspec.Struct, frozen=True):
    name: str
    state: str
    labels: dict[str, str]
    value: float


class _Alerter:
    def pending(self) -> list[_Alert]:
        return [_Alert("Slow", "pending", {"alertname": "Slow", "severity": "page"}, 2.0)]

    def active(self) -> list[_Alert]:
        return []


async def test_take_snapshot_reads_alerts_from_rt_alerts(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an Alerter in the services, rt.alerts' pending and firing alerts are read."""
    monkeypatch.setattr(Runtime, "alerts", property(lambda self: _Alerter()), raising=False)
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        original = rt.statistics

        def with_alerts() -> Any:
            stats = original()
            return msgspec.structs.replace(stats, services={**stats.services, "alerts": {}})

        monkeypatch.setattr(rt, "statistics", with_alerts)
        snapshot = take_snapshot(rt)
    assert snapshot.alerts == [
        {
            "name": "Slow",
            "state": "pending",
            "labels": {"alertname": "Slow", "severity": "page"},
            "value": 2.0,
        }
    ]


def test_breakdown_labels_may_share_a_parameter_name() -> None:
    """A statistics breakdown labelled kind/name/value is exported, not a TypeError."""
    from runtime.exposition import Families

    families = Families()
    families.add("jarvis_x", "gauge", "help", 1.0, kind="a", name="b", value="c")
    [metric] = families.metrics()
    assert [s.labels for s in metric.samples] == [{"kind": "a", "name": "b", "value": "c"}]
