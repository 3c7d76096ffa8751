"""A circuit breaker: stop calling what keeps failing, and try again after a while.

States: ``closed`` (calls go through) → ``open`` after ``failure_threshold`` consecutive failures
(calls are refused) → ``half_open`` once ``reset_timeout_s`` has passed (calls go through on
trial) → ``closed`` after ``success_threshold`` successes; a failure in ``half_open`` opens the
circuit again and restarts the timeout.

The core is synchronous and pure: ``allow()``, ``record_success()``, ``record_failure()`` read
only the injected clock, so a caller with its own control flow (a sender, a sink) uses the breaker
without wrapping a coroutine. Time is checked lazily: ``open`` becomes ``half_open`` on the first
look after the timeout, no timer task runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, TypeVarTuple, Unpack

import msgspec

from .clock import Clock
from .exceptions import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker", "CircuitBreakerStatistics"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
BreakerState = Literal["closed", "open", "half_open"]
OnStateChange = Callable[[str, str, str], None]
"""Called with (breaker name, old state, new state) on every transition."""


class CircuitBreakerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one breaker."""

    name: str
    state: str
    consecutive_failures: int
    half_open_successes: int
    successes: int
    failures: int
    rejected: int
    times_opened: int
    retry_after_s: float


class CircuitBreaker:
    """Guards calls to something that may fail repeatedly (a sink, a remote tier, a plugin).

    Raises ``ValueError`` for a threshold below 1 or a negative ``reset_timeout_s``.
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        success_threshold: int = 2,
        on_state_change: OnStateChange | None = None,
    ) -> None:
        for field, value in (
            ("failure_threshold", failure_threshold),
            ("success_threshold", success_threshold),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an int >= 1, got {value!r}")
        if not reset_timeout_s >= 0:
            raise ValueError(f"reset_timeout_s must be >= 0, got {reset_timeout_s!r}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.success_threshold = success_threshold
        self._clock = clock
        self._on_state_change = on_state_change
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._successes = 0
        self._failures = 0
        self._rejected = 0
        self._times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an ``open`` breaker past its timeout becomes ``half_open`` here."""
        if self._state == "open" and self._clock.now() - self._opened_at >= self.reset_timeout_s:
            self._transition("half_open")
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now (``False`` only while open). Counts refusals."""
        if self.state == "open":
            self._rejected += 1
            return False
        return True

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through; ``0.0`` unless open."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock.now())

    def record_success(self) -> None:
        """Count a successful call: resets the failure streak, and may close a half-open breaker.

        A success reported while open (a call that started before the breaker opened) is
        counted but changes nothing.
        """
        self._successes += 1
        state = self.state
        if state == "closed":
            self._consecutive_failures = 0
        elif state == "half_open":
            self._half_open_successes += 1
            if self._half_open_successes >= self.success_threshold:
                self._transition("closed")

    def record_failure(self) -> None:
        """Count a failed call: may open a closed breaker, and always reopens a half-open one.

        A failure reported while open (a call that started before the breaker opened) is
        counted but does not restart the timeout.
        """
        self._failures += 1
        state = self.state
        if state == "closed":
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.failure_threshold:
                self._transition("open")
        elif state == "half_open":
            self._transition("open")

    async def call(self, fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        """Await ``fn(*args)`` through the breaker and record how it went.

        Raises ``CircuitOpen`` (with ``retry_after_s``) without calling ``fn`` while open;
        re-raises whatever ``fn`` raises after counting it as a failure. Cancellation (and
        other ``BaseException``s) is not counted: it says nothing about the guarded thing.
        """
        if not self.allow():
            raise CircuitOpen(self.name, self.retry_after_s())
        try:
            result = await fn(*args)
        except Exception:  # cancellation is a BaseException: it passes through uncounted
            self.record_failure()
            raise
        self.record_success()
        return result

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        if new == "open":
            self._opened_at = self._clock.now()
            self._times_opened += 1
        elif new == "half_open":
            self._half_open_successes = 0
        else:
            self._consecutive_failures = 0
        if self._on_state_change is not None:
            self._on_state_change(self.name, old, new)

    def statistics(self) -> CircuitBreakerStatistics:
        return CircuitBreakerStatistics(
            name=self.name,
            state=self.state,
            consecutive_failures=self._consecutive_failures,
            half_open_successes=self._half_open_successes,
            successes=self._successes,
            failures=self._failures,
            rejected=self._rejected,
            times_opened=self._times_opened,
            retry_after_s=self.retry_after_s(),
        )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state}>"
