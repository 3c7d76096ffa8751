"""The Sampler service (``rt.sampler``) and the actor that takes the samples.

The actor runs the drift-free schedule: a timer on the clock sends it a tick for each slot;
for each tick it runs the Collector in a worker thread (psutil never blocks the loop), then
publishes the Sample: the newest one for ``latest()``, every figure as a gauge in the metrics
registry (alert rules read them there), each subscriber's channel, and the SQLite history.

The service holds what outlives an actor instance (the newest sample, subscribers, watched
pids, statistics); a restarted instance primes a fresh Collector and starts a new schedule.

Standalone (a benchmark, a script), on the real clock::

    sampler = Sampler(load_config().sampler, ActorContext())
    async with sampler.running():
        async for sample in sampler.subscribe():
            print(sample.cpu_percent)
"""

from __future__ import annotations

import math
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import msgspec
import psutil

from runtime.config import Config, SamplerSection
from runtime.logging import get_logger
from runtime.metrics import MetricsRegistry
from runtime.supervisor import ChildSpec, Supervisor

from .collector import Collector, Reading
from .history import SampleHistory
from .sample import Sample, gauges
from .schedule import Slot, percentile
from .stats import Counts, SamplerStatistics
from .subscription import SampleSubscription
from .ticker import Ticker

if TYPE_CHECKING:
    from runtime.actor import ActorContext

__all__ = ["CollectorLike", "Offload", "Sampler"]

T = TypeVar("T")
_WINDOW = 1024  # ticks kept for the lateness and collection-time percentiles


class CollectorLike(Protocol):
    """What the Sampler needs of a collector (``Collector``, or a fake in tests)."""

    disk_path: str

    def prime(self, now_s: float) -> None: ...

    def collect(self, now_s: float, wall_s: float, watched: dict[int, str]) -> Reading: ...


class Offload(Protocol):
    """Runs a blocking call away from the event loop (default: a worker thread)."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


class Sampler:
    """Samples resources on a drift-free schedule; publishes, keeps history, watches plugins.

    ``config`` is the whole ``Config`` or its ``sampler`` section. ``collector`` builds a
    collector for each actor instance; ``offload`` runs its blocking calls (a worker thread by
    default). Gauges go to ``context.metrics`` (a registry of its own when that is ``None``).
    """

    name = "sampler"

    def __init__(
        self,
        config: Config | SamplerSection,
        context: ActorContext,
        *,
        collector: Callable[[SamplerSection], CollectorLike] | None = None,
        offload: Offload | None = None,
    ) -> None:
        self.config = config.sampler if isinstance(config, Config) else config
        self._context = context
        self._clock = context.clock
        # ``is None``, not ``or``: an empty registry is falsy (it has a length).
        metrics = context.metrics
        self.metrics = metrics if metrics is not None else MetricsRegistry(clock=context.clock)
        self._make_collector = collector or _real_collector
        self._offload = offload or _in_thread()
        self._log = get_logger(self.name)
        self._latest: Sample | None = None
        self._watched: dict[int, str] = {}
        self._subscribers: list[SampleSubscription] = []
        self._closed = False
        self._written: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self._lateness_s: deque[float] = deque(maxlen=_WINDOW)
        self._collect_s: deque[float] = deque(maxlen=_WINDOW)
        self._counts = Counts()
        self._history = _history(self.config)
        self._last_maintenance = -math.inf
        self._cgroup: str | None = None
        self._ticker: Ticker | None = None

    # -- running ------------------------------------------------------------------------------

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Put the sampling actor under ``supervisor`` (restarted if it crashes)."""
        supervisor.add(ChildSpec(self.name, lambda: Ticker(self), mailbox_capacity=8))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        """Sample for the body of ``async with``, under a supervisor of its own."""
        supervisor = Supervisor(f"{self.name}.standalone", context=self._context)
        self.attach(supervisor, self._context)
        async with supervisor:
            yield self

    # -- the public face ----------------------------------------------------------------------

    def latest(self) -> Sample | None:
        """The newest Sample, or ``None`` before the first one (one interval after start)."""
        return self._latest

    def subscribe(self, capacity: int | None = None) -> SampleSubscription:
        """Every Sample from now on: ``async for sample in sampler.subscribe(): ...``.

        ``capacity`` (default ``subscriber_capacity``) bounds how far a subscriber may fall
        behind; past it, its oldest samples are dropped. After the Sampler has stopped the
        subscription is born closed. Raises ``ValueError`` for a capacity below 1.
        """
        sub = SampleSubscription(
            self.config.subscriber_capacity if capacity is None else capacity,
            on_close=self._unsubscribe,
        )
        if self._closed:
            sub.close()
        else:
            self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: SampleSubscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            self._counts.subscriber_drops += sub.dropped

    async def history(
        self, since_s: float, until_s: float | None = None, *, resolution_s: float | None = None
    ) -> list[Sample]:
        """Stored samples from ``since_s`` seconds ago to ``until_s`` seconds ago (None: now).

        Recent samples come as taken, older ones as the averages downsampling left;
        ``resolution_s`` averages into buckets of that many seconds. ``[]`` when the history
        is disabled (``history_path: null``). Raises ``ValueError`` for a bad window or
        resolution, ``RuntimeError`` when the history is not open (the Sampler is not running
        or the file could not be opened: see the log).
        """
        _check_window(since_s, until_s, resolution_s)
        if self._history is None:
            return []
        now = self._clock.wall()
        until = None if until_s is None else now - until_s
        return await self._history.query(now - since_s, until, resolution_s=resolution_s)

    def watch(self, pid: int, *, plugin: str) -> None:
        """Sample process ``pid`` for ``plugin`` from the next sample on (``Sample.plugins``,
        ``plugin_*{plugin=...}`` gauges); it is dropped, with a log line, once it exits.

        Raises ``ValueError`` for a pid that is not a positive int, an empty plugin name or a
        pid already watched for another plugin; ``ProcessLookupError`` when no such process.
        """
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
            raise ValueError(f"pid must be a positive int, got {pid!r}")
        if not isinstance(plugin, str) or not plugin:
            raise ValueError(f"plugin must be a non-empty name such as 'weather', got {plugin!r}")
        owner = self._watched.get(pid)
        if owner is not None and owner != plugin:
            raise ValueError(f"pid {pid} is already watched for plugin {owner!r}; unwatch it first")
        if not psutil.pid_exists(pid):
            raise ProcessLookupError(f"no process with pid {pid} to watch for plugin {plugin!r}")
        self._watched[pid] = plugin

    def unwatch(self, pid: int) -> bool:
        """Stop sampling ``pid``; returns whether it was watched."""
        return self._watched.pop(pid, None) is not None

    def watched(self) -> dict[int, str]:
        """The watched pids and the plugin each is watched for."""
        return dict(self._watched)

    # -- configuration and statistics ---------------------------------------------------------

    def apply_config(self, config: Config) -> list[str]:
        """Apply a reloaded configuration live; return the $.paths that need a restart.

        Live: interval_ms (from the next tick on), retention and downsampling, disk_path,
        subscriber_capacity (for new subscribers). Not live: enabled, history_path.
        """
        new, old = config.sampler, self.config
        restart = [
            f"$.sampler.{k}"
            for k in ("enabled", "history_path")
            if getattr(new, k) != getattr(old, k)
        ]
        self.config = msgspec.structs.replace(
            new, enabled=old.enabled, history_path=old.history_path
        )
        if self._history is not None:
            self._history.retention_s = new.retention_s
            self._history.raw_s = new.downsample_after_s
            self._history.bucket_s = new.downsample_bucket_s
        if self._ticker is not None:
            self._ticker.reconfigure(self.config)
        return restart

    def statistics(self) -> SamplerStatistics:
        """Samples taken and skipped, schedule lateness, watched pids, subscribers, history."""
        counts, lateness, collect = self._counts, list(self._lateness_s), list(self._collect_s)
        plugins: dict[str, list[int]] = {}
        for pid, plugin in sorted(self._watched.items()):
            plugins.setdefault(plugin, []).append(pid)
        return SamplerStatistics(
            running=self._ticker is not None,
            interval_s=self.config.interval_ms / 1000,
            samples=counts.samples,
            skipped=counts.skipped,
            lateness_p50_ms=percentile(lateness, 0.5) * 1000,
            lateness_p99_ms=percentile(lateness, 0.99) * 1000,
            lateness_max_ms=max(lateness, default=0.0) * 1000,
            collect_p50_ms=percentile(collect, 0.5) * 1000,
            collect_max_ms=max(collect, default=0.0) * 1000,
            watched=plugins,
            vanished=counts.vanished,
            forbidden=counts.forbidden,
            subscribers=len(self._subscribers),
            subscriber_drops=counts.subscriber_drops + sum(s.dropped for s in self._subscribers),
            history_path=self.config.history_path,
            history_errors=counts.history_errors,
            cgroup=self._cgroup,
        )

    # -- what the actor calls -----------------------------------------------------------------

    def _new_collector(self) -> CollectorLike:
        return self._make_collector(self.config)

    async def _started(self, ticker: Ticker, collector: CollectorLike) -> None:
        """An actor instance is up: open the history (a failure is logged, sampling goes on)."""
        self._ticker = ticker
        self._closed = False
        cgroup = getattr(collector, "cgroup", None)
        self._cgroup = str(cgroup.directory) if cgroup is not None else None
        if self._history is None or self._history.is_open:
            return
        try:
            await self._history.open()
        except (OSError, sqlite3.Error) as exc:
            self._count_history_error()
            self._log.error("sample history not opened; sampling without it",
                            path=str(self._history.path), error=repr(exc))  # fmt: skip

    async def _stopped(self, *, final: bool) -> None:
        """An actor instance stopped; on the final stop, end subscriptions and close history."""
        self._ticker = None
        if not final:
            return
        self._closed = True
        for sub in list(self._subscribers):
            sub.close()
        if self._history is not None:
            await self._history.close()

    def _ticked(self, slot: Slot, lateness_s: float) -> None:
        self._lateness_s.append(lateness_s)
        self._counts.skipped += slot.skipped

    async def _publish(self, reading: Reading, collect_s: float) -> None:
        """Make ``reading`` seen: latest, gauges, history, then subscribers (so a sample a
        subscriber holds is already in the history); drop watched processes that are gone."""
        sample = reading.sample
        self._collect_s.append(collect_s)
        self._counts.samples += 1
        self._latest = sample
        self._drop_watched(reading)
        self._set_gauges(sample)
        await self._store(sample)
        for sub in self._subscribers:
            sub._deliver(sample)

    def _drop_watched(self, reading: Reading) -> None:
        for pid, plugin in reading.vanished:
            self._counts.vanished += self._unwatch_gone(pid, plugin, reason="vanished")
        for pid, plugin in reading.forbidden:
            self._counts.forbidden += self._unwatch_gone(pid, plugin, reason="forbidden")

    def _unwatch_gone(self, pid: int, plugin: str, *, reason: str) -> bool:
        if self._watched.get(pid) != plugin:
            return False  # unwatched (or re-watched for another plugin) meanwhile
        del self._watched[pid]
        self._log.warning("watched process dropped", pid=pid, plugin=plugin, reason=reason)
        return True

    def _set_gauges(self, sample: Sample) -> None:
        """Write every figure; remove series that this sample no longer has (a plugin gone)."""
        written: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for name, value, labels in gauges(sample):
            self.metrics.set(name, value, **labels)
            written.add((name, tuple(labels.items())))
        for name, stale in self._written - written:
            self.metrics.remove(name, **dict(stale))
        self._written = written

    async def _store(self, sample: Sample) -> None:
        history = self._history
        if history is None or not history.is_open:
            return
        try:
            await history.append(sample)
            if sample.timestamp - self._last_maintenance >= history.bucket_s:
                self._last_maintenance = sample.timestamp
                await history.maintain(sample.timestamp)
        except (OSError, sqlite3.Error) as exc:
            errors = self._count_history_error()
            if errors & (errors - 1) == 0:  # 1st, 2nd, 4th, 8th...: a full disk must not flood
                self._log.error("sample history write failed", errors=errors, error=repr(exc))

    def _count_history_error(self) -> int:
        self._counts.history_errors += 1
        return self._counts.history_errors


def _real_collector(config: SamplerSection) -> CollectorLike:
    return Collector(disk_path=config.disk_path)


def _in_thread() -> Offload:
    # One collection at a time needs one thread; a limiter of its own keeps the sampler's
    # turn from waiting behind other users of anyio's default thread limiter.
    limiter = anyio.CapacityLimiter(1)

    async def run(fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=limiter)

    return run


def _history(config: SamplerSection) -> SampleHistory | None:
    if config.history_path is None:
        return None
    return SampleHistory(
        config.history_path,
        retention_s=config.retention_s,
        raw_s=config.downsample_after_s,
        bucket_s=config.downsample_bucket_s,
    )


def _check_window(since_s: float, until_s: float | None, resolution_s: float | None) -> None:
    if not (_number(since_s) and since_s > 0):
        raise ValueError(f"since_s must be a positive number of seconds ago, got {since_s!r}")
    if until_s is not None and not (_number(until_s) and 0 <= until_s < since_s):
        raise ValueError(
            f"until_s must be None or 0 <= until_s < since_s ({since_s!r}), got {until_s!r}"
        )
    if resolution_s is not None and not (_number(resolution_s) and resolution_s > 0):
        raise ValueError(f"resolution_s must be None or a positive number, got {resolution_s!r}")


def _number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
