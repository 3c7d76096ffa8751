"""Structured logs: one JSON object per line in a file, a readable console, secrets redacted.

``configure_logging()`` sets structlog up for the process (and again on a config reload);
``get_logger(actor)`` gives each actor its logger. Every event becomes a JSON line with
``timestamp`` (UTC, milliseconds, trailing ``Z``), ``level``, ``event``, ``actor`` and whatever
context is bound (``task_id``, ``task_class``, ``plugin``, ...), and a line on the console.

Events are rendered where they are logged, but written by one background thread: the event
loop never waits on a disk or a slow terminal. ``LogSink.close()`` writes everything queued
before it, so no line logged before a close is lost.

Loggers returned by ``get_logger`` follow a reconfiguration (a new level, a new file); a logger
made with ``.bind()`` keeps the level it was made under (structlog's fast filtering bakes the
level into the class) but always writes to the current sink.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import logging as _stdlib_logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO, cast

import anyio.to_thread
import msgspec
import structlog
from structlog.contextvars import merge_contextvars
from structlog.dev import ConsoleRenderer, plain_traceback
from structlog.processors import StackInfoRenderer, add_log_level, format_exc_info
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from runtime.clock import Clock

__all__ = [
    "DEFAULT_ACTOR",
    "LEVELS",
    "REDACTED",
    "LogSink",
    "add_default_actor",
    "configure_logging",
    "get_logger",
    "is_secret_key",
    "redact_secrets",
    "reset_logging",
]

LEVELS = {
    "debug": _stdlib_logging.DEBUG,
    "info": _stdlib_logging.INFO,
    "warning": _stdlib_logging.WARNING,
    "error": _stdlib_logging.ERROR,
    "critical": _stdlib_logging.CRITICAL,
}
DEFAULT_ACTOR = "runtime"
REDACTED = "***"

_current_sink: LogSink | None = None


# -- processors ------------------------------------------------------------------------------


def add_default_actor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Give every event an ``actor``: ``"runtime"`` unless one is bound."""
    event_dict.setdefault("actor", DEFAULT_ACTOR)
    return event_dict


_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "token", "secret", "authorization", "apikey"}
)
_KEY_QUALIFIERS = frozenset({"api", "access", "private", "secret"})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether ``key`` names a secret (``password``, ``access_token``, ``apiKey``, ...).

    Matching is by whole word, so ``max_tokens`` (a count, not a credential) is not a secret.
    """
    words = _NON_ALNUM.split(_CAMEL_BOUNDARY.sub("_", key).lower())
    if _SECRET_WORDS.intersection(words):
        return True
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in itertools.pairwise(words))


def _is_secret(key: object) -> bool:
    return isinstance(key, str) and is_secret_key(key)


def _redact_nested(value: Any, depth: int) -> Any:
    # Containers are copied, never edited: they may belong to the caller.
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if _is_secret(k) else _redact_nested(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_nested(item, depth + 1) for item in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every secret-looking key with ``"***"``, also inside dicts."""
    for key, value in event_dict.items():
        if _is_secret(key):
            event_dict[key] = REDACTED
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _redact_nested(value, 1)
    return event_dict


def _utc_timestamp(wall_s: float) -> str:
    seconds, millis = divmod(round(wall_s * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _timestamper(wall: Callable[[], float]) -> Processor:
    def add_timestamp(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = _utc_timestamp(wall())
        return event_dict

    return add_timestamp


def _emit(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
    # Looked up per event, so loggers bound under an older configuration write to the new sink.
    sink = _current_sink
    if sink is not None:
        sink.emit(event_dict)
    return ""


# -- JSON encoding ---------------------------------------------------------------------------


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(obj).__qualname__}>"


_encoder = msgspec.json.Encoder(enc_hook=_safe_repr)


def _encodable(value: object) -> bool:
    try:
        _encoder.encode(value)
    except Exception:
        return False
    return True


def _encode_line(record: dict[str, Any]) -> bytes:
    try:
        return _encoder.encode(record) + b"\n"
    except Exception:  # non-str keys, huge ints, cycles...: degrade field by field, never raise
        safe = {str(k): v if _encodable(v) else _safe_repr(v) for k, v in record.items()}
        return _encoder.encode(safe) + b"\n"


def _json_record(event_dict: EventDict) -> dict[str, Any]:
    head = {
        "timestamp": event_dict.get("timestamp"),
        "level": event_dict.get("level"),
        "event": event_dict.get("event"),
        "actor": event_dict.get("actor", DEFAULT_ACTOR),
    }
    return head | {k: v for k, v in event_dict.items() if k not in head}


# -- the sink and its writer thread ----------------------------------------------------------


_STOP = object()  # the stop marker; other queue items are flush Events or (line, text) pairs


class _Writer:
    """Runs in the writer thread: appends lines to the file, rotates it, writes the console."""

    def __init__(
        self, path: Path | None, console: TextIO | None, max_bytes: int, backups: int
    ) -> None:
        self._path = path
        self._console = console
        self._max_bytes = max_bytes
        self._backups = backups
        self._file: IO[bytes] | None = None
        self._size = 0
        self.errors = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "ab")  # noqa: SIM115  # lives as long as the sink
            self._size = os.fstat(self._file.fileno()).st_size

    def run(self, items: queue.SimpleQueue[object]) -> None:
        while True:
            item = items.get()
            if item is _STOP:
                self._guarded(self._finish)
                return
            if isinstance(item, threading.Event):
                self._guarded(self._flush)
                item.set()
            elif isinstance(item, tuple):
                line, text = item
                if line is not None:
                    self._guarded(self._write_line, line)
                if text is not None:
                    self._guarded(self._write_text, text)
            if items.empty():  # batch: flush once per burst, not once per line
                self._guarded(self._flush)

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        # The writer must outlive a full disk or a closed terminal: count, report once, go on.
        try:
            step(*args)
        except Exception as exc:
            self.errors += 1
            if self.errors == 1 and sys.__stderr__ is not None:
                with contextlib.suppress(Exception):
                    print(
                        f"jarvis-runtime: cannot write logs ({exc!r}); continuing",
                        file=sys.__stderr__,
                        flush=True,
                    )

    def _write_line(self, line: bytes) -> None:
        if self._file is not None:
            if self._size > 0 and self._size + len(line) > self._max_bytes:
                self._guarded(self._rotate)  # a failed rotation must not cost this line
            self._file.write(line)
            self._size += len(line)

    def _write_text(self, text: str) -> None:
        if self._console is not None:
            self._console.write(text + "\n")

    def _rotate(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        path = self._path
        try:
            if self._backups > 0:
                for index in range(self._backups - 1, 0, -1):
                    older = path.with_name(f"{path.name}.{index}")
                    if older.exists():
                        os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
                os.replace(path, path.with_name(f"{path.name}.1"))
        finally:
            # With no backups to keep, the file starts over. After a failed rename it goes on
            # growing, and the next attempt comes only after another max_bytes.
            self._file = open(path, "wb" if self._backups == 0 else "ab")  # noqa: SIM115
            self._size = 0

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._console is not None:
            self._console.flush()

    def _finish(self) -> None:
        try:
            self._flush()
        finally:
            if self._file is not None:
                self._file.close()


class LogSink:
    """Where events go: a JSON-lines file and/or a console stream, written by one thread.

    Made by ``configure_logging``. ``close()`` (or ``await aclose()``) writes everything
    logged before it and stops the thread; events logged after a close are counted in
    ``dropped``, never raised. The sink also closes itself at interpreter exit.
    """

    def __init__(
        self, *, path: Path | None, console: TextIO | None, max_bytes: int, backups: int
    ) -> None:
        self.path = path
        self.dropped = 0
        self._renderer = (
            ConsoleRenderer(colors=_is_tty(console), exception_formatter=plain_traceback)
            if console is not None
            else None
        )
        self._writer = _Writer(path, console, max_bytes, backups)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._writer.run, args=(self._queue,), name="jarvis-log-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def write_errors(self) -> int:
        """How many writes (file or console) failed; the first one is reported on stderr."""
        return self._writer.errors

    def emit(self, event_dict: EventDict) -> None:
        """Render one event (on the caller's thread) and queue it for the writer."""
        format_exc_info(None, "", event_dict)  # now, while the exception is still current
        line = _encode_line(_json_record(event_dict)) if self.path is not None else None
        text = self._render_console(event_dict) if self._renderer is not None else None
        with self._lock:  # so nothing slips in behind the stop marker
            if self._closed:
                self.dropped += 1
                return
            self._queue.put((line, text))

    def _render_console(self, event_dict: EventDict) -> str:
        assert self._renderer is not None
        try:
            return self._renderer(None, "", dict(event_dict))  # it pops keys: give it a copy
        except Exception:  # a value whose repr raises: show reprs we can make
            safe = {k: v if isinstance(v, str) else _safe_repr(v) for k, v in event_dict.items()}
            return self._renderer(None, "", safe)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every event queued so far is written; ``False`` if ``timeout_s`` ran out.

        Blocks the calling thread: from async code, run it in a worker thread.
        """
        written = threading.Event()
        with self._lock:
            if self._closed:
                return not self._thread.is_alive()
            self._queue.put(written)
        return written.wait(timeout_s)

    def close(self) -> None:
        """Write everything queued, close the file and stop the thread. Idempotent.

        Blocks the calling thread: from async code use ``aclose()``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        atexit.unregister(self.close)

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.close)


def _is_tty(stream: TextIO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


# -- configuration ---------------------------------------------------------------------------


def _check_settings(level: str, max_bytes: int, backups: int) -> int:
    min_level = LEVELS.get(level.lower()) if isinstance(level, str) else None
    if min_level is None:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0; got {max_bytes!r}")
    if backups < 0:
        raise ValueError(f"backups must be >= 0; got {backups!r}")
    return min_level


def configure_logging(
    *,
    level: str = "info",
    file: str | os.PathLike[str] | None = None,
    console: bool = True,
    max_bytes: int = 10_000_000,
    backups: int = 5,
    console_stream: TextIO | None = None,
    clock: Clock | None = None,
) -> LogSink:
    """Send every event at ``level`` or above to ``file`` (JSON lines) and the console.

    ``file``'s parent directories are created; the file rotates past ``max_bytes`` keeping
    ``backups`` old files (``runtime.jsonl.1`` is the newest). The console is
    ``console_stream`` (stderr by default), in color only when it is a terminal. Timestamps
    read ``clock.wall()`` when a clock is given. Calling it again replaces the previous
    configuration and closes its sink.

    Opens the file here, so a bad path fails now: raises ``OSError`` then, and ``ValueError``
    for a bad ``level``, ``max_bytes`` or ``backups``; either way the previous configuration
    stays in force. Blocks briefly (open, and joining the old writer): from async code run it
    in a worker thread.
    """
    min_level = _check_settings(level, max_bytes, backups)
    stream = (console_stream or sys.stderr) if console else None
    path = Path(file) if file is not None else None
    sink = LogSink(path=path, console=stream, max_bytes=max_bytes, backups=backups)
    _install_sink(sink)
    structlog.configure(
        processors=[
            merge_contextvars,
            add_log_level,
            add_default_actor,
            StackInfoRenderer(),
            redact_secrets,
            _timestamper(clock.wall if clock is not None else time.time),
            _emit,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=structlog.ReturnLoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=False,  # so loggers from get_logger() follow a reload
    )
    return sink


def _install_sink(sink: LogSink | None) -> None:
    global _current_sink
    previous, _current_sink = _current_sink, sink
    if previous is not None:
        previous.close()


def get_logger(actor: str, **context: Any) -> FilteringBoundLogger:
    """A logger whose events carry ``actor=actor`` and ``context``.

    Raises ``ValueError`` when ``actor`` is empty.
    """
    if not actor:
        raise ValueError(f"actor must be a non-empty name such as 'sampler'; got {actor!r}")
    return cast(FilteringBoundLogger, structlog.get_logger(actor=actor, **context))


def reset_logging() -> None:
    """Close the current sink and put structlog back to its defaults (tests, Runtime exit)."""
    _install_sink(None)
    structlog.reset_defaults()
