"""Helpers for the cache tests (no tests here): configs, contexts, events, a real Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.cache import Cache
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import CacheSection, parse_config
from runtime.events import Event, EventBus, Subscription


def section(tiers: str, *, extra: str = "") -> CacheSection:
    """A cache section from YAML flow text: ``tiers`` is the list, ``extra`` more keys."""
    text = f"cache:\n  tiers: {tiers}\n" + "".join(f"  {line}\n" for line in extra.splitlines())
    return parse_config(text, env={}).cache


def context(clock: FakeClock) -> ActorContext:
    """A context on ``clock`` with an event bus."""
    return ActorContext(clock=clock, events=EventBus(clock=clock))


def make_cache(clock: FakeClock, tiers: str, *, extra: str = "", seed: int = 0) -> Cache:
    return Cache(section(tiers, extra=extra), context(clock), seed=seed)


def subscribe(cache: Cache, *types: type[Event]) -> Subscription[Event]:
    bus = cache._context.events
    assert bus is not None
    return bus.subscribe(*types)


def drain(sub: Subscription[Event]) -> list[Any]:
    """Every event buffered in ``sub`` (typed loosely: tests read the fields they expect)."""
    out: list[Any] = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except anyio.WouldBlock:
            return out


def tier_stats(cache: Cache, name: str) -> Any:
    return next(t for t in cache.statistics().tiers if t.name == name)


# -- a real redis-server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` on a free loopback port, in a directory of its own, no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            pytest.fail(
                "redis-server is not installed: the Redis tier is tested against a real one; "
                "run .ci/install-system-deps (or apt-get install redis-server)"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (in real time: it is another process) until it answers."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"redis-server exited at start: {error}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)  # waiting for another process to listen, not ordering events
        pytest.fail(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
            if process.stderr is not None:
                process.stderr.close()
