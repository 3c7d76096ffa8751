"""The public test helpers: capture_logs, and the fake clock re-exported."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import structlog
from structlog.contextvars import bound_contextvars, clear_contextvars

import runtime.clock
import runtime.testing
from runtime.logging import configure_logging, get_logger, reset_logging
from runtime.testing import FakeClock, capture_logs, settle


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Leave structlog, its context variables and the sink as they were before each test."""
    yield
    reset_logging()
    clear_contextvars()


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ names every helper the module offers (its own or runtime.clock's), no more."""
    offered = {
        name
        for name, obj in vars(runtime.testing).items()
        if not name.startswith("_")
        and not inspect.ismodule(obj)
        and getattr(obj, "__module__", None) in ("runtime.testing", "runtime.clock")
    }
    assert sorted(runtime.testing.__all__) == sorted(offered)


def test_clock_helpers_are_the_runtime_clock_ones() -> None:
    """FakeClock and settle are the very objects from runtime.clock."""
    assert FakeClock is runtime.clock.FakeClock
    assert settle is runtime.clock.settle


async def test_fake_clock_from_testing_drives_a_sleeper() -> None:
    """The re-exported FakeClock wakes a sleeper only when advanced."""
    clock = FakeClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(2)
        woke.append(clock.now())

    task = asyncio.create_task(sleeper())
    await settle()
    await clock.advance(1)
    assert woke == []
    await clock.advance(1)
    assert woke == [2]
    await task


def test_capture_logs_keeps_actor_level_and_context() -> None:
    """Captured events carry event, level, actor and context from bind and contextvars."""
    with capture_logs() as entries, bound_contextvars(task_id="t1"):
        get_logger("scheduler", task_class="voice").info("started", queue_wait_ms=3)
        structlog.get_logger().warning("plain")
    first, second = entries
    assert first["event"] == "started"
    assert first["level"] == "info"
    assert first["actor"] == "scheduler"
    assert (first["task_class"], first["task_id"], first["queue_wait_ms"]) == ("voice", "t1", 3)
    assert (second["actor"], second["level"]) == ("runtime", "warning")


def test_capture_logs_redacts_secrets() -> None:
    """Secrets are redacted in captured events as they would be in the file."""
    with capture_logs() as entries:
        get_logger("quota").info("call", token="abc", headers={"Authorization": "Bearer x"})
    [entry] = entries
    assert entry["token"] == "***"
    assert entry["headers"] == {"Authorization": "***"}


def test_capture_logs_diverts_from_the_file_then_restores_it(tmp_path: Path) -> None:
    """Inside the block events are captured, not written; after it they go to the file again."""
    path = tmp_path / "runtime.jsonl"
    sink = configure_logging(file=path, console=False)
    log = get_logger("sampler")
    with capture_logs() as entries:
        log.info("captured")
    log.info("written")
    sink.close()
    assert [e["event"] for e in entries] == ["captured"]
    assert [msgspec.json.decode(line)["event"] for line in path.read_bytes().splitlines()] == [
        "written"
    ]


def test_capture_logs_sees_only_events_at_the_configured_level() -> None:
    """Below the configured level nothing is logged, so nothing is captured."""
    configure_logging(level="warning", console=False)
    with capture_logs() as entries:
        get_logger("alerter").info("quiet")
        get_logger("alerter").error("loud")
    assert [e["event"] for e in entries] == ["loud"]
