"""On-demand profiles: cProfile on the loop's thread for a window, the top functions out.

``await profile_window(seconds, clock=...)`` enables cProfile in the calling thread (the event
loop's: everything that runs on the loop in the window is seen), waits ``seconds`` on the
clock, disables it and summarises off the loop: the top functions by cumulative time (where
the time goes, callees included) and by own time (where it is spent). The loop's machinery
(asyncio, selectors, ...) is left out of both lists; the time the loop sat waiting for I/O in
its selector is reported as ``idle_ms``.
"""

from __future__ import annotations

import cProfile
import math
import pstats
import sys
import threading

import anyio.to_thread
import msgspec

from runtime.clock import Clock

from .stacks import is_machinery

__all__ = ["FunctionStat", "ProfileReport", "profile_window"]

_active = threading.Lock()  # one window at a time: cProfile cannot nest in a thread
_POLL_MARKERS = ("of 'select.", "select.select")  # the selector waiting for I/O: idle time
_MACHINERY_BUILTINS = ("of '_contextvars.Context' objects",)  # how the loop runs each callback


class FunctionStat(msgspec.Struct, frozen=True, kw_only=True):
    """One function in a profile: calls, own time and cumulative time (callees included)."""

    function: str
    file: str
    line: int
    calls: int
    own_ms: float
    cumulative_ms: float


class ProfileReport(msgspec.Struct, frozen=True, kw_only=True):
    """A profile window: the top functions by cumulative and by own time."""

    window_s: float
    started_at: float
    total_calls: int
    idle_ms: float
    by_cumulative: list[FunctionStat]
    by_own: list[FunctionStat]

    def render(self) -> str:
        """The report as text: two tables, milliseconds."""
        lines = [
            f"profile of {self.window_s:g} s: {self.total_calls} calls, "
            f"loop idle {self.idle_ms:.1f} ms",
        ]
        for title, stats in (("by cumulative time", self.by_cumulative),
                             ("by own time", self.by_own)):  # fmt: skip
            lines += ["", title, f"{'cumulative ms':>14} {'own ms':>10} {'calls':>8}  function"]
            lines += [
                f"{s.cumulative_ms:14.3f} {s.own_ms:10.3f} {s.calls:8d}  "
                f"{s.function} ({s.file}:{s.line})"
                for s in stats
            ]
        return "\n".join(lines)


async def profile_window(seconds: float, *, clock: Clock, top: int = 20) -> ProfileReport:
    """Profile everything that runs on this thread's event loop for ``seconds`` (on ``clock``).

    Returns the ``top`` functions by cumulative and by own time. Raises ``ValueError`` for
    ``seconds`` that is not a finite number > 0 or ``top`` < 1, ``RuntimeError`` when a window
    is already open or another profiler (a debugger, coverage) holds the thread.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"seconds must be a number > 0, got {seconds!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top!r}")
    if not _active.acquire(blocking=False):
        raise RuntimeError("a profile window is already open; wait for it to end")
    try:
        if sys.getprofile() is not None:
            raise RuntimeError("another profiler is active in this thread; stop it first")
        started_at = clock.wall()
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            await clock.sleep(seconds)
        finally:
            profiler.disable()
    finally:
        _active.release()
    # Sorting thousands of entries is work the loop should not wait on.
    return await anyio.to_thread.run_sync(_summarize, profiler, float(seconds), started_at, top)


def _machinery_builtin(file: str, name: str) -> bool:
    return file == "~" and any(marker in name for marker in _MACHINERY_BUILTINS)


def _summarize(
    profiler: cProfile.Profile, window_s: float, started_at: float, top: int
) -> ProfileReport:
    raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # undocumented, stable
    rows: list[FunctionStat] = []
    idle_s = 0.0
    total_calls = 0
    for (file, line, name), (_prim, calls, own_s, cumulative_s, _callers) in raw.items():
        total_calls += calls
        if file == "~" and any(marker in name for marker in _POLL_MARKERS):
            idle_s += own_s
            continue
        if is_machinery(file) or name == "profile_window" or _machinery_builtin(file, name):
            continue
        own_ms, cumulative_ms = own_s * 1000.0, cumulative_s * 1000.0
        rows.append(
            FunctionStat(function=name, file=file, line=line, calls=calls, own_ms=own_ms,
                         cumulative_ms=cumulative_ms)
        )  # fmt: skip
    return ProfileReport(
        window_s=window_s,
        started_at=started_at,
        total_calls=total_calls,
        idle_ms=idle_s * 1000.0,
        by_cumulative=sorted(rows, key=lambda r: -r.cumulative_ms)[:top],
        by_own=sorted(rows, key=lambda r: -r.own_ms)[:top],
    )
