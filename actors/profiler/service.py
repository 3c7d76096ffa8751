"""The Profiler service: where the time goes, what blocks the loop, and what to do about it.

It keeps per-class latency histograms fed by the scheduler's task events, runs the loop-lag
monitor (a heartbeat plus a watchdog thread that captures whatever blocks the loop), profiles
windows on demand and writes the bottleneck report. Events are drained from the profiler's
subscription on every heartbeat and before every read, so a read is always up to date and no
task sits waiting on the bus. The numbers live in the service, not in its actor: a restarted
actor keeps counting where the last one stopped.

Standalone (a benchmark, a script), on the real clock::

    profiler = Profiler(load_config(), ActorContext(events=bus))
    async with profiler.running():
        ...
        print(profiler.report().render())

Under a Runtime, ``attach`` runs the same parts in an actor under its supervisor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from runtime.actor import Actor, ActorContext, ActorRef
from runtime.clock import Clock, RealClock
from runtime.config import Config, ProfilerSection
from runtime.events import Event, Subscription
from runtime.logging import get_logger
from runtime.supervisor import ChildSpec

from .blocking import BlockingSite, BlockingSites
from .histogram import LatencyHistogram, LatencySummary
from .lag import BlockingCall, LoopMonitor
from .profile import ProfileReport, profile_window
from .report import BottleneckReport, build_report
from .tasks import STAGES, TASK_EVENTS, ClassLatency, Stage, TaskLatencies

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor

__all__ = ["Profiler", "ProfilerStatistics"]

_METRICS_INTERVAL_S = 1.0  # gauges for rules and exporters: once a second is plenty


class ProfilerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot: the monitor's settings, loop lag, blocking calls (the worst places), and
    latency per task class.

    ``events_dropped``: task events the profiler's subscription lost because it was full;
    ``rejected_samples``: latencies that were not valid numbers.
    """

    running: bool
    heartbeat_ms: float
    loop_lag_threshold_ms: float
    heartbeats: int
    loop_lag: LatencySummary
    last_lag_ms: float
    blocked: int
    blocking_calls: list[BlockingSite]
    classes: dict[str, ClassLatency]
    events_dropped: int
    rejected_samples: int


class _MonitorFailed(NamedTuple):
    """The heartbeat or the watchdog raised: the actor crashes with ``error``."""

    error: Exception


class Profiler:
    """Latency per task class, the loop-lag monitor, profiles and the bottleneck report.

    ``lag_clock`` times the heartbeat and the watchdog (default: real time, whatever the
    context's clock: a fake clock cannot be late).
    """

    name = "profiler"

    def __init__(
        self,
        config: Config,
        context: ActorContext,
        *,
        lag_clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._context = context
        self._clock = context.clock
        self._tasks = TaskLatencies()
        self._sites = BlockingSites()
        section = config.profiler
        self._monitor = LoopMonitor(
            heartbeat_s=section.heartbeat_ms / 1000,
            threshold_s=section.loop_lag_threshold_ms / 1000,
            clock=lag_clock or RealClock(),
            on_block=self._sites.add,
            on_tick=self._on_tick,
            on_error=self._monitor_failed,
        )
        self._subscription: Subscription[Event] | None = None
        self._dropped_before = 0
        self._actor: ActorRef | None = None
        self._failure: Exception | None = None
        self._next_metrics_at = 0.0
        self._log = get_logger(self.name)

    @property
    def config(self) -> ProfilerSection:
        return self._config.profiler

    # -- running ------------------------------------------------------------------------------

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Run the profiler in an actor under ``supervisor`` (restarted if it crashes)."""
        supervisor.add(ChildSpec(self.name, lambda: _ProfilerActor(self), mailbox_capacity=16))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Profiler]:
        """Run the monitor and take task events for the body of ``async with``.

        Raises ``RuntimeError`` if already running, and on exit what the heartbeat or the
        watchdog raised meanwhile (the monitor stopped then).
        """
        self._start(None)
        try:
            yield self
        finally:
            await self._stop()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _start(self, actor: ActorRef | None) -> None:
        if self._monitor.running:
            raise RuntimeError("the profiler is already running; stop it first")
        self._actor = actor
        events = self._context.events
        if events is not None:
            self._subscription = events.subscribe(*TASK_EVENTS, name=self.name)
        self._monitor.start()

    async def _stop(self) -> None:
        self._drain()
        if self._subscription is not None:
            self._dropped_before += self._subscription.dropped
            self._subscription.close()
            self._subscription = None
        self._actor = None
        await self._monitor.aclose()

    def _monitor_failed(self, error: Exception) -> None:
        if self._actor is not None:
            self._actor.tell_nowait(_MonitorFailed(error))
        else:
            self._log.error("loop monitor failed; it is stopped", error=repr(error))
            self._failure = error

    def _on_tick(self, lag_s: float) -> None:
        self._drain()
        now = self._monitor.clock.now()
        if now >= self._next_metrics_at and self._context.metrics is not None:
            self._next_metrics_at = now + _METRICS_INTERVAL_S
            self._publish_metrics()

    def _drain(self) -> None:
        """Account for every task event waiting in the subscription."""
        subscription = self._subscription
        if subscription is None:
            return
        ingest = self._tasks.ingest
        while len(subscription):  # what is buffered, even once the bus has closed
            ingest(subscription.receive_nowait())

    def _publish_metrics(self) -> None:
        metrics = self._context.metrics
        assert metrics is not None
        metrics.set("profiler_loop_lag_ms", self._monitor.last_lag_s * 1000.0)
        metrics.set("profiler_loop_lag_p99_ms", self._monitor.lag.percentile(99) * 1000.0)
        metrics.set("profiler_loop_blocked_total", self._monitor.blocked)
        for task_class in self._tasks:
            for stage in STAGES:
                p99_ms = self._tasks.histogram(task_class, stage).percentile(99) * 1000.0
                metrics.set(
                    "profiler_task_latency_p99_ms", p99_ms, task_class=task_class, stage=stage
                )

    async def wait_blocked(self, count: int = 1) -> None:
        """Wait until ``count`` blocking calls have been reported (tests, diagnostics).
        Raises ``RuntimeError`` when the profiler is not running."""
        await self._monitor.wait_blocked(count)

    # -- profiles and reports -----------------------------------------------------------------

    async def profile(self, seconds: float, *, top: int = 20) -> ProfileReport:
        """Profile the event loop's thread for ``seconds`` (on the runtime's clock); the
        ``top`` functions by cumulative and by own time. Raises what ``profile_window`` raises:
        ``ValueError`` for a bad window or ``top``, ``RuntimeError`` when a window is open."""
        return await profile_window(seconds, clock=self._clock, top=top)

    def report(self) -> BottleneckReport:
        """The worst class, the worst blocking call and what to do (``.render()`` for text)."""
        self._drain()
        return build_report(
            self._tasks.snapshots(),
            self._sites.top(5),
            self._monitor.lag.summary(),
            scheduler=self._config.scheduler,
            threshold_ms=self._monitor.threshold_s * 1000.0,
            generated_at=self._clock.wall(),
        )

    def histogram(self, task_class: str, stage: Stage) -> LatencyHistogram:
        """The live histogram of a class at a stage ("queue_wait", "run", "end_to_end").
        Raises ``KeyError`` for a class no event named, ``ValueError`` for a bad stage."""
        self._drain()
        return self._tasks.histogram(task_class, stage)

    @property
    def loop_lag(self) -> LatencyHistogram:
        """The live histogram of heartbeat lateness (seconds)."""
        return self._monitor.lag

    def blocking_calls(self) -> list[BlockingCall]:
        """The latest blocking calls, oldest first."""
        return list(self._sites.recent)

    # -- configuration and statistics ---------------------------------------------------------

    def apply_config(self, config: Config) -> list[str]:
        """Apply a reload live (heartbeat, threshold, the scheduler's deadlines); return the
        $.paths that need a restart (only ``enabled``)."""
        restart = ["$.profiler.enabled"] if config.profiler.enabled != self.config.enabled else []
        self._monitor.heartbeat_s = config.profiler.heartbeat_ms / 1000
        self._monitor.threshold_s = config.profiler.loop_lag_threshold_ms / 1000
        self._config = config
        return restart

    def statistics(self) -> ProfilerStatistics:
        self._drain()
        monitor = self._monitor
        dropped = self._dropped_before
        if self._subscription is not None:
            dropped += self._subscription.dropped
        return ProfilerStatistics(
            running=monitor.running,
            heartbeat_ms=monitor.heartbeat_s * 1000.0,
            loop_lag_threshold_ms=monitor.threshold_s * 1000.0,
            heartbeats=monitor.heartbeats,
            loop_lag=monitor.lag.summary(),
            last_lag_ms=monitor.last_lag_s * 1000.0,
            blocked=monitor.blocked,
            blocking_calls=self._sites.top(5),
            classes=self._tasks.snapshots(),
            events_dropped=dropped,
            rejected_samples=self._tasks.rejected,
        )


class _ProfilerActor(Actor):
    """The profiler's shell under a supervisor: starts the monitor, stops it, and crashes when
    the monitor fails so that its supervisor starts a fresh one."""

    def __init__(self, profiler: Profiler) -> None:
        self._profiler = profiler

    async def on_start(self) -> None:
        self._profiler._start(self.ref)

    async def on_stop(self) -> None:
        await self._profiler._stop()

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _MonitorFailed):
            raise message.error
        raise TypeError(f"the profiler takes no messages; got {message!r}")
