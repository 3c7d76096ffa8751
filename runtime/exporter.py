"""The ``/metrics`` endpoint: a Runtime's metrics in the Prometheus text format over HTTP.

``MetricsExporter(rt)`` serves on ``metrics.prometheus.host:port`` (127.0.0.1 unless configured
otherwise; port 0 picks a free port, read it back from ``exporter.port``)::

    async with MetricsExporter(rt, port=0) as exporter:
        print(exporter.url)          # http://127.0.0.1:40123/metrics

Nothing is counted twice: a scrape reads the runtime as it is. The HTTP server (prometheus_client's
WSGI app on wsgiref) runs in threads; each scrape hops onto the event loop to take a ``Snapshot``
(statistics, gauges, histogram counts: the loop owns those structures, so only the loop reads
them), then builds the families and the text in its own thread, off the loop.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio
import anyio.from_thread
import anyio.lowlevel
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .exceptions import ConfigError, ConfigProblem
from .logging import get_logger
from .scrape import Snapshot, metric_families, take_snapshot

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .app import Runtime

__all__ = ["MetricsExporter", "RuntimeCollector", "render"]

_POLL_INTERVAL_S = 0.1  # how soon the server thread notices a shutdown


class RuntimeCollector(Collector):
    """A prometheus_client collector whose every ``collect`` reads a fresh ``Snapshot``."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return metric_families(self._snapshot())


def render(rt: Runtime) -> bytes:
    """The text a scrape would get now, without HTTP. Call it on the runtime's event loop."""
    snapshot = take_snapshot(rt)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(lambda: snapshot))
    return generate_latest(registry)


class MetricsExporter:
    """Serves ``rt``'s metrics over HTTP from a thread while it is started.

    ``host`` and ``port`` default to ``metrics.prometheus`` in ``rt.config`` (``port=0``: any
    free port). Use ``async with``, or ``await start()`` and ``await aclose()``.
    """

    def __init__(self, rt: Runtime, *, host: str | None = None, port: int | None = None) -> None:
        prometheus = rt.config.metrics.prometheus
        self._runtime = rt
        self.host = prometheus.host if host is None else host
        self._requested_port = prometheus.port if port is None else port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._log = get_logger("exporter")

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for 0). Raises ``RuntimeError``
        before ``start()``."""
        if self._server is None:
            raise RuntimeError("the metrics exporter is not started: call await start() first")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """``http://host:port/metrics``; raises ``RuntimeError`` before ``start()``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        """Listen and serve. Raises ``ConfigError`` (naming ``$.metrics.prometheus.host`` or
        ``.port``) when the address cannot be used, ``RuntimeError`` if already started."""
        if self._server is not None:
            raise RuntimeError("the metrics exporter is already started")
        token = anyio.lowlevel.current_token()
        rt = self._runtime

        def snapshot() -> Snapshot:  # in a server thread: the loop takes it
            return anyio.from_thread.run_sync(take_snapshot, rt, token=token)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(RuntimeCollector(snapshot))
        app = _guarded(make_wsgi_app(registry), self._log)
        server = await anyio.to_thread.run_sync(self._bind, app)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="jarvis-metrics",
            daemon=True,  # a wedged scrape must not keep the process alive at exit
        )
        self._thread.start()
        self._log.info("metrics endpoint listening", url=self.url)

    def _bind(self, app: WSGIApplication) -> WSGIServer:
        try:
            family = socket.getaddrinfo(self.host, self._requested_port, type=socket.SOCK_STREAM)
            server_class = type("_Server", (ThreadingWSGIServer,), {"address_family": family[0][0]})
            return make_server(
                self.host, self._requested_port, app, server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise _address_problem(self.host, self._requested_port, exc) from exc

    async def aclose(self) -> None:
        """Stop serving and wait for the server thread (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        await anyio.to_thread.run_sync(stop)
        self._log.info("metrics endpoint closed")

    async def __aenter__(self) -> MetricsExporter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _address_problem(host: str, port: int, exc: OSError) -> ConfigError:
    """A ConfigError naming the key to change: the port when it is taken or privileged."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        message = f"cannot listen on port {port} ({reason}): choose another port, or 0 for any"
        return ConfigError([ConfigProblem("$.metrics.prometheus.port", message)])
    message = f"cannot listen on {host!r} ({reason}): use a local address such as 127.0.0.1"
    return ConfigError([ConfigProblem("$.metrics.prometheus.host", message)])


def _guarded(app: WSGIApplication, log: Any) -> WSGIApplication:
    """``app``, answering 500 with the reason (and logging it) when a scrape fails."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except Exception as exc:  # a scrape must fail visibly, never kill the server thread
            log.error("metrics scrape failed", error=repr(exc))
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            start_response("500 Internal Server Error", headers, sys.exc_info())
            return [f"scrape failed: {exc!r}\n".encode()]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    """Requests are not logged to stderr (a scrape per second would flood it)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
