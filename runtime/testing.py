"""Helpers for testing code that runs under jarvis-runtime (like ``structlog.testing``).

- ``FakeClock``: time that moves only when the test calls ``await clock.advance(s)``.
- ``settle()``: let every other task run until all of them wait on something.
- ``capture_logs()``: collect logged events as dicts instead of writing them anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog.testing
from structlog.contextvars import merge_contextvars
from structlog.processors import add_log_level
from structlog.typing import EventDict

from runtime.clock import FakeClock, settle
from runtime.logging import add_default_actor, redact_secrets

__all__ = ["FakeClock", "capture_logs", "settle"]


@contextmanager
def capture_logs() -> Iterator[list[EventDict]]:
    """Collect every event logged inside the block, in order, as a dict.

    Each dict holds what the JSON line would, minus the timestamp: ``event``, ``level``,
    ``actor`` (``"runtime"`` unless bound), the bound and context-variable context, with
    secrets redacted (and structlog's own ``log_level``). Nothing is written to the file or
    console meanwhile. Events below the configured level are not logged, so not captured:
    call ``runtime.logging.reset_logging()`` first to capture every level.
    """
    processors = [merge_contextvars, add_log_level, add_default_actor, redact_secrets]
    with structlog.testing.capture_logs(processors=processors) as entries:
        yield entries
