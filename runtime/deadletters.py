"""Dead letters: messages that could not be delivered, counted, kept in a bounded ring, logged.

A message that ran out of retries (or found its channel closed) ends here rather than vanishing.
The ring keeps the newest ``capacity`` entries; ``total`` counts everything ever added. Logging is
rate-limited, since a flood of undeliverable messages must not become a flood of log lines: at
most one line per ``log_interval_s``, saying how many were added since the previous line. Only a
message's type name is logged, never the message itself (it may hold secrets).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec
import structlog

from .clock import Clock

__all__ = ["DeadLetter", "DeadLetterStatistics", "DeadLetters"]


class DeadLetter(msgspec.Struct, frozen=True):
    """One undeliverable message: why it failed, who sent it, when (wall-clock seconds)."""

    message: Any
    reason: str
    source: str | None
    at: float


class DeadLetterStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the dead letters: ``total`` ever added, ``kept`` in the ring."""

    total: int
    kept: int
    capacity: int
    by_reason: dict[str, int]
    suppressed_logs: int


class DeadLetters:
    """A bounded ring of dead letters with counts and rate-limited logging.

    ``clock`` stamps entries (``wall()``) and paces the log (``now()``). ``logger`` is a structlog
    logger (default ``structlog.get_logger(actor="dead_letters")``), bound with
    ``actor="dead_letters"``. Raises ``ValueError`` for a capacity below 1 or a negative interval.
    """

    def __init__(
        self,
        capacity: int = 1000,
        *,
        clock: Clock,
        log_interval_s: float = 10.0,
        logger: Any = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if not log_interval_s >= 0:
            raise ValueError(f"log_interval_s must be >= 0, got {log_interval_s!r}")
        self.capacity = capacity
        self.log_interval_s = log_interval_s
        self._clock = clock
        # A lazy logger (not ``.bind()``): it follows logging configured after construction.
        self._log = (
            logger.bind(actor="dead_letters")
            if logger is not None
            else structlog.get_logger(actor="dead_letters")
        )
        self._ring: deque[DeadLetter] = deque(maxlen=capacity)
        self._total = 0
        self._by_reason: dict[str, int] = {}
        # Rate limiting: when the last line went out, and what was added since.
        self._last_log_at: float | None = None
        self._unlogged = 0
        self._suppressed_logs = 0

    def add(self, message: Any, *, reason: str, source: str | None = None) -> None:
        """Record ``message`` as undeliverable for ``reason``; log it unless a line went out
        less than ``log_interval_s`` ago."""
        entry = DeadLetter(message, reason, source, self._clock.wall())
        self._ring.append(entry)
        self._total += 1
        self._by_reason[reason] = self._by_reason.get(reason, 0) + 1
        self._unlogged += 1
        now = self._clock.now()
        if self._last_log_at is None or now - self._last_log_at >= self.log_interval_s:
            self._emit(entry, now)
        else:
            self._suppressed_logs += 1

    def flush_log(self) -> None:
        """Log the dead letters added since the last line, if any, whatever the interval.

        For shutdown: without it, letters added just after a line would never be reported.
        """
        if self._unlogged:
            self._emit(self._ring[-1], self._clock.now())

    def _emit(self, latest: DeadLetter, now: float) -> None:
        self._log.warning(
            "dead_letters",
            count=self._unlogged,
            total=self._total,
            reason=latest.reason,
            source=latest.source,
            message_type=type(latest.message).__name__,
        )
        self._last_log_at = now
        self._unlogged = 0

    @property
    def total(self) -> int:
        """How many dead letters were ever added, including those the ring no longer holds."""
        return self._total

    @property
    def by_reason(self) -> dict[str, int]:
        """How many dead letters were added per reason (a copy)."""
        return dict(self._by_reason)

    def entries(self) -> list[DeadLetter]:
        """The dead letters the ring still holds, oldest first."""
        return list(self._ring)

    def __len__(self) -> int:
        return len(self._ring)

    def statistics(self) -> DeadLetterStatistics:
        return DeadLetterStatistics(
            total=self._total,
            kept=len(self._ring),
            capacity=self.capacity,
            by_reason=dict(self._by_reason),
            suppressed_logs=self._suppressed_logs,
        )

    def __repr__(self) -> str:
        return f"<DeadLetters {len(self._ring)}/{self.capacity} total={self._total}>"
