"""Rate and concurrency limits: a token bucket with burst and strict spacing, and a counted
limit with a FIFO waiting line.

Both are pure: times come from the caller, nothing awaits, so the enforcer calls them on the
hot path of every plugin task and tests drive them with plain numbers.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

__all__ = ["ConcurrencyLimit", "TokenBucket"]

T = TypeVar("T")


class TokenBucket:
    """``rate_per_s`` tokens a second into a bucket that holds ``burst``; a call takes one.

    Kept as the time the bucket would be full again (the GCRA form of a token bucket): O(1),
    no drift from adding fractions of tokens. ``take`` reserves the next token even when the
    bucket is empty and returns how long the caller must wait for it, so waiting callers are
    spaced 1/rate apart in arrival order; ``delay_s`` only looks. ``strict_spacing`` makes the
    bucket hold a single token: calls go at least 1/rate apart, never in a burst.

    Raises ``ValueError`` for a rate that is not a finite number > 0, a burst below 1, or a
    burst above 1 with strict spacing.
    """

    __slots__ = ("_full_at", "_tolerance_s", "burst", "interval_s", "rate_per_s", "strict_spacing")

    def __init__(self, rate_per_s: float, burst: int = 1, *, strict_spacing: bool = False) -> None:
        self._full_at = -math.inf
        self.configure(rate_per_s, burst, strict_spacing=strict_spacing)

    def configure(
        self,
        rate_per_s: float,
        burst: int = 1,
        *,
        strict_spacing: bool = False,
        now: float | None = None,
    ) -> None:
        """Change the rate and size live. With ``now``, the tokens the bucket holds at ``now``
        (or owes, when calls wait) carry over, capped at the new burst. Raises as ``__init__``.
        """
        tokens = None if now is None else self.tokens(now)
        if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, int | float):
            raise ValueError(
                f"rate_per_s must be calls per second (a number > 0); got {rate_per_s!r}"
            )
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a finite number > 0; got {rate_per_s!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int >= 1; got {burst!r}")
        if strict_spacing and burst > 1:
            raise ValueError(f"burst must be 1 with strict_spacing (no bursts); got {burst}")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self.strict_spacing = strict_spacing
        self.interval_s = 1.0 / self.rate_per_s
        self._tolerance_s = (burst - 1) * self.interval_s
        if tokens is not None and now is not None:
            self._full_at = now + (burst - min(tokens, burst)) * self.interval_s

    def delay_s(self, now: float) -> float:
        """Seconds until a call made at ``now`` could take a token (0: at once)."""
        return max(0.0, self._full_at - self._tolerance_s - now)

    def try_take(self, now: float) -> float:
        """Take a token if the bucket has one at ``now`` (returns 0.0); else take nothing and
        return how long until it would have one."""
        full_at = self._full_at
        wait_s = full_at - self._tolerance_s - now
        if wait_s > 0:
            return wait_s
        self._full_at = (full_at if full_at > now else now) + self.interval_s
        return 0.0

    def take(self, now: float) -> float:
        """Take the next token for a call made at ``now``; returns how long it must wait."""
        start = max(self._full_at, now)
        self._full_at = start + self.interval_s
        return max(0.0, start - self._tolerance_s - now)

    @property
    def mark(self) -> float:
        """Names the latest reservation (read it right after ``take``, for ``give_back``)."""
        return self._full_at

    def give_back(self, mark: float) -> bool:
        """Return the token of a reservation that will not be used, if it is still the latest
        one: an earlier one cannot be returned without letting a later caller go too early.
        Returns whether it was returned."""
        if mark != self._full_at:
            return False
        self._full_at -= self.interval_s
        return True

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now``: up to ``burst``, negative while calls wait."""
        owed_s = max(0.0, self._full_at - now)
        return (self._tolerance_s + self.interval_s - owed_s) / self.interval_s

    def attempted_rate(self, now: float) -> float:
        """The rate a call at ``now`` would make: the tokens taken within the time the bucket
        takes to fill, this call's included, per second of that time (over ``rate_per_s``
        exactly when the call must wait)."""
        taken = self.burst - self.tokens(now) + 1
        return taken / (self.burst * self.interval_s)

    def __repr__(self) -> str:
        spacing = ", strict" if self.strict_spacing else ""
        return f"<TokenBucket {self.rate_per_s:g}/s burst={self.burst}{spacing}>"


class ConcurrencyLimit(Generic[T]):
    """At most ``limit`` holders at once; the others wait in FIFO order.

    ``None`` means no limit. The waiting line is unbounded here: the caller bounds it.
    Raises ``ValueError`` for a limit below 1.
    """

    __slots__ = ("_waiting", "active", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.configure(limit)
        self.active = 0
        self._waiting: deque[T] = deque()

    def configure(self, limit: int | None) -> None:
        """Change the limit live (holders above a lowered limit keep their place)."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(f"limit must be an int >= 1 or None; got {limit!r}")
        self.limit = limit

    @property
    def full(self) -> bool:
        """Whether a new holder would have to wait."""
        return self.limit is not None and self.active >= self.limit

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def try_acquire(self) -> bool:
        """Become a holder now if there is room and nobody waits ahead."""
        limit = self.limit
        if self._waiting or (limit is not None and self.active >= limit):
            return False
        self.active += 1
        return True

    def wait(self, item: T) -> None:
        """Join the waiting line; ``release`` hands the freed place to the first in it."""
        self._waiting.append(item)

    def discard(self, item: T) -> bool:
        """Leave the waiting line (cancelled); ``False`` if ``item`` was not in it."""
        try:
            self._waiting.remove(item)
        except ValueError:
            return False
        return True

    def release(self) -> list[T]:
        """A holder leaves; returns the waiters that become holders now, in order."""
        if self.active > 0:
            self.active -= 1
        return self.admit_waiting() if self._waiting else []

    def admit_waiting(self) -> list[T]:
        """Make holders of the first waiters while there is room (e.g. after a raised limit)."""
        admitted: list[T] = []
        while self._waiting and not self.full:
            admitted.append(self._waiting.popleft())
            self.active += 1
        return admitted
