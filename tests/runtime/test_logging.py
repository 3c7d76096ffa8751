"""Structured logging: JSON lines, console, redaction, rotation, the writer thread."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from structlog.contextvars import bound_contextvars, clear_contextvars

from runtime.clock import FakeClock
from runtime.logging import (
    LogSink,
    configure_logging,
    get_logger,
    is_secret_key,
    redact_secrets,
    reset_logging,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Leave structlog, its context variables and the sink as they were before each test."""
    yield
    reset_logging()
    clear_contextvars()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "log" / "runtime.jsonl"


def file_sink(path: Path, **options: Any) -> LogSink:
    options.setdefault("console", False)
    options.setdefault("clock", FakeClock(wall_start=1_800_000_000.123))
    return configure_logging(file=path, **options)


def records(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        return [msgspec.json.decode(line) for line in f]


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("stream gone")


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


# -- the JSON line ---------------------------------------------------------------------------


def test_json_line_has_timestamp_level_event_actor_then_context(log_path: Path) -> None:
    """A line is one JSON object: timestamp, level, event, actor first, then the context."""
    sink = file_sink(log_path)
    get_logger("sampler", task_class="voice").info("sampled", cpu_percent=3.5)
    sink.close()
    [record] = records(log_path)
    assert record == {
        "timestamp": "2027-01-15T08:00:00.123Z",
        "level": "info",
        "event": "sampled",
        "actor": "sampler",
        "task_class": "voice",
        "cpu_percent": 3.5,
    }
    assert list(record)[:4] == ["timestamp", "level", "event", "actor"]


def test_timestamp_is_utc_iso8601_with_milliseconds_and_z(log_path: Path) -> None:
    """The default timestamp is the wall clock in UTC, to the millisecond, ending in Z."""
    sink = file_sink(log_path, clock=None)
    before = datetime.now(UTC)
    get_logger("sampler").info("tick")
    after = datetime.now(UTC)
    sink.close()
    [record] = records(log_path)
    assert TIMESTAMP.match(record["timestamp"])
    stamp = datetime.fromisoformat(record["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= stamp <= after + timedelta(milliseconds=1)


def test_parent_directories_are_created(log_path: Path) -> None:
    """The file's missing parent directories are made."""
    sink = file_sink(log_path)
    sink.close()
    assert log_path.parent.is_dir()
    assert sink.path == log_path


def test_actor_defaults_to_runtime_and_follows_binding(log_path: Path) -> None:
    """Without a bound actor the event says runtime; get_logger binds the one it is given."""
    sink = file_sink(log_path)
    structlog.get_logger().info("plain")
    get_logger("cache").info("bound")
    sink.close()
    assert [r["actor"] for r in records(log_path)] == ["runtime", "cache"]


def test_context_comes_from_bind_and_contextvars(log_path: Path) -> None:
    """Context bound on the logger or in context variables lands in the line; bind wins."""
    sink = file_sink(log_path)
    log = get_logger("scheduler")
    with bound_contextvars(task_id="t1", plugin="weather"):
        log.info("from contextvars")
        log.bind(task_id="t2").info("bind wins")
    log.info("outside")
    sink.close()
    first, second, third = records(log_path)
    assert (first["task_id"], first["plugin"]) == ("t1", "weather")
    assert (second["task_id"], second["plugin"]) == ("t2", "weather")
    assert "task_id" not in third


def test_stack_info_is_rendered(log_path: Path) -> None:
    """stack_info=True adds the caller's stack as a stack field."""
    sink = file_sink(log_path)
    get_logger("profiler").info("where", stack_info=True)
    sink.close()
    [record] = records(log_path)
    assert "test_stack_info_is_rendered" in record["stack"]


# -- levels and settings ---------------------------------------------------------------------


def test_level_filters_lower_events(log_path: Path) -> None:
    """Events below the configured level are dropped; the level name is case-insensitive."""
    sink = file_sink(log_path, level="WARNING")
    log = get_logger("alerter")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    sink.close()
    assert [(r["event"], r["level"]) for r in records(log_path)] == [
        ("w", "warning"),
        ("e", "error"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"level": "loud"},
            "level must be one of debug, info, warning, error, critical; got 'loud'",
        ),
        ({"max_bytes": 0}, "max_bytes must be > 0; got 0"),
        ({"backups": -1}, "backups must be >= 0; got -1"),
    ],
)
def test_bad_settings_raise_value_error_naming_them(
    log_path: Path, options: dict[str, Any], message: str
) -> None:
    """A bad level, max_bytes or backups raises ValueError naming the setting and the value."""
    with pytest.raises(ValueError, match=re.escape(message)):
        file_sink(log_path, **options)
    assert not log_path.exists()


def test_get_logger_rejects_an_empty_actor() -> None:
    """get_logger('') raises ValueError: every event must say who logged it."""
    with pytest.raises(ValueError, match="actor must be a non-empty name"):
        get_logger("")


# -- console ---------------------------------------------------------------------------------


def test_console_renders_readable_lines_without_colors_off_a_tty() -> None:
    """The console shows level, event and key=value pairs, with no ANSI codes on a non-tty."""
    stream = io.StringIO()
    sink = configure_logging(console_stream=stream, clock=FakeClock(wall_start=1_800_000_000))
    get_logger("sampler").info("sampled", cpu_percent=3.5)
    sink.close()
    text = stream.getvalue()
    assert text.startswith("2027-01-15T08:00:00.000Z [info")
    assert "sampled" in text
    assert "actor=sampler" in text
    assert "cpu_percent=3.5" in text
    assert "\x1b[" not in text
    assert sink.path is None


def test_console_uses_colors_on_a_tty() -> None:
    """A stream that is a terminal gets colored output."""
    stream = TtyStream()
    sink = configure_logging(console_stream=stream)
    get_logger("sampler").info("sampled")
    sink.close()
    assert "\x1b[" in stream.getvalue()


def test_console_false_writes_nothing_to_the_stream(log_path: Path) -> None:
    """With console=False the stream stays empty while the file gets the event."""
    stream = io.StringIO()
    sink = file_sink(log_path, console=False, console_stream=stream)
    get_logger("sampler").info("sampled")
    sink.close()
    assert stream.getvalue() == ""
    assert len(records(log_path)) == 1


def test_console_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a console_stream the console is stderr, not stdout."""
    sink = configure_logging()
    get_logger("sampler").info("to stderr")
    sink.close()
    captured = capsys.readouterr()
    assert "to stderr" in captured.err
    assert captured.out == ""


# -- exceptions ------------------------------------------------------------------------------


def test_exception_is_rendered_as_a_traceback_field_and_on_the_console(log_path: Path) -> None:
    """log.exception() writes the formatted traceback to the JSON exception field and console."""
    stream = io.StringIO()
    sink = file_sink(log_path, console=True, console_stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("scheduler").exception("task failed")
    sink.close()
    [record] = records(log_path)
    assert record["level"] == "error"
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert record["exception"].endswith("ValueError: boom")
    assert "exc_info" not in record
    assert "ValueError: boom" in stream.getvalue()


def test_exc_info_may_be_an_exception_instance(log_path: Path) -> None:
    """exc_info=<exception> renders that exception, outside any except block."""
    sink = file_sink(log_path)
    get_logger("scheduler").warning("retrying", exc_info=TimeoutError("slow"))
    sink.close()
    [record] = records(log_path)
    assert "TimeoutError: slow" in record["exception"]


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "DB_PASSWORD",
        "access_token",
        "apiKey",
        "APIKEY",
        "X-Api-Key",
        "api_key",
        "Authorization",
        "client_secret",
        "secret",
        "passwd",
        "private_key",
    ],
)
def test_secret_looking_keys_are_recognised(key: str) -> None:
    """Keys naming credentials are secret, whatever their case or separator."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "tokenizer", "task_id", "keyboard", "monkey"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    """Keys that merely contain a secret word inside another word are left alone."""
    assert not is_secret_key(key)


def test_redaction_covers_top_level_and_nested_dicts_without_editing_them() -> None:
    """Secret values become *** at the top level and inside dicts and lists; inputs stay intact."""
    headers = {"Authorization": "Bearer abc", "Accept": "json"}
    event = {
        "event": "call",
        "password": "hunter2",
        "request": {"headers": headers},
        "items": [{"token": "t"}],
        "max_tokens": 3,
    }
    out = redact_secrets(None, "info", event)
    assert out["password"] == "***"
    assert out["request"] == {"headers": {"Authorization": "***", "Accept": "json"}}
    assert out["items"] == [{"token": "***"}]
    assert out["max_tokens"] == 3
    assert headers["Authorization"] == "Bearer abc"


def test_secrets_never_reach_the_file_or_console(log_path: Path) -> None:
    """Neither the JSON file nor the console ever holds a secret value."""
    stream = io.StringIO()
    sink = file_sink(log_path, console=True, console_stream=stream)
    get_logger("quota").info(
        "plugin call", api_key="SEKRET-1", config={"db": {"password": "SEKRET-2"}}
    )
    sink.close()
    assert "SEKRET" not in log_path.read_text()
    assert "SEKRET" not in stream.getvalue()
    [record] = records(log_path)
    assert record["api_key"] == "***"
    assert record["config"] == {"db": {"password": "***"}}


# -- rotation --------------------------------------------------------------------------------


def log_numbered(count: int) -> None:
    log = get_logger("sampler")
    for index in range(count):
        log.info("sample", index=index, padding="x" * 40)


def indexes(path: Path) -> list[int]:
    return [r["index"] for r in records(path)]


def test_rotation_keeps_at_most_backups_files_each_within_max_bytes(log_path: Path) -> None:
    """Past max_bytes the file rolls to .1, .2...; only `backups` old files are kept."""
    sink = file_sink(log_path, max_bytes=2_000, backups=2)
    log_numbered(200)
    sink.close()
    kept = [log_path.with_name(f"runtime.jsonl.{n}") for n in (2, 1)] + [log_path]
    assert all(p.exists() and p.stat().st_size <= 2_000 for p in kept)
    assert not log_path.with_name("runtime.jsonl.3").exists()
    seen = [i for p in kept for i in indexes(p)]
    assert seen == list(range(seen[0], 200))  # newest kept, in order, none missing
    assert seen[0] > 0  # the oldest were deleted


def test_rotation_loses_and_splits_no_line(log_path: Path) -> None:
    """With room for every backup, each line is in exactly one file, whole and in order."""
    sink = file_sink(log_path, max_bytes=1_000, backups=100)
    log_numbered(150)
    sink.close()
    files = sorted(log_path.parent.glob("runtime.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(files) > 5
    seen = [i for p in [*files, log_path] for i in indexes(p)]  # decoding fails on a split line
    assert seen == list(range(150))


def test_rotation_without_backups_starts_the_file_over(log_path: Path) -> None:
    """backups=0 keeps no old file: the file is truncated and holds the newest lines."""
    sink = file_sink(log_path, max_bytes=1_000, backups=0)
    log_numbered(50)
    sink.close()
    assert list(log_path.parent.iterdir()) == [log_path]
    assert log_path.stat().st_size <= 1_000
    assert indexes(log_path)[-1] == 49


def test_an_existing_file_counts_towards_max_bytes(log_path: Path) -> None:
    """Appending to an almost full file rotates it before the first new line."""
    log_path.parent.mkdir(parents=True)
    log_path.write_bytes(b'{"event":"old"}\n' + b" " * 980 + b"\n")
    sink = file_sink(log_path, max_bytes=1_000, backups=1)
    get_logger("sampler").info("new")
    sink.close()
    assert log_path.with_name("runtime.jsonl.1").read_bytes().startswith(b'{"event":"old"}')
    assert [r["event"] for r in records(log_path)] == ["new"]


def test_a_failed_rotation_is_reported_and_writing_goes_on(
    log_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """If the rename fails the writer says so once on stderr and keeps appending every line."""
    log_path.parent.mkdir(parents=True)
    log_path.with_name("runtime.jsonl.1").mkdir()  # a directory cannot be replaced by a file
    sink = file_sink(log_path, max_bytes=500, backups=1)
    log_numbered(30)
    sink.close()
    assert indexes(log_path) == list(range(30))
    assert sink.write_errors > 1
    assert capfd.readouterr().err.count("cannot write logs") == 1


# -- the writer thread -----------------------------------------------------------------------


def test_close_writes_every_line_logged_before_it(log_path: Path) -> None:
    """Ten thousand events, then close: every one is in the file."""
    sink = file_sink(log_path)
    log = get_logger("bench")
    for index in range(10_000):
        log.info("e", i=index)
    sink.close()
    with log_path.open("rb") as f:
        assert sum(1 for _ in f) == 10_000


def test_close_is_idempotent_and_later_events_are_dropped_quietly(log_path: Path) -> None:
    """A second close does nothing; an event after close is counted as dropped, not raised."""
    sink = file_sink(log_path)
    get_logger("sampler").info("before")
    sink.close()
    sink.close()
    get_logger("sampler").info("after")
    assert sink.closed
    assert sink.dropped == 1
    assert [r["event"] for r in records(log_path)] == ["before"]


def test_flush_writes_queued_lines_without_closing(log_path: Path) -> None:
    """flush() returns once queued lines are in the file; the sink stays open."""
    sink = file_sink(log_path)
    get_logger("sampler").info("queued")
    assert sink.flush(timeout_s=10)
    assert [r["event"] for r in records(log_path)] == ["queued"]
    assert not sink.closed
    sink.close()
    assert sink.flush()


async def test_aclose_closes_from_async_code(log_path: Path) -> None:
    """await sink.aclose() writes everything and closes without blocking the loop."""
    sink = file_sink(log_path)
    get_logger("sampler").info("async")
    await sink.aclose()
    assert sink.closed
    assert [r["event"] for r in records(log_path)] == ["async"]


def test_a_broken_console_never_raises_into_the_caller(log_path: Path) -> None:
    """A console that fails to write is counted; the caller and the file are unaffected."""
    sink = file_sink(log_path, console=True, console_stream=BrokenStream())
    get_logger("sampler").info("one")
    get_logger("sampler").info("two")
    sink.close()
    assert sink.write_errors >= 2
    assert [r["event"] for r in records(log_path)] == ["one", "two"]


def test_unencodable_values_fall_back_to_repr(log_path: Path) -> None:
    """Values (and keys) JSON cannot hold are written as repr; a broken repr does not raise."""
    stream = io.StringIO()
    sink = file_sink(log_path, console=True, console_stream=stream)
    cycle: list[object] = []
    cycle.append(cycle)
    get_logger("cache").info(
        "odd", path=Path("/tmp/x"), pair_keys={(1, 2): "a"}, broken=BadRepr(), cycle=cycle
    )
    sink.close()
    [record] = records(log_path)
    assert record["path"] == repr(Path("/tmp/x"))
    assert record["pair_keys"] == {"(1, 2)": "a"}
    assert record["broken"] == "<unrepresentable BadRepr>"
    assert "[...]" in record["cycle"]  # a self-containing list, as repr shows it
    assert "<unrepresentable BadRepr>" in stream.getvalue()


# -- reconfiguration -------------------------------------------------------------------------


def test_reconfigure_changes_level_and_file_and_closes_the_old_sink(tmp_path: Path) -> None:
    """A second configure_logging closes the first sink; existing loggers follow the new one."""
    first_path, second_path = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first = file_sink(first_path, level="info")
    log = get_logger("sampler")
    bound = log.bind(task_id="t1")
    log.debug("hidden")
    log.info("before reload")
    second = file_sink(second_path, level="debug")
    log.debug("shown")
    bound.info("bound before reload")
    second.close()
    assert first.closed
    assert [r["event"] for r in records(first_path)] == ["before reload"]
    assert [r["event"] for r in records(second_path)] == ["shown", "bound before reload"]


def test_a_failed_reconfigure_keeps_the_previous_configuration(tmp_path: Path) -> None:
    """When the new file cannot be opened, OSError is raised and the old sink keeps working."""
    good = tmp_path / "good.jsonl"
    (tmp_path / "blocker").write_text("a file, not a directory")
    sink = file_sink(good)
    with pytest.raises(OSError):
        file_sink(tmp_path / "blocker" / "runtime.jsonl")
    get_logger("sampler").info("still logging")
    sink.close()
    assert [r["event"] for r in records(good)] == ["still logging"]


def test_reset_logging_closes_the_sink_and_restores_structlog_defaults(log_path: Path) -> None:
    """reset_logging() closes the current sink and leaves structlog unconfigured."""
    sink = file_sink(log_path)
    assert structlog.is_configured()
    reset_logging()
    assert sink.closed
    assert not structlog.is_configured()
    reset_logging()  # with nothing configured it is a no-op
    assert not structlog.is_configured()
