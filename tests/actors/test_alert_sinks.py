"""Alert sinks: a real Alertmanager, a local webhook, retry with backoff, the breaker, the
bounded outbox, and the payloads."""

from __future__ import annotations

import http.server
import json
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from actors.alerter import Alert, Alerter
from actors.alerter.sinks import (
    Batch,
    SinkError,
    alertmanager_payload,
    http_post,
    post_in_thread,
    webhook_payload,
)
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import parse_config
from runtime.deadletters import DeadLetters
from runtime.events import CircuitBreakerStateChanged, EventBus
from runtime.metrics import MetricsRegistry
from runtime.retry import RetryPolicy

RULE = {"name": "HighMemoryUsage", "expr": "memory_percent > 85", "labels": {"severity": "page"},
        "annotations": {"summary": "memory at {{ $value }}%"}}  # fmt: skip


def make_alerter(
    clock: FakeClock, *, rules: list[dict[str, Any]] | None = None, post: Any = None, **section: Any
) -> tuple[Alerter, ActorContext]:
    """An Alerter on the fake clock, evaluating every second, with its kernel parts."""
    alerts = {"evaluation_interval_ms": 1000, "history_path": None, "rules": rules or [RULE]}
    config = parse_config(yaml.safe_dump({"alerts": alerts | section}))
    context = ActorContext(
        clock=clock,
        dead_letters=DeadLetters(1000, clock=clock),
        events=EventBus(clock=clock),
        metrics=MetricsRegistry(clock=clock),
        retry=RetryPolicy(initial_s=0.1, max_s=1.0, retries=3),
        rng=random.Random(3),
    )
    kwargs = {} if post is None else {"sink_post": post}
    return Alerter(config, context, **kwargs), context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return json.load(response)


# -- a real Alertmanager ----------------------------------------------------------------------


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.fail(
            "prometheus-alertmanager is missing: run .ci/install-system-deps "
            "(Debian package 'prometheus-alertmanager')"
        )
    return found


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[str]:
    """A real Alertmanager on a free loopback port (clustering off, storage in tmp_path),
    ready when it logs that it listens; stopped after the test."""
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n")
    command = [
        alertmanager_binary(), f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ]  # fmt: skip
    process = await anyio.open_process(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        log = b""
        with anyio.fail_after(30):  # real time: a real process starting
            assert process.stderr is not None
            while b"Listening on" not in log:
                log += await process.stderr.receive()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


async def test_alertmanager_accepts_alerts_and_lists_them(alertmanager: str) -> None:
    """A firing alert posted to a real Alertmanager shows in GET /api/v2/alerts with its
    labels and annotations; once resolved (endsAt in the past) it is no longer active."""
    clock = FakeClock(wall_start=time.time() - 3600)  # resolved endsAt lands in the past
    alerter, context = make_alerter(clock, alertmanager_url=alertmanager)
    assert context.metrics is not None
    async with alerter.running():
        context.metrics.set("memory_percent", 91.5)
        await clock.advance(0)
        with anyio.fail_after(20):
            await alerter.flush()
        listed = await anyio.to_thread.run_sync(get_json, f"{alertmanager}/api/v2/alerts")
        assert [a["labels"] for a in listed] == [
            {"alertname": "HighMemoryUsage", "severity": "page"}
        ]
        assert listed[0]["annotations"] == {"summary": "memory at 91.5%"}
        assert listed[0]["status"]["state"] == "active"
        assert listed[0]["generatorURL"] == "jarvis-runtime://jarvis/alerts/HighMemoryUsage"
        context.metrics.set("memory_percent", 40.0)
        await clock.advance(1.0)
        with anyio.fail_after(20):
            await alerter.flush()
        listed = await anyio.to_thread.run_sync(get_json, f"{alertmanager}/api/v2/alerts")
        assert listed == []
    stats = alerter.statistics().sinks[0]
    assert (stats.name, stats.delivered, stats.given_up) == ("alertmanager", 2, 0)


# -- a local webhook --------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records each POST body; answers with the next scripted status (200 when none left)."""

    bodies: list[Any]
    statuses: list[int]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append(json.loads(self.rfile.read(length)))
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[Any], list[int]]]:
    """A stdlib HTTP server on 127.0.0.1 in a thread: (url, received bodies, statuses to
    answer with)."""
    bodies: list[Any] = []
    statuses: list[int] = []
    handler = type("Handler", (_Recorder,), {"bodies": bodies, "statuses": statuses})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts", bodies, statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_webhook_receives_firing_then_resolved(
    webhook: tuple[str, list[Any], list[int]], clock: FakeClock
) -> None:
    """The webhook gets a JSON post when the alert fires and one when it resolves, each with
    the alert's status, labels, annotations, value and times."""
    url, bodies, _ = webhook
    alerter, context = make_alerter(clock, webhook_url=url)
    assert context.metrics is not None
    async with alerter.running():
        context.metrics.set("memory_percent", 90.0, device="kitchen")
        await clock.advance(0)
        context.metrics.set("memory_percent", 10.0, device="kitchen")
        await clock.advance(1.0)
        with anyio.fail_after(20):
            await alerter.flush()
    assert [body["status"] for body in bodies] == ["firing", "resolved"]
    fired, resolved = bodies[0]["alerts"][0], bodies[1]["alerts"][0]
    labels = {"alertname": "HighMemoryUsage", "device": "kitchen", "severity": "page"}
    assert fired["labels"] == labels
    assert (fired["annotations"], fired["value"]) == ({"summary": "memory at 90%"}, 90.0)
    assert fired["startsAt"] == resolved["startsAt"] == "2027-01-15T08:00:00.000Z"
    assert resolved["endsAt"] == "2027-01-15T08:00:01.000Z"


async def test_http_post_reports_refused_connections_and_bad_statuses(
    webhook: tuple[str, list[Any], list[int]],
) -> None:
    """http_post raises SinkError: retryable for a refused connection or a 503, not for a 404."""
    url, _, statuses = webhook
    with pytest.raises(SinkError) as refused:
        await post_in_thread(f"http://127.0.0.1:{free_port()}/", b"[]", 5.0)
    assert refused.value.retryable and refused.value.status is None
    statuses += [503, 404]
    for expected, retryable in ((503, True), (404, False)):
        with pytest.raises(SinkError, match=f"HTTP {expected}") as bad:
            await anyio.to_thread.run_sync(http_post, url, b"[]", 5.0)
        assert (bad.value.status, bad.value.retryable) == (expected, retryable)
    assert await post_in_thread(url, b"[]", 5.0) == 200


# -- retry, breaker and outbox, on the fake clock ---------------------------------------------


class ScriptedPost:
    """A sink's post that answers from a script: an int status (2xx ok) or ``"hang"`` (waits
    until released). Records each call's url and time."""

    def __init__(self, clock: FakeClock, script: list[int | str]) -> None:
        self.clock = clock
        self.script = script
        self.calls: list[tuple[str, float]] = []
        self.release = anyio.Event()

    async def __call__(self, url: str, body: bytes, timeout_s: float) -> int:
        self.calls.append((url, self.clock.now()))
        answer = self.script.pop(0) if self.script else 200
        if answer == "hang":
            await self.release.wait()
            answer = 200
        assert isinstance(answer, int)
        if not 200 <= answer < 300:
            raise SinkError(f"HTTP {answer}", status=answer)
        return answer


async def fire_once(alerter: Alerter, context: ActorContext, clock: FakeClock) -> None:
    """Make the rule fire (one batch to every sink)."""
    assert context.metrics is not None
    context.metrics.set("memory_percent", 99.0)
    await clock.advance(0)


async def test_sink_retries_with_backoff_then_delivers(clock: FakeClock) -> None:
    """Two 503s are retried after backoff delays on the clock; the third attempt delivers."""
    post = ScriptedPost(clock, [503, 503, 200])
    alerter, context = make_alerter(clock, webhook_url="http://hook.invalid/x", post=post)
    async with alerter.running():
        await fire_once(alerter, context, clock)
        await clock.advance(2.0)  # the backoff caps sum to at most 0.3 s
        await alerter.flush()
    times = [at for _, at in post.calls]
    assert len(times) == 3 and times[0] == 0 < times[1] <= 0.1 and times[2] - times[1] <= 0.2
    stats = alerter.statistics().sinks[0]
    assert (stats.delivered, stats.failed_attempts, stats.given_up) == (1, 2, 0)


async def test_sink_gives_up_after_the_last_retry(clock: FakeClock) -> None:
    """A sink that keeps failing is tried 1 + retries times; the batch goes to the dead
    letters, and a 404 is not retried at all."""
    post = ScriptedPost(clock, [500, 500, 500, 500, 404])
    alerter, context = make_alerter(clock, webhook_url="http://hook.invalid/x", post=post)
    assert context.dead_letters is not None and context.metrics is not None
    async with alerter.running():
        await fire_once(alerter, context, clock)
        await clock.advance(5.0)
        context.metrics.set("memory_percent", 1.0)  # resolves: a second batch, answered 404
        await clock.advance(1.0)
        await alerter.flush()
    assert len(post.calls) == 5
    assert context.dead_letters.by_reason == {"sink_failed": 2}
    assert isinstance(context.dead_letters.entries()[0].message, Batch)
    assert alerter.statistics().sinks[0].given_up == 2


async def test_breaker_opens_and_refuses_without_calling(clock: FakeClock) -> None:
    """After five failed attempts the breaker opens: the batch being retried and the next one
    are refused without a call, dead-lettered as circuit_open; the change is published."""
    post = ScriptedPost(clock, [500] * 8)
    alerter, context = make_alerter(clock, webhook_url="http://hook.invalid/x", post=post)
    assert context.events is not None and context.metrics is not None
    with context.events.subscribe(CircuitBreakerStateChanged) as changes:
        async with alerter.running():
            await fire_once(alerter, context, clock)  # 4 attempts
            await clock.advance(5.0)
            context.metrics.set("memory_percent", 1.0)  # resolved: 1 attempt, then open
            await clock.advance(1.0)
            context.metrics.set("memory_percent", 99.0)  # fires again: refused
            await clock.advance(5.0)
            await alerter.flush()
        assert changes.receive_nowait().new == "open"
    assert len(post.calls) == 5
    assert context.dead_letters is not None
    assert context.dead_letters.by_reason == {"sink_failed": 1, "circuit_open": 2}
    assert alerter.statistics().sinks[0].breaker == "open"


async def test_outbox_is_bounded_and_evaluation_never_waits(clock: FakeClock) -> None:
    """A hung sink holds its outbox (outbox_capacity batches, oldest dropped to the dead
    letters) while evaluation rounds go on."""
    post = ScriptedPost(clock, ["hang"])
    rules = [RULE | {"name": f"Rule{i}"} for i in range(4)]
    alerter, context = make_alerter(
        clock, rules=rules, webhook_url="http://hook.invalid/x", post=post, outbox_capacity=2,
        repeat_interval_s=1.0,
    )  # fmt: skip
    assert context.dead_letters is not None
    async with alerter.running():
        await fire_once(alerter, context, clock)
        for _ in range(5):
            await clock.advance(1.0)  # every round re-sends (repeat interval 1 s)
        assert alerter.statistics().evaluations == 6
        assert context.dead_letters.by_reason == {"mailbox_full": 3}
        post.release.set()
        await alerter.flush()
    assert len(post.calls) == 3  # the hung batch, then the two newest


# -- payloads ---------------------------------------------------------------------------------


def _alert(**fields: Any) -> Alert:
    base: dict[str, Any] = {"name": "A", "state": "firing", "labels": {"alertname": "A"},
                            "annotations": {}, "value": 1.0, "active_since": 1_800_000_000.0,
                            "fired_at": 1_800_000_060.0}  # fmt: skip
    return Alert(**(base | fields))


def test_alertmanager_payload_leases_firing_alerts_and_ends_resolved_ones() -> None:
    """A firing alert's endsAt is sent_at + lease; a resolved one's is when it resolved;
    startsAt is when it fired."""
    batch = Batch(
        alerts=[_alert(), _alert(state="resolved", resolved_at=1_800_000_120.5)],
        sent_at=1_800_000_200.0, lease_s=100.0, generator_url="jarvis-runtime://j/alerts/",
    )  # fmt: skip
    firing, resolved = json.loads(alertmanager_payload(batch))
    assert firing == {
        "labels": {"alertname": "A"}, "annotations": {},
        "startsAt": "2027-01-15T08:01:00.000Z", "endsAt": "2027-01-15T08:05:00.000Z",
        "generatorURL": "jarvis-runtime://j/alerts/A",
    }  # fmt: skip
    assert resolved["endsAt"] == "2027-01-15T08:02:00.500Z"


def test_webhook_payload_spells_non_finite_values_as_strings() -> None:
    """JSON has no NaN or Inf: the webhook sends such values as strings."""
    batch = Batch(alerts=[_alert(value=float("inf"))], sent_at=0.0, lease_s=1.0,
                  generator_url="x://")  # fmt: skip
    body = json.loads(webhook_payload(batch))
    assert (body["status"], body["alerts"][0]["value"]) == ("firing", "inf")
