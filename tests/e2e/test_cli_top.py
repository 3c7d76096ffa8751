"""``jarvis-runtime top`` against real endpoints: a running runtime, dead ports, wrong servers."""

from __future__ import annotations

import functools
import io
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import msgspec
import pytest

from runtime import Runtime
from runtime.cli import main
from runtime.clock import FakeClock
from runtime.exporter import MetricsExporter
from runtime.top import Scrape, quantile, render_frame, run_top
from tests.runtime.test_exporter import exposition, full_snapshot, runtime_config

URL = "http://127.0.0.1:9464/metrics"


async def voice_turn(text: str) -> str:
    return text.upper()


@contextmanager
def http_server(status: int, body: str) -> Iterator[str]:
    """A real HTTP server on a free loopback port answering every GET with ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- against a running runtime ----------------------------------------------------------------


async def test_top_once_shows_a_running_runtime(tmp_path: Path, clock: FakeClock) -> None:
    """`jarvis-runtime top --once` in a real process prints each class against its target."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        for _ in range(4):
            await rt.submit(voice_turn, "hi", task_class="voice")
        async with MetricsExporter(rt) as exporter:
            url = exporter.url
            command = [sys.executable, "-m", "runtime", "top", "--once", "--url", url]
            result = await anyio.run_process(command, check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"jarvis-runtime top - jarvis - up 0m00s - {url}" in out
    voice = next(line for line in out.splitlines() if line.startswith("voice"))
    assert voice.split()[1:3] == ["1000", "ms"] and " ok " in voice
    assert voice.split()[-5:] == ["4", "0", "0", "0", "0"]
    assert "alerts     none" in out and "restarts   0" in out


async def test_live_view_redraws_until_ctrl_c(tmp_path: Path, clock: FakeClock) -> None:
    """Without --once frames follow each other, later ones over the last interval; Ctrl-C
    ends the view with exit 0."""
    async with Runtime(runtime_config(tmp_path), clock=clock) as rt:
        await rt.submit(voice_turn, "hi", task_class="wake_word")
        async with MetricsExporter(rt) as exporter:
            pauses: list[float] = []

            def sleep(seconds: float) -> None:  # the view's pause: more work, or Ctrl-C
                pauses.append(seconds)
                if len(pauses) == 3:
                    raise KeyboardInterrupt
                anyio.from_thread.run(
                    functools.partial(rt.submit, task_class="wake_word"), voice_turn, "x"
                )

            out = io.StringIO()
            code = await anyio.to_thread.run_sync(
                lambda: run_top(exporter.url, interval_s=0.5, out=out, sleep=sleep)
            )
    frames = out.getvalue().split("jarvis-runtime top - ")[1:]
    assert code == 0 and pauses == [0.5, 0.5, 0.5] and len(frames) == 3
    assert "since start" in frames[0] and "last 0.5 s" in frames[2]
    done = [
        next(x for x in f.splitlines() if x.startswith("wake_word")).split()[-5] for f in frames
    ]
    assert done == ["1", "2", "3"]


# -- failures ---------------------------------------------------------------------------------


def test_unreachable_endpoint_exits_1_and_says_what_to_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening: exit 1 with the URL and a hint about metrics.prometheus.enabled."""
    url = f"http://127.0.0.1:{closed_port()}/metrics"
    assert main(["top", "--once", "--url", url]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach {url}" in err and "metrics.prometheus.enabled" in err


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/metrics", "127.0.0.1:9464", "http://h:port/"])
def test_malformed_url_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL that is not http(s)://host[:port] is bad usage: exit 2, naming --url."""
    assert main(["top", "--once", "--url", url]) == 2
    assert f"--url {url!r}" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "inf"])
def test_bad_interval_exits_2(interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--interval must be a finite number of seconds above 0."""
    assert main(["top", "--interval", interval]) == 2
    assert "--interval" in capsys.readouterr().err


def test_run_top_refuses_a_bad_interval_too(capsys: pytest.CaptureFixture[str]) -> None:
    """Called directly, run_top checks the interval as the command line does."""
    assert run_top(URL, interval_s=0) == 2
    assert "--interval must be" in capsys.readouterr().err


def test_http_error_exits_1_with_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    """An endpoint answering 500 exits 1 and says so."""
    with http_server(500, "boom") as url:
        assert main(["top", "--once", "--url", url]) == 1
    assert "answered HTTP 500" in capsys.readouterr().err


def test_a_page_that_is_not_metrics_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """An HTML page is not the Prometheus text format: exit 1."""
    with http_server(200, "<html><body>hello</body></html>\n") as url:
        assert main(["top", "--once", "--url", url]) == 1
    assert "is not a Prometheus metrics endpoint" in capsys.readouterr().err


def test_metrics_of_something_else_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Prometheus metrics without a jarvis runtime's series: exit 1, not an empty view."""
    with http_server(200, "# TYPE up gauge\nup 1\n") as url:
        assert main(["top", "--once", "--url", url]) == 1
    assert "none of a jarvis runtime" in capsys.readouterr().err


# -- what a frame shows -----------------------------------------------------------------------


def test_quantile_interpolates_like_histogram_quantile() -> None:
    """Linear inside the bucket; the overflow bucket gives the highest finite bound."""
    buckets = {0.001: 50.0, 0.002: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.001)
    assert quantile(0.99, buckets) == pytest.approx(0.00198)
    assert quantile(0.99, {0.001: 0.0, 0.5: 1.0, float("inf"): 10.0}) == 0.5
    assert quantile(0.5, {0.001: 0.0, float("inf"): 0.0}) is None


def test_frame_shows_cache_alerts_restarts_and_resources() -> None:
    """Hit rate per namespace, firing and pending alerts, restarted actors, CPU and memory."""
    frame = render_frame(Scrape(exposition(full_snapshot())), None, url=URL, interval_s=2)
    assert "embedding 85.7% (35 reads)" in frame and "response 92.3% (65 reads)" in frame
    assert "FIRING HighMemoryUsage {severity=warning}" in frame
    assert "PENDING HighCpuUsage" in frame
    assert "restarts   5 (scheduler 1, writer 4)   dead letters 3" in frame
    assert "cpu 12.5% (runtime 20.0% of 20.0% budget)" in frame  # (30 + 10) / 2 cores
    assert "runtime rss 100 MB of 2048 MB   loop lag 1.50 ms" in frame


def test_a_class_over_its_target_is_marked_late() -> None:
    """p99 above the class's deadline reads LATE; within it, ok."""
    snapshot = full_snapshot()
    slow = msgspec.structs.replace(snapshot, deadlines_s={"voice": 0.25})
    late = render_frame(Scrape(exposition(slow)), None, url=URL, interval_s=2)
    fine = render_frame(Scrape(exposition(snapshot)), None, url=URL, interval_s=2)
    assert "LATE" in next(x for x in late.splitlines() if x.startswith("voice"))
    assert " ok " in next(x for x in fine.splitlines() if x.startswith("voice"))


def test_counts_that_went_down_are_read_as_they_are() -> None:
    """After a runtime restart its counters start over: the frame uses the new counts, never
    negative differences."""
    before = Scrape(exposition(full_snapshot()))
    stats = full_snapshot().statistics
    cache = {"namespaces": {"response": {"hits": 6, "misses": 1}}}
    restarted = msgspec.structs.replace(
        full_snapshot(), statistics={**stats, "services": {**stats["services"], "cache": cache}}
    )
    frame = render_frame(Scrape(exposition(restarted)), before, url=URL, interval_s=2)
    assert "cache      response 85.7% (7 reads)" in frame
