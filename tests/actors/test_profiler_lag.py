"""The loop-lag monitor: the heartbeat's lag, the watchdog's captures, and real blocking calls
caught with the right function and line on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import selectors
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from actors.profiler.lag import BlockingCall, LoopMonitor
from actors.profiler.stacks import StackFrame
from actors.profiler.watchdog import Capture, ThreadProbe, Watchdog
from runtime.clock import FakeClock
from runtime.testing import capture_logs

HERE = __file__


def block_the_loop() -> None:
    """Blocks the event loop for 50 ms (the watchdog must name the next line)."""
    time.sleep(0.05)


SLEEP_LINE = block_the_loop.__code__.co_firstlineno + 2


def compute_on_the_loop() -> None:
    """Keeps the event loop's thread busy computing for 200 ms (long enough for the watchdog
    to get the GIL and a CPU even on a machine busy with other work)."""
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass


class LateClock(FakeClock):
    """A fake clock whose ``now`` runs ``late_s`` ahead of its timers: heartbeats look late."""

    late_s = 0.0

    def now(self) -> float:
        return super().now() + self.late_s


class Stopwatch:
    """A settable ``now`` for driving the watchdog by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


FRAMES = [StackFrame("slow_parse", "/app/parse.py", 42), StackFrame("handle", "/app/main.py", 7)]


class FakeProbe:
    """A loop thread seen through a keyhole: fixed frames, CPU clock and state; counts looks."""

    def __init__(self, stack: Callable[[], list[StackFrame]] | None = None) -> None:
        self.looks = 0
        self._stack = stack or (lambda: list(FRAMES))

    def stack(self) -> list[StackFrame]:
        self.looks += 1
        return self._stack()

    def state(self) -> str | None:
        return "S"


def watchdog(now: Stopwatch, probe: FakeProbe | None = None) -> Watchdog:
    return Watchdog(probe or FakeProbe(), threshold_s=0.05, now=now, stuck_after_s=1.0)


# -- the watchdog, driven by hand ------------------------------------------------------------


def test_an_on_time_heartbeat_is_not_captured() -> None:
    """While the heartbeat is within the threshold of its due time nothing is captured, and
    the watchdog sleeps until the moment it would be overdue."""
    now = Stopwatch()
    probe = FakeProbe()
    dog = watchdog(now, probe)
    assert dog.check() == 0.05  # no heartbeat yet: nothing to watch, look again soon
    dog.beat(1, due_at=0.1)
    now.t = 0.12
    assert dog.check() == pytest.approx(0.1 + 0.05 - 0.12)
    assert probe.looks == 0 and dog.beat(2, due_at=0.2) is None


def test_an_overdue_heartbeat_captures_the_loop_threads_stack_once() -> None:
    """Past the threshold the loop thread is captured (once per late heartbeat: its stack and
    state) and handed over by the next heartbeat, once."""
    now = Stopwatch()
    probe = FakeProbe()
    dog = watchdog(now, probe)
    dog.beat(1, due_at=0.1)
    now.t = 0.16
    assert dog.check() == 0.05  # polls while blocked
    now.t = 0.2
    dog.check()
    assert probe.looks == 1
    capture = dog.beat(2, due_at=0.3)
    assert isinstance(capture, Capture)
    assert capture == Capture(1, FRAMES, "S")
    assert dog.beat(3, due_at=0.4) is None


def test_a_capture_taken_as_the_loop_comes_back_is_discarded() -> None:
    """If the heartbeat ticks while the stack is being read, the stack is not the block's:
    it is dropped."""
    now = Stopwatch()
    dog: Watchdog

    def capture_while_the_loop_ticks() -> list[StackFrame]:
        assert dog.beat(2, due_at=0.3) is None
        return list(FRAMES)

    dog = watchdog(now, FakeProbe(capture_while_the_loop_ticks))
    dog.beat(1, due_at=0.1)
    now.t = 0.2
    dog.check()
    assert dog.beat(3, due_at=0.4) is None


def test_a_loop_blocked_past_stuck_after_is_logged_from_the_watchdog() -> None:
    """A loop still blocked after stuck_after_s is logged once, from the watchdog's thread,
    with the captured function and line: a deadlocked loop would never report itself."""
    now = Stopwatch()
    dog = watchdog(now)
    dog.beat(1, due_at=0.1)
    with capture_logs() as logs:
        now.t = 0.2
        dog.check()
        now.t = 1.2
        dog.check()
        now.t = 1.5
        dog.check()
    stuck = [e for e in logs if e["event"] == "event loop still blocked"]
    assert len(stuck) == 1
    assert (stuck[0]["function"], stuck[0]["file"], stuck[0]["line"]) == (
        "slow_parse",
        "/app/parse.py",
        42,
    )
    assert stuck[0]["blocked_ms"] == pytest.approx(1100.0) and stuck[0]["level"] == "error"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold_s": 0.0}, "threshold_s must be > 0, got 0.0"),
        ({"threshold_s": -1.0}, "threshold_s must be > 0, got -1.0"),
        ({"threshold_s": 0.05, "stuck_after_s": 0.0}, "stuck_after_s must be > 0, got 0.0"),
    ],
)
def test_watchdog_settings_must_be_positive(kwargs: dict[str, Any], message: str) -> None:
    """A threshold or stuck_after_s that is not > 0 raises ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        Watchdog(FakeProbe(), **kwargs)


def test_a_failing_watchdog_thread_keeps_its_error_and_ends() -> None:
    """An exception in the watchdog thread is logged and kept in ``error``; the thread ends."""
    now = Stopwatch()

    def broken() -> list[StackFrame]:
        raise OSError("cannot read frames")

    dog = watchdog(now, FakeProbe(broken))
    dog.beat(1, due_at=-1.0)  # overdue at once
    with capture_logs() as logs:
        dog.start()
        dog.join(5.0)
    assert not dog.running
    assert isinstance(dog.error, OSError)
    assert [e["event"] for e in logs] == ["loop watchdog failed"]


def test_the_watchdog_thread_stops_on_request() -> None:
    """stop() ends the watchdog's thread at once, even in the middle of a long wait."""
    now = Stopwatch()
    dog = watchdog(now)
    dog.beat(1, due_at=3600.0)  # the next look would be an hour away
    dog.start()
    assert dog.running
    dog.stop()
    dog.join(5.0)
    assert not dog.running


# -- the heartbeat on a fake clock -----------------------------------------------------------


async def test_heartbeats_measure_how_late_they_fire() -> None:
    """Every heartbeat_s a heartbeat fires; how late it fires is recorded in the lag histogram
    and handed to on_tick."""
    clock = LateClock()
    lags: list[float] = []
    monitor = LoopMonitor(heartbeat_s=0.25, threshold_s=0.05, clock=clock, on_tick=lags.append)
    monitor.start()
    try:
        await clock.advance(0.75)
        clock.late_s = 0.0125
        await clock.advance(0.25)
    finally:
        await monitor.aclose()
    assert lags == [0.0, 0.0, 0.0, pytest.approx(0.0125)]
    assert monitor.heartbeats == 4 and monitor.last_lag_s == pytest.approx(0.0125)
    assert monitor.lag.count == 4 and monitor.lag.max_s == pytest.approx(0.0125)
    assert not monitor.running


async def test_a_new_heartbeat_interval_applies_from_the_next_beat() -> None:
    """Changing heartbeat_s takes effect from the next heartbeat on."""
    clock = FakeClock()
    monitor = LoopMonitor(heartbeat_s=0.1, threshold_s=0.05, clock=clock)
    monitor.start()
    try:
        await clock.advance(0.1)
        monitor.heartbeat_s = 0.5
        await clock.advance(0.1)  # the beat already scheduled fires at 0.2
        await clock.advance(0.45)
        assert monitor.heartbeats == 2
        await clock.advance(0.05)
        assert monitor.heartbeats == 3
    finally:
        await monitor.aclose()


async def test_a_failing_heartbeat_stops_the_monitor_and_reports_the_error() -> None:
    """When a heartbeat raises, the monitor stops and on_error gets the exception."""
    clock = FakeClock()
    errors: list[Exception] = []

    def broken_tick(_lag_s: float) -> None:
        raise ZeroDivisionError("tick")

    monitor = LoopMonitor(
        heartbeat_s=0.1, threshold_s=0.05, clock=clock, on_tick=broken_tick, on_error=errors.append
    )
    monitor.start()
    await clock.advance(0.5)
    await monitor.aclose()
    assert [type(e) for e in errors] == [ZeroDivisionError]
    assert monitor.heartbeats == 1 and not monitor.running


async def test_a_failing_heartbeat_without_on_error_is_logged() -> None:
    """Without on_error a failing heartbeat is logged with its traceback and the monitor stops."""
    clock = FakeClock()

    def broken_tick(_lag_s: float) -> None:
        raise ZeroDivisionError("tick")

    monitor = LoopMonitor(heartbeat_s=0.1, threshold_s=0.05, clock=clock, on_tick=broken_tick)
    monitor.start()
    with capture_logs() as logs:
        await clock.advance(0.3)
    await monitor.aclose()
    assert [e["event"] for e in logs] == ["loop monitor stopped: its heartbeat failed"]
    assert not monitor.running


async def test_the_monitor_runs_once_at_a_time() -> None:
    """start() on a running monitor raises RuntimeError; after stop it starts again."""
    clock = FakeClock()
    monitor = LoopMonitor(heartbeat_s=0.1, threshold_s=0.05, clock=clock)
    monitor.start()
    with pytest.raises(RuntimeError, match="already running"):
        monitor.start()
    await monitor.aclose()
    monitor.start()
    await clock.advance(0.1)
    await monitor.aclose()
    assert monitor.heartbeats == 1


async def test_waiting_for_a_block_needs_a_running_monitor() -> None:
    """wait_blocked() before start() raises RuntimeError (it would wait forever)."""
    monitor = LoopMonitor(heartbeat_s=0.1, threshold_s=0.05, clock=FakeClock())
    with pytest.raises(RuntimeError, match="not running"):
        await monitor.wait_blocked()


@pytest.mark.parametrize("field", ["heartbeat_s", "threshold_s"])
def test_monitor_intervals_must_be_positive(field: str) -> None:
    """A heartbeat_s or threshold_s that is not > 0 raises ValueError naming it."""
    settings: dict[str, Any] = {"heartbeat_s": 0.1, "threshold_s": 0.05, field: 0}
    with pytest.raises(ValueError, match=f"{field} must be > 0, got 0"):
        LoopMonitor(**settings)


# -- real blocking calls, on asyncio and on uvloop -------------------------------------------

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(uvloop.run, id="uvloop")]


async def catch(block: Callable[[], None]) -> BlockingCall:
    """Run ``block`` on the loop under a real-time monitor; return what it reported."""
    calls: list[BlockingCall] = []
    monitor = LoopMonitor(heartbeat_s=0.005, threshold_s=0.01, on_block=calls.append)
    monitor.start()
    try:
        block()
        async with asyncio.timeout(5.0):
            await monitor.wait_blocked(1)
    finally:
        await monitor.aclose()
    return calls[0]


@pytest.mark.parametrize("run", RUNNERS)
def test_the_watchdog_catches_a_50ms_sleep_on_the_loop(run: Runner) -> None:
    """time.sleep(0.05) on the loop is caught and logged as "event loop blocked" with the
    sleeping function, its file and the line of the sleep, and the short stack."""
    with capture_logs() as logs:
        call = run(catch(block_the_loop))
    assert (call.function, call.file, call.line) == ("block_the_loop", HERE, SLEEP_LINE)
    assert call.stack[0] == StackFrame("block_the_loop", HERE, SLEEP_LINE)
    assert call.stack[1].function == "catch"  # the caller, machinery left out
    # The heartbeat was due at most 5 ms after the block began: at least 45 ms late.
    assert 44.0 <= call.blocked_ms < 1000.0
    assert call.computing is False  # waiting, not computing
    assert call.cpu_percent is not None and call.cpu_percent < 50.0
    [line] = [e for e in logs if e["event"] == "event loop blocked"]
    assert (line["function"], line["file"], line["line"]) == ("block_the_loop", HERE, SLEEP_LINE)
    assert line["blocked_ms"] == round(call.blocked_ms, 3) and line["level"] == "warning"
    assert line["stack"].splitlines()[0] == f"{HERE}:{SLEEP_LINE} in block_the_loop"


@pytest.mark.parametrize("run", RUNNERS)
def test_a_computing_block_is_told_from_a_waiting_one(run: Runner) -> None:
    """A block that computes is told from one that sleeps (by the loop thread's state, so it
    holds on a machine so busy that the loop gets little CPU)."""
    computing = run(catch(compute_on_the_loop))
    waiting = run(catch(block_the_loop))
    assert (computing.function, computing.computing) == ("compute_on_the_loop", True)
    assert (waiting.function, waiting.computing) == ("block_the_loop", False)


async def test_repeated_blocks_from_one_place_are_logged_once_per_interval() -> None:
    """Blocks from the same line within log_interval_s are counted, not logged again; the
    next line logged says how many were suppressed."""
    clock = FakeClock()
    frames = [StackFrame("spin", "/app/spin.py", 3)]
    monitor = LoopMonitor(heartbeat_s=0.1, threshold_s=0.05, clock=clock, log_interval_s=10.0)
    monitor.start()
    try:
        with capture_logs() as logs:
            for at in (0.0, 1.0, 2.0, 12.0):
                await clock.advance_to(at)
                monitor.report(Capture(0, frames, None), 0.2)
    finally:
        await monitor.aclose()
    lines = [e for e in logs if e["event"] == "event loop blocked"]
    assert [e["suppressed"] for e in lines] == [0, 2]
    assert monitor.blocked == 4


def test_the_watchdog_runs_beside_the_loop_thread() -> None:
    """The monitor's watchdog is a daemon thread named profiler-watchdog, gone after aclose."""

    async def main() -> list[threading.Thread]:
        before = set(threading.enumerate())
        monitor = LoopMonitor(heartbeat_s=0.05, threshold_s=0.05)
        monitor.start()
        started = [t for t in threading.enumerate() if t not in before]
        await monitor.aclose()
        return started

    [watchdog_thread] = asyncio.run(main())
    assert watchdog_thread.name == "profiler-watchdog" and watchdog_thread.daemon
    assert not watchdog_thread.is_alive()


# -- the probe of a real thread -----------------------------------------------------------


def test_a_thread_probe_reads_a_sleeping_threads_stack_and_state() -> None:
    """A probe made on a thread reads, from another thread, its stack (innermost first) and
    its state: sleeping while it sleeps."""
    ready, done = threading.Event(), threading.Event()
    probes: list[ThreadProbe] = []

    def sleeper() -> None:
        probes.append(ThreadProbe.current())
        ready.set()
        done.wait(10.0)

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        ready.wait(10.0)
        [probe] = probes
        stack = probe.stack()
        assert any(f.function.endswith("<locals>.sleeper") for f in stack)
        deadline = time.monotonic() + 5.0
        while probe.state() != "S":  # it may be between ready.set() and the wait
            assert time.monotonic() < deadline, "the sleeper never slept"
    finally:
        done.set()
        thread.join()


def test_a_probe_of_a_thread_that_is_gone_reads_no_stack() -> None:
    """Once its thread has ended, a probe reads an empty stack."""
    probes: list[ThreadProbe] = []
    thread = threading.Thread(target=lambda: probes.append(ThreadProbe.current()))
    thread.start()
    thread.join()
    [probe] = probes
    assert probe.stack() == []


@pytest.mark.parametrize(
    ("state", "cpu_percent", "computing"),
    [
        ("S", 90.0, False),  # asleep when caught: waiting, whatever the CPU before
        ("D", None, False),
        ("R", 60.0, True),
        ("R", 15.0, True),  # computing, though other processes starve it of CPU
        ("R", 1.0, False),  # runnable only because its sleep just ended
        ("R", None, True),
        (None, 80.0, True),  # no thread state (not Linux): CPU decides
        (None, 20.0, False),
        (None, None, None),
    ],
)
async def test_a_block_is_computing_or_waiting_by_state_and_cpu(
    state: str | None, cpu_percent: float | None, computing: bool | None
) -> None:
    """The thread state at the capture decides; a runnable thread must also have used some
    CPU; without a state the CPU use decides; with neither it is unknown."""
    monitor = LoopMonitor(heartbeat_s=0.1, threshold_s=0.05, clock=FakeClock())
    with capture_logs():
        call = monitor.report(Capture(1, list(FRAMES), state), 0.08, cpu_percent=cpu_percent)
    assert call.computing is computing
    assert (call.function, call.line, call.blocked_ms) == ("slow_parse", 42, 80.0)


def test_a_late_loop_caught_in_its_own_code_is_not_a_blocking_call() -> None:
    """A stack whose innermost frame is the loop's selector (the loop is late because the
    machine starves it, not because a call blocks it) is not captured; the watchdog looks
    again and captures once user code runs."""
    selector = StackFrame("EpollSelector.select", selectors.__file__, 468)
    stacks = [[selector, *FRAMES], list(FRAMES)]
    now = Stopwatch()
    probe = FakeProbe(lambda: stacks.pop(0))
    dog = watchdog(now, probe)
    dog.beat(1, due_at=0.1)
    now.t = 0.2
    dog.check()
    assert dog.beat(1, due_at=0.1) is None  # nothing taken: the same beat is still late
    now.t = 0.25
    dog.check()
    capture = dog.beat(2, due_at=0.4)
    assert capture is not None and capture.frames == FRAMES and probe.looks == 2
