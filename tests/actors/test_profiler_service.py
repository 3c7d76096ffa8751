"""The Profiler service: event-fed statistics, the report from real blocking, supervision,
configuration and metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors.profiler import Profiler
from runtime.actor import ActorContext
from runtime.app import Runtime
from runtime.clock import FakeClock
from runtime.config import Config, ProfilerSection
from runtime.events import (
    ActorCrashed,
    ActorRestarted,
    EventBus,
    TaskFinished,
    TaskQueued,
    TaskStarted,
)
from runtime.metrics import MetricsRegistry
from runtime.retry import RetryPolicy
from runtime.supervisor import Supervisor
from runtime.testing import capture_logs

HERE = __file__


def parse_wake_word_model() -> None:
    """Blocks the event loop for 50 ms (the report must name the next line)."""
    time.sleep(0.05)


SLEEP_LINE = parse_wake_word_model.__code__.co_firstlineno + 2


def config(heartbeat_ms: int = 100, threshold_ms: int = 50) -> Config:
    return Config(
        profiler=ProfilerSection(heartbeat_ms=heartbeat_ms, loop_lag_threshold_ms=threshold_ms)
    )


def context(clock: FakeClock, **kwargs: Any) -> ActorContext:
    return ActorContext(
        clock=clock,
        events=EventBus(clock=clock, subscriber_capacity=kwargs.pop("capacity", 1000)),
        metrics=kwargs.pop("metrics", MetricsRegistry(clock=clock)),
        retry=RetryPolicy(retries=0),
        **kwargs,
    )


def publish_task(
    bus: EventBus, task_id: int, task_class: str, wait_s: float, run_s: float, ok: bool = True
) -> None:
    common: dict[str, Any] = {"actor": "scheduler", "task_id": task_id, "task_class": task_class}
    bus.emit(TaskQueued, priority=1, **common)
    bus.emit(TaskStarted, queue_wait_s=wait_s, **common)
    bus.emit(TaskFinished, queue_wait_s=wait_s, run_s=run_s, ok=ok, **common)


@asynccontextmanager
async def running(profiler: Profiler) -> AsyncIterator[Profiler]:
    async with profiler.running():
        yield profiler


async def test_task_events_feed_per_class_statistics(clock: FakeClock) -> None:
    """Task events published on the bus become per-class counts and latency percentiles
    (sub-millisecond ones resolved), visible at once in statistics()."""
    ctx = context(clock)
    assert ctx.events is not None
    profiler = Profiler(config(), ctx, lag_clock=clock)
    async with running(profiler):
        for i in range(50):
            publish_task(ctx.events, i, "wake_word", wait_s=0.0002, run_s=0.0004)
        publish_task(ctx.events, 99, "voice", wait_s=0.01, run_s=0.2, ok=False)
        stats = profiler.statistics()
    wake = stats.classes["wake_word"]
    assert (wake.queued, wake.started, wake.finished) == (50, 50, 50)
    assert wake.queue_wait.p50_ms == pytest.approx(0.2)
    assert wake.run.p99_ms == pytest.approx(0.4)
    assert wake.end_to_end.p50_ms == pytest.approx(0.6)
    assert stats.classes["voice"].failed == 1
    assert profiler.histogram("voice", "end_to_end").max_s == pytest.approx(0.21)


async def test_heartbeats_run_on_the_lag_clock(clock: FakeClock) -> None:
    """The monitor beats every heartbeat_ms of its clock; statistics count the beats and the
    lag; after the body of running() the monitor is stopped."""
    profiler = Profiler(config(heartbeat_ms=100), context(clock), lag_clock=clock)
    async with running(profiler):
        await clock.advance(1.0)
        stats = profiler.statistics()
        assert stats.running and stats.heartbeats == 10
        assert stats.loop_lag.count == 10 and stats.last_lag_ms == 0.0
        assert profiler.loop_lag.count == 10
    assert not profiler.statistics().running


async def test_the_report_names_the_worst_class_and_the_blocking_call() -> None:
    """With a late class and a real 50 ms block on the loop, report() names the class
    furthest over its deadline and the blocking function with its file and line, and says
    what to do about both."""
    ctx = ActorContext(events=EventBus(clock=FakeClock()))  # the real clock for the monitor
    assert ctx.events is not None
    profiler = Profiler(config(heartbeat_ms=5, threshold_ms=10), ctx)
    async with running(profiler):
        for i in range(20):
            publish_task(ctx.events, i, "voice", wait_s=1.2, run_s=0.3)  # 1.5 s, deadline 1 s
            publish_task(ctx.events, 100 + i, "command", wait_s=0.0, run_s=0.5)  # 0.25x
        with capture_logs() as logs:
            parse_wake_word_model()
            with anyio.fail_after(5.0):
                await profiler.wait_blocked(1)
        report = profiler.report()
    assert report.worst_class is not None and report.worst_class.task_class == "voice"
    assert report.worst_class.ratio == pytest.approx(1.5, rel=0.13)
    call = report.worst_blocking_call
    assert call is not None
    assert (call.function, call.file, call.line) == ("parse_wake_word_model", HERE, SLEEP_LINE)
    assert call.count == 1 and call.max_ms >= 44.0 and call.computing is False
    assert report.recommendations[0].startswith(
        f"move parse_wake_word_model at {HERE}:{SLEEP_LINE} to run_in='thread'"
    )
    assert report.recommendations[1].startswith("raise max_concurrency of voice (now 4)")
    assert [e["function"] for e in logs if e["event"] == "event loop blocked"] == [
        "parse_wake_word_model"
    ]
    assert [c.line for c in profiler.blocking_calls()] == [SLEEP_LINE]
    assert "parse_wake_word_model" in report.render()


def busy_work() -> int:
    total = 0
    for i in range(20_000):
        total += i
    return total


async def test_profile_windows_run_on_the_runtime_clock(clock: FakeClock) -> None:
    """profile(seconds) opens a window on the context's clock and reports what ran in it."""
    profiler = Profiler(config(), context(clock), lag_clock=clock)
    reports = []

    async def window() -> None:
        reports.append(await profiler.profile(2.0, top=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(window)
        await clock.advance(0.0)
        busy_work()
        await clock.advance(2.0)
    assert reports[0].window_s == 2.0 and len(reports[0].by_own) <= 5
    assert reports[0].by_own[0].function == "busy_work"


async def test_the_profiler_runs_once_at_a_time(clock: FakeClock) -> None:
    """running() while running raises RuntimeError."""
    profiler = Profiler(config(), context(clock), lag_clock=clock)
    async with running(profiler):
        with pytest.raises(RuntimeError, match="already running"):
            async with profiler.running():
                pass


class FlakyMetrics(MetricsRegistry):
    """A registry whose first ``failures`` writes raise."""

    def __init__(self, clock: FakeClock, failures: int = 1) -> None:
        super().__init__(clock=clock)
        self.failures = failures

    def set(self, name: str, value: float, /, **labels: object) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("metrics store unavailable")
        super().set(name, value, **labels)


async def test_a_failing_monitor_standalone_raises_when_running_ends(clock: FakeClock) -> None:
    """Standalone, a heartbeat that fails stops the monitor (logged) and running() raises
    the error on exit."""
    profiler = Profiler(config(), context(clock, metrics=FlakyMetrics(clock)), lag_clock=clock)
    with capture_logs() as logs, pytest.raises(OSError, match="metrics store unavailable"):
        async with running(profiler):
            await clock.advance(0.1)
            assert not profiler.statistics().running
    assert [e["event"] for e in logs] == ["loop monitor failed; it is stopped"]


async def test_under_a_supervisor_a_failing_monitor_crashes_and_restarts(clock: FakeClock) -> None:
    """Under a supervisor the profiler runs in an actor; a monitor failure crashes it, the
    supervisor restarts it, and the new instance monitors again with the counts kept."""
    ctx = context(clock, metrics=FlakyMetrics(clock, failures=0))
    assert ctx.events is not None and isinstance(ctx.metrics, FlakyMetrics)
    profiler = Profiler(config(), ctx, lag_clock=clock)
    sup = Supervisor("root", context=ctx, backoff_initial_s=0.0)
    profiler.attach(sup, ctx)
    with ctx.events.subscribe(ActorCrashed, ActorRestarted) as lifecycle, capture_logs():
        async with sup:
            await clock.advance(1.0)
            assert profiler.statistics().heartbeats == 10
            ctx.metrics.failures = 1
            await clock.advance(1.0)  # the next metrics write fails, in a heartbeat
            with anyio.fail_after(5.0):  # the crashed actor joins its watchdog thread first
                crash = await lifecycle.receive()
                restart = await lifecycle.receive()
            assert isinstance(crash, ActorCrashed) and crash.name == "profiler"
            assert crash.error == "OSError: metrics store unavailable"
            assert isinstance(restart, ActorRestarted) and restart.name == "profiler"
            before = profiler.statistics().heartbeats
            await clock.advance(1.0)
            stats = profiler.statistics()
            assert stats.running and stats.heartbeats >= before + 9  # beating again
        assert not profiler.statistics().running


async def test_the_profiler_actor_takes_no_messages(clock: FakeClock) -> None:
    """A message sent to the profiler actor is refused with TypeError."""
    ctx = context(clock)
    profiler = Profiler(config(), ctx, lag_clock=clock)
    sup = Supervisor("root", context=ctx, backoff_initial_s=0.0)
    profiler.attach(sup, ctx)
    async with sup:
        [ref] = [s.child for s in sup._slots]
        with capture_logs(), pytest.raises(TypeError, match="takes no messages"):
            await ref.ask("report please")  # type: ignore[attr-defined]


async def test_gauges_for_rules_and_exporters(clock: FakeClock) -> None:
    """Once a second the profiler sets gauges: loop lag, blocked count, and p99 latency per
    class and stage."""
    ctx = context(clock)
    assert ctx.events is not None and ctx.metrics is not None
    profiler = Profiler(config(), ctx, lag_clock=clock)
    async with running(profiler):
        publish_task(ctx.events, 1, "voice", wait_s=0.002, run_s=0.03)
        await clock.advance(1.0)
    metrics = ctx.metrics
    assert metrics.get("profiler_loop_lag_ms") == 0.0
    assert metrics.get("profiler_loop_blocked_total") == 0.0
    assert metrics.get("profiler_task_latency_p99_ms", task_class="voice", stage="run") == 30.0
    assert metrics.get(
        "profiler_task_latency_p99_ms", task_class="voice", stage="end_to_end"
    ) == pytest.approx(32.0)


async def test_a_full_subscription_counts_what_it_lost(clock: FakeClock) -> None:
    """Events the profiler's subscription had no room for are counted as dropped."""
    ctx = context(clock, capacity=3)
    assert ctx.events is not None
    profiler = Profiler(config(), ctx, lag_clock=clock)
    async with running(profiler):
        publish_task(ctx.events, 1, "voice", 0.001, 0.002)
        publish_task(ctx.events, 2, "voice", 0.001, 0.002)
        stats = profiler.statistics()
    assert stats.events_dropped == 3  # the first task's three events; the second's are kept
    voice = stats.classes["voice"]
    assert (voice.queued, voice.started, voice.finished, voice.run.count) == (1, 1, 1, 1)
    assert profiler.statistics().events_dropped == 3  # kept after the subscription closed


async def test_a_reload_applies_heartbeat_and_threshold_live(clock: FakeClock) -> None:
    """apply_config changes the heartbeat and the threshold live and asks for a restart only
    when enabled changes."""
    profiler = Profiler(config(heartbeat_ms=100), context(clock), lag_clock=clock)
    async with running(profiler):
        new = config(heartbeat_ms=250, threshold_ms=80)
        assert profiler.apply_config(new) == []
        await clock.advance(0.1)  # the beat already due
        await clock.advance(0.5)
        stats = profiler.statistics()
        assert stats.heartbeats == 3
        assert (stats.heartbeat_ms, stats.loop_lag_threshold_ms) == (250.0, 80.0)
    assert profiler.config.loop_lag_threshold_ms == 80
    disabled = msgspec.structs.replace(
        new, profiler=msgspec.structs.replace(new.profiler, enabled=False)
    )
    assert profiler.apply_config(disabled) == ["$.profiler.enabled"]


async def test_statistics_encode_as_json(clock: FakeClock) -> None:
    """statistics() and report() are msgspec Structs: they encode for Runtime.statistics()."""
    ctx = context(clock)
    assert ctx.events is not None
    profiler = Profiler(config(), ctx, lag_clock=clock)
    async with running(profiler):
        publish_task(ctx.events, 1, "voice", 0.001, 0.002)
        stats = msgspec.json.decode(msgspec.json.encode(profiler.statistics()))
        report = msgspec.json.decode(msgspec.json.encode(profiler.report()))
    assert stats["classes"]["voice"]["finished"] == 1
    assert report["worst_class"]["task_class"] == "voice"


OTHER_SERVICES = ("scheduler", "sampler", "cache", "quotas", "alerts")


async def test_the_profiler_plugs_into_the_runtime(tmp_path: Path, clock: FakeClock) -> None:
    """As a Runtime service the profiler starts under the root supervisor, sees the task
    events on the runtime's bus, shows in Runtime.statistics() and takes a live reload."""
    path = tmp_path / "config.yaml"
    logs = f"logging: {{file: {tmp_path / 'runtime.jsonl'}, console: false}}\n"
    others = "".join(f"{name}: {{enabled: false}}\n" for name in OTHER_SERVICES)
    path.write_text(logs + others)
    async with Runtime.from_path(path, clock=clock) as rt:
        assert "profiler" in [a.name for a in rt.statistics().supervisor.actors]
        publish_task(rt.events, 1, "voice", wait_s=0.001, run_s=0.002)
        services = rt.statistics().services
        assert services["profiler"].running
        assert services["profiler"].classes["voice"].finished == 1
        path.write_text(logs + others + "profiler: {heartbeat_ms: 40}\n")
        assert await rt.reload() == ["$.profiler.heartbeat_ms"]
        assert rt.statistics().services["profiler"].heartbeat_ms == 40.0
    assert not rt.statistics().services["profiler"].running


async def test_the_schedulers_own_events_feed_the_profiler(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Beside the real scheduler in a Runtime, the profiler's per-class run time and end to
    end latency are those of the tasks the scheduler ran."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"logging: {{file: {tmp_path / 'runtime.jsonl'}, console: false}}\n"
        "scheduler: {process_workers: 0, classes: {command: {priority: 2, deadline_ms: 2000}}}\n"
        + "".join(
            f"{name}: {{enabled: false}}\n" for name in ("sampler", "cache", "quotas", "alerts")
        )
    )

    async def transcribe() -> str:
        await clock.sleep(0.25)
        return "lights on"

    async with Runtime.from_path(path, clock=clock) as rt:
        handles = [rt.spawn(transcribe, task_class="command") for _ in range(3)]
        await clock.advance(0.25)
        assert [await h.result() for h in handles] == ["lights on"] * 3
        command = rt.statistics().services["profiler"].classes["command"]
    assert (command.queued, command.started, command.finished) == (3, 3, 3)
    assert command.run.p50_ms == pytest.approx(250.0)
    assert command.end_to_end.max_ms == pytest.approx(250.0)
