"""The Runtime's service faces, end to end on the real clock and real worker processes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runtime import Runtime, load_config


def config_text(tmp_path: Path) -> str:
    return f"logging: {{file: {tmp_path / 'runtime.jsonl'}, console: false}}\n"


async def voice_turn(text: str) -> str:
    return text.upper()


def blocking_lookup(key: str) -> tuple[str, bool]:
    return key, threading.current_thread() is not threading.main_thread()


def cpu_work(n: int) -> tuple[int, int]:
    return sum(i * i for i in range(n)), os.getpid()


async def test_submit_runs_each_kind_of_work_where_it_belongs(tmp_path: Path) -> None:
    """Coroutines run on the loop, sync I/O in a thread, CPU work in a worker process."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text(tmp_path))
    async with Runtime.from_path(path) as rt:
        assert await rt.submit(voice_turn, "hi", task_class="voice") == "HI"
        assert await rt.submit(blocking_lookup, "k", task_class="voice") == ("k", True)
        total, pid = await rt.submit(cpu_work, 1000, task_class="background")
        assert total == sum(i * i for i in range(1000)) and pid != os.getpid()
        handle = rt.spawn(cpu_work, 10)
        assert (await handle.result())[0] == sum(i * i for i in range(10)) and handle.done()
        with pytest.raises(ValueError, match="wake_word"):
            await rt.submit(voice_turn, "x", task_class="no_such_class")
        classes = rt.statistics().services["scheduler"].classes
        assert classes["voice"].completed == 2 and classes["background"].completed == 2


async def test_disabled_scheduler_says_so(tmp_path: Path) -> None:
    """With scheduler.enabled false, rt.submit raises RuntimeError naming the setting."""
    config = load_config(
        None,
        env={
            "JARVIS_RUNTIME__SCHEDULER__ENABLED": "false",
            "JARVIS_RUNTIME__QUOTAS__ENABLED": "false",
            "JARVIS_RUNTIME__LOGGING__FILE": str(tmp_path / "r.jsonl"),
            "JARVIS_RUNTIME__LOGGING__CONSOLE": "false",
        },
    )
    async with Runtime(config) as rt:
        with pytest.raises(RuntimeError, match=r"scheduler is disabled in config"):
            await rt.submit(voice_turn, "x")


async def test_profiler_sees_the_schedulers_tasks(tmp_path: Path) -> None:
    """Tasks run through rt.submit show up in rt.profiler's per-class histograms and report."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text(tmp_path))
    async with Runtime.from_path(path) as rt:
        for _ in range(5):
            await rt.submit(voice_turn, "hi", task_class="voice")
        stats = rt.profiler.histogram("voice", "end_to_end").summary()
        assert stats.count == 5
        assert "voice" in rt.profiler.report().render()


async def test_sampler_publishes_samples_and_gauges(tmp_path: Path) -> None:
    """rt.sampler yields samples, keeps the latest, and writes gauges rules can read."""
    path = tmp_path / "config.yaml"
    path.write_text(
        config_text(tmp_path)
        + f"sampler: {{interval_ms: 50, history_path: {tmp_path / 'samples.db'}}}\n"
    )
    async with Runtime.from_path(path) as rt:
        sample = None
        async for sample in rt.sampler.subscribe():  # noqa: B007  # the first one is enough
            break
        assert sample is not None
        assert 0 <= sample.memory_percent <= 100 and sample.process_rss_bytes > 0
        latest = rt.sampler.latest()
        assert latest is not None and latest.timestamp >= sample.timestamp
        assert rt.metrics.get("memory_percent") is not None


async def test_runtime_serves_metrics_when_enabled(tmp_path: Path) -> None:
    """metrics.prometheus.enabled starts /metrics on 127.0.0.1 with the runtime, and stops it."""
    import urllib.request

    import anyio

    path = tmp_path / "config.yaml"
    path.write_text(config_text(tmp_path) + "metrics: {prometheus: {enabled: true, port: 0}}\n")
    async with Runtime.from_path(path) as rt:
        exporter = rt.exporter
        assert exporter is not None and exporter.url.startswith("http://127.0.0.1:")
        await rt.submit(voice_turn, "hi", task_class="voice")
        rt.metrics.set("stt_queue_depth", 4, device="kitchen")
        body = await anyio.to_thread.run_sync(
            lambda: urllib.request.urlopen(exporter.url, timeout=5).read().decode()
        )
        assert 'stt_queue_depth{device="kitchen"} 4.0' in body
        url = exporter.url
    assert rt.exporter is None
    with pytest.raises(OSError):
        await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=2))


async def test_runtime_refuses_a_busy_metrics_port(tmp_path: Path) -> None:
    """A metrics port already in use fails the start with ConfigError naming the key."""
    import socket

    from runtime import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "config.yaml"
        path.write_text(
            config_text(tmp_path) + f"metrics: {{prometheus: {{enabled: true, port: {port}}}}}\n"
        )
        with pytest.raises(ConfigError, match=r"\$\.metrics\.prometheus\.port"):
            async with Runtime.from_path(path):
                pass


async def test_alert_rule_fires_on_a_custom_gauge(tmp_path: Path) -> None:
    """A rule over a gauge set through rt.metrics fires, shows in rt.alerts and is published."""
    from runtime.events import AlertFiring

    path = tmp_path / "config.yaml"
    path.write_text(
        config_text(tmp_path)
        + "alerts:\n"
        + "  evaluation_interval_ms: 20\n"
        + f"  history_path: {tmp_path / 'alerts.db'}\n"
        + "  rules:\n"
        + "    - {name: SttBacklog, expr: 'stt_queue_depth > 3', labels: {severity: page},\n"
        + "       annotations: {summary: 'queue at {{ $value }}'}}\n"
    )
    async with Runtime.from_path(path) as rt:
        with rt.alerts.subscribe() as events:
            rt.metrics.set("stt_queue_depth", 4, device="kitchen")
            async for event in events:
                if isinstance(event, AlertFiring):
                    break
        assert event.name == "SttBacklog" and event.labels["device"] == "kitchen"
        assert event.annotations["summary"] == "queue at 4"
        assert [a.name for a in rt.alerts.active()] == ["SttBacklog"]


async def test_cache_and_quotas_through_the_runtime(tmp_path: Path) -> None:
    """rt.cache computes once per key; rt.quotas refuses an over-rate plugin call."""
    from runtime import QuotaExceeded

    path = tmp_path / "config.yaml"
    path.write_text(
        config_text(tmp_path)
        + "cache:\n  tiers:\n"
        + "    - {name: l1, backend: memory, max_entries: 100}\n"
        + f"    - {{name: l3, backend: sqlite, path: {tmp_path / 'cache.db'}}}\n"
    )
    calls: list[str] = []

    async def llm(prompt: str) -> str:
        calls.append(prompt)
        return prompt[::-1]

    async with Runtime.from_path(path) as rt:
        for _ in range(3):
            answer = await rt.cache.get_or_compute(
                "q1", lambda: llm("weather?"), namespace="response"
            )
            assert answer == "?rehtaew"
        assert calls == ["weather?"]
        stats = rt.cache.statistics()
        assert stats.hits == 2 and stats.misses == 1

        rt.quotas.register("weather", rate=1, burst=1, on_rate="refuse")
        assert await rt.submit(voice_turn, "a", task_class="command", plugin="weather") == "A"
        with pytest.raises(QuotaExceeded, match="weather"):
            await rt.submit(voice_turn, "b", task_class="command", plugin="weather")
        plugin = rt.statistics().services["quotas"].plugins["weather"]
        assert plugin.calls >= 1 and plugin.refused == 1
        # The assembly offered the services' recovery actions to the quota budget.
        assert {"shrink_caches", "shed_background"} <= set(rt.quotas._recovery.names())
