"""The event-loop lag monitor: a heartbeat on the loop and a watchdog thread beside it.

The heartbeat is a timer on the loop that fires every ``heartbeat_s``; how late it fires is the
loop's lag, recorded in a histogram. The watchdog (``watchdog.Watchdog``) runs in its own
thread, so it still runs when the loop does not: when a heartbeat is more than ``threshold_s``
overdue it captures the loop thread while it is still stuck. When the loop comes back, the late
heartbeat turns that capture into a ``BlockingCall``: how long the heartbeat was late, the frame
to blame (file, line, function), the short stack, and whether the loop was computing (CPU) or
waiting (I/O, a sleep, a lock). It is logged as ``"event loop blocked"`` with ``blocked_ms``,
``function``, ``file``, ``line``, ``computing``, ``cpu_percent`` and ``stack`` (one
``file:line in function`` per line, innermost first: a string, as structlog's renderers expect)
and handed to ``on_block``.

A block longer than ``heartbeat_s + threshold_s`` is always caught; a shorter one longer than
``threshold_s`` is caught when it delays a heartbeat by more than ``threshold_s``. The
reported duration is the heartbeat's lateness: a lower bound, short by at most ``heartbeat_s``.

Both read ``clock``: real time by default, since a fake clock cannot be late; tests inject one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from runtime.clock import Clock, RealClock, TimerHandle
from runtime.logging import get_logger

from .histogram import LatencyHistogram
from .stacks import StackFrame, culprit, format_stack, short_stack
from .watchdog import Capture, Probe, ThreadProbe, Watchdog

__all__ = ["BlockingCall", "LoopMonitor"]

# How a block is told computing from waiting. The thread state at the capture says most, but
# a thread just woken from a sleep is runnable too: a runnable one must also have used some CPU
# (a computing loop starved by other processes may get little). Without a state, CPU decides.
RUNNING_CPU_PERCENT = 10.0
COMPUTING_CPU_PERCENT = 50.0


class BlockingCall(msgspec.Struct, frozen=True, kw_only=True):
    """The loop was blocked for at least ``blocked_ms``.

    ``function``, ``file`` and ``line`` name the frame to blame, ``stack`` the short stack
    (innermost first). ``computing``: the loop thread was running (CPU-bound work) rather than
    waiting (I/O, a sleep, a lock), ``None`` when unknown; ``cpu_percent`` its CPU use from the
    heartbeat before the block until the loop came back. ``at`` is wall-clock seconds when the
    loop came back.
    """

    at: float
    blocked_ms: float
    function: str
    file: str
    line: int
    stack: list[StackFrame]
    computing: bool | None = None
    cpu_percent: float | None = None


class LoopMonitor:
    """The heartbeat and the watchdog of the running event loop.

    ``on_block`` gets each ``BlockingCall``, ``on_tick`` each heartbeat's lag in seconds,
    ``on_error`` what a heartbeat (or the watchdog) raised; without ``on_error`` the error is
    logged. Either way the monitor stops. Blocking calls from one place are logged at most once
    per ``log_interval_s`` (the next line says how many were ``suppressed``). ``probe`` makes
    the watchdog's view of the loop thread (tests replace it). Raises ``ValueError`` for a
    ``heartbeat_s`` or ``threshold_s`` that is not > 0.
    """

    def __init__(
        self,
        *,
        heartbeat_s: float,
        threshold_s: float,
        clock: Clock | None = None,
        on_block: Callable[[BlockingCall], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        stack_depth: int = 12,
        stuck_after_s: float = 5.0,
        log_interval_s: float = 10.0,
        probe: Callable[[], Probe] = ThreadProbe.current,
    ) -> None:
        self._watchdog: Watchdog | None = None
        self.heartbeat_s = heartbeat_s
        self.threshold_s = threshold_s
        self.stuck_after_s = stuck_after_s
        self.stack_depth = stack_depth
        self.log_interval_s = log_interval_s
        self.clock: Clock = clock or RealClock()
        self.lag = LatencyHistogram()
        self.heartbeats = 0
        self.blocked = 0
        self.last_lag_s = 0.0
        self._on_block, self._on_tick, self._on_error = on_block, on_tick, on_error
        self._probe = probe
        self._timer: TimerHandle | None = None
        self._seq = 0
        self._due_at = 0.0
        self._beat_cpu_s = self._beat_real_s = 0.0  # the loop thread's CPU and real time at a beat
        self._blocked_event: anyio.Event | None = None
        self._logged: dict[tuple[str, str, int], tuple[float, int]] = {}
        self._log = get_logger("profiler")

    @property
    def heartbeat_s(self) -> float:
        return self._heartbeat_s

    @heartbeat_s.setter
    def heartbeat_s(self, value: float) -> None:
        """Takes effect from the next heartbeat."""
        if not value > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {value!r}")
        self._heartbeat_s = value

    @property
    def threshold_s(self) -> float:
        return self._threshold_s

    @threshold_s.setter
    def threshold_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"threshold_s must be > 0, got {value!r}")
        self._threshold_s = value
        if self._watchdog is not None:
            self._watchdog.threshold_s = value

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Start the watchdog thread and the heartbeat on the running loop (call it from the
        loop's thread). Raises ``RuntimeError`` when already running or outside a loop."""
        if self._timer is not None:
            raise RuntimeError("the loop monitor is already running; stop() it first")
        loop = asyncio.get_running_loop()
        self._blocked_event = anyio.Event()
        self._watchdog = Watchdog(
            self._probe(),
            threshold_s=self._threshold_s,
            now=self.clock.now,
            stuck_after_s=self.stuck_after_s,
            alive=lambda: not loop.is_closed(),
        )
        # The thread first: starting it may take a while on a busy machine, and the watchdog
        # must not mistake that wait for a blocked loop.
        self._watchdog.start()
        self._seq = 0
        self._due_at = self.clock.now() + self._heartbeat_s
        self._beat_cpu_s, self._beat_real_s = time.thread_time(), time.monotonic()
        self._watchdog.beat(0, self._due_at)
        self._timer = self.clock.call_later(self._heartbeat_s, self._tick)

    def stop(self) -> None:
        """Stop the heartbeat and ask the watchdog thread to end; ``aclose`` also waits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watchdog is not None:
            self._watchdog.stop()

    async def aclose(self) -> None:
        """``stop``, then wait (off the loop) for the watchdog thread to end."""
        self.stop()
        if self._watchdog is not None:
            await anyio.to_thread.run_sync(self._watchdog.join)

    async def wait_blocked(self, count: int = 1) -> None:
        """Wait until ``count`` blocking calls have been reported since the monitor was made.
        Raises ``RuntimeError`` if the monitor was never started."""
        while self.blocked < count:
            if self._blocked_event is None:
                raise RuntimeError("the loop monitor is not running; start() it first")
            await self._blocked_event.wait()

    # -- the heartbeat ------------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._beat()
        except Exception as exc:
            self.stop()
            if self._on_error is None:
                self._log.exception("loop monitor stopped: its heartbeat failed")
            else:
                self._on_error(exc)

    def _beat(self) -> None:
        assert self._watchdog is not None
        if self._watchdog.error is not None:
            raise self._watchdog.error
        now = self.clock.now()
        lag_s = max(0.0, now - self._due_at)
        self._seq += 1
        self._due_at = now + self._heartbeat_s
        capture = self._watchdog.beat(self._seq, self._due_at)
        self._timer = self.clock.call_later(self._heartbeat_s, self._tick)
        self.heartbeats += 1
        self.last_lag_s = lag_s
        self.lag.record(lag_s)
        cpu_s, real_s = time.thread_time(), time.monotonic()
        if capture is not None:
            spent_s = real_s - self._beat_real_s
            cpu_percent = 100.0 * (cpu_s - self._beat_cpu_s) / spent_s if spent_s > 0 else None
            self.report(capture, lag_s, cpu_percent=cpu_percent)
        self._beat_cpu_s, self._beat_real_s = cpu_s, real_s
        if self._on_tick is not None:
            self._on_tick(lag_s)

    def report(
        self, capture: Capture, lag_s: float, *, cpu_percent: float | None = None
    ) -> BlockingCall:
        """Turn a watchdog's capture into a ``BlockingCall``: log it, count it, hand it to
        ``on_block``. Runs on the loop thread when the loop comes back."""
        blame = culprit(capture.frames)
        if cpu_percent is not None:
            cpu_percent = min(100.0, max(0.0, cpu_percent))
        call = BlockingCall(
            at=self.clock.wall(),
            blocked_ms=lag_s * 1000.0,
            function=blame.function,
            file=blame.file,
            line=blame.line,
            stack=short_stack(capture.frames, depth=self.stack_depth),
            computing=_computing(capture.state, cpu_percent),
            cpu_percent=cpu_percent,
        )
        self.blocked += 1
        self._log_block(call)
        if self._on_block is not None:
            self._on_block(call)
        if self._blocked_event is not None:
            self._blocked_event.set()
            self._blocked_event = anyio.Event()
        return call

    def _log_block(self, call: BlockingCall) -> None:
        site = (call.function, call.file, call.line)
        now = self.clock.now()
        last_at, suppressed = self._logged.get(site, (None, 0))
        if last_at is not None and now - last_at < self.log_interval_s:
            self._logged[site] = (last_at, suppressed + 1)
            return
        if len(self._logged) >= 1024:  # many distinct places: forget the old ones
            self._logged.clear()
        self._logged[site] = (now, 0)
        self._log.warning("event loop blocked", **_log_fields(call), suppressed=suppressed)


def _computing(state: str | None, cpu_percent: float | None) -> bool | None:
    if state in ("S", "D"):
        return False
    if state == "R":
        return cpu_percent is None or cpu_percent >= RUNNING_CPU_PERCENT
    return None if cpu_percent is None else cpu_percent >= COMPUTING_CPU_PERCENT


def _log_fields(call: BlockingCall) -> dict[str, Any]:
    return {
        "blocked_ms": round(call.blocked_ms, 3),
        "function": call.function,
        "file": call.file,
        "line": call.line,
        "computing": call.computing,
        "cpu_percent": None if call.cpu_percent is None else round(call.cpu_percent, 1),
        "stack": format_stack(call.stack),
    }
