"""The watchdog: a thread that notices a late heartbeat and looks at the loop thread meanwhile.

The event loop's heartbeat (``lag.LoopMonitor``) tells the watchdog when the next beat is due.
The watchdog sleeps until that moment plus ``threshold_s``; if no beat came by then, the loop
is blocked, so it captures what the loop thread is doing right now, while it is still stuck:
its stack and its scheduler state (running: computing; sleeping: waiting for I/O, a sleep or
a lock). The next beat, once the loop is back, takes the capture. A stack
caught in the loop's own code (its selector: the loop is late because the machine starves it
of CPU, not because a call blocks it) is not a capture; the watchdog looks again next check.

A ``ThreadProbe`` does the looking; tests give the watchdog a fake probe and a fake ``now`` and
call ``check`` by hand. If the loop stays blocked for ``stuck_after_s`` the watchdog logs
``"event loop still blocked"`` from its own thread: a deadlocked loop would never report.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from runtime.logging import get_logger

from .stacks import StackFrame, capture_stack, culprit, format_stack, in_loop_code, short_stack

__all__ = ["Capture", "Probe", "ThreadProbe", "Watchdog"]

_MIN_WAIT_S = 0.001  # the watchdog never spins


class Probe(Protocol):
    """What the watchdog reads of the loop thread, from its own thread."""

    def stack(self) -> list[StackFrame]: ...

    def state(self) -> str | None: ...


class ThreadProbe:
    """Reads a thread's stack and scheduler state from any other thread.

    Make it with ``ThreadProbe.current()`` on the thread to watch. ``state`` is the Linux state
    letter (``R`` running or runnable, ``S`` sleeping, ``D`` waiting on a disk), ``None``
    elsewhere or once the thread is gone.
    """

    def __init__(self, thread_id: int, native_id: int) -> None:
        self.thread_id = thread_id
        self._stat_path = f"/proc/self/task/{native_id}/stat"

    @classmethod
    def current(cls) -> ThreadProbe:
        return cls(threading.get_ident(), threading.get_native_id())

    def stack(self) -> list[StackFrame]:
        return capture_stack(self.thread_id)

    def state(self) -> str | None:
        try:
            with open(self._stat_path, "rb") as stat:
                line = stat.read()
        except OSError:  # not Linux, or the thread is gone
            return None
        # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last.
        end = line.rfind(b")")
        if end < 0:
            return None
        return line[end + 2 : end + 3].decode() or None


class Capture(NamedTuple):
    """What the watchdog saw while heartbeat ``seq`` was overdue: the loop thread's stack and
    state."""

    seq: int
    frames: list[StackFrame]
    state: str | None


class Watchdog:
    """Captures the loop thread (through ``probe``) when a heartbeat is more than
    ``threshold_s`` overdue on ``now``.

    ``start`` runs ``check`` in a daemon thread until ``stop`` (or until ``alive`` says the
    loop is gone). Raises ``ValueError`` for a ``threshold_s`` or ``stuck_after_s`` that is not
    > 0.
    """

    def __init__(
        self,
        probe: Probe,
        *,
        threshold_s: float,
        now: Callable[[], float] = time.monotonic,
        stuck_after_s: float = 5.0,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        if not stuck_after_s > 0:
            raise ValueError(f"stuck_after_s must be > 0, got {stuck_after_s!r}")
        self.probe = probe
        self.threshold_s = threshold_s
        self.stuck_after_s = stuck_after_s
        self.error: Exception | None = None
        self._now = now
        self._alive = alive
        self._lock = threading.Lock()
        self._seq, self._due_at = 0, math.inf  # nothing to watch before the first beat
        self._captured_seq = -1
        self._pending: Capture | None = None
        self._warned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = get_logger("profiler")

    @property
    def threshold_s(self) -> float:
        return self._threshold_s

    @threshold_s.setter
    def threshold_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"threshold_s must be > 0, got {value!r}")
        self._threshold_s = value

    # -- the loop's side ----------------------------------------------------------------------

    def beat(self, seq: int, due_at: float) -> Capture | None:
        """Heartbeat ``seq`` happened; the next is due at ``due_at``. Returns the capture
        taken while the previous heartbeat was overdue, if any (once)."""
        with self._lock:
            pending, self._pending = self._pending, None
            self._seq, self._due_at = seq, due_at
        return pending

    # -- the watchdog's side ------------------------------------------------------------------

    def check(self) -> float:
        """Look at the heartbeat once; capture the loop thread if it is overdue. Returns how
        long to wait before the next look, in seconds."""
        now = self._now()
        with self._lock:
            seq, due_at, captured = self._seq, self._due_at, self._captured_seq
        if due_at == math.inf:
            return self._threshold_s  # no heartbeat yet: look again soon
        overdue_s = now - due_at
        if overdue_s <= self._threshold_s:
            return max(_MIN_WAIT_S, due_at + self._threshold_s - now)
        if captured != seq:
            self._take(seq)
        elif not self._warned and overdue_s >= self.stuck_after_s:
            self._still_blocked(overdue_s)
        return self._threshold_s  # poll while blocked: the next heartbeat may come any time

    def _take(self, seq: int) -> None:
        probe = self.probe
        frames = probe.stack()
        if in_loop_code(frames):
            return  # late, but no call of anyone's is running: look again at the next check
        capture = Capture(seq, frames, probe.state())
        with self._lock:
            if self._seq != seq:
                return  # the loop came back while we looked: the stack is not the block's
            self._pending = capture
            self._captured_seq = seq
            self._warned = False

    def _still_blocked(self, overdue_s: float) -> None:
        self._warned = True
        with self._lock:
            pending = self._pending
        frames = pending.frames if pending is not None else []
        blame = culprit(frames)
        self._log.error(
            "event loop still blocked",
            blocked_ms=round(overdue_s * 1000, 3),
            function=blame.function,
            file=blame.file,
            line=blame.line,
            stack=format_stack(short_stack(frames)),
        )

    # -- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run ``check`` in a daemon thread (a stuck loop must not keep the process alive)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="profiler-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._alive() and not self._stop.wait(self.check()):
                pass
        except Exception as exc:  # handed to the loop's side, which stops the monitor
            self.error = exc
            self._log.exception("loop watchdog failed")

    def stop(self) -> None:
        """Ask the thread to end (it does at once); ``join`` waits for it."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
