"""Plugin calls in worker processes: measured with psutil, escalated, throttled by duty cycle.

Every ``interval_ms`` the monitor reads, in a thread, the CPU time and resident memory of each
worker running a watched plugin call, then:

* memory, per call: what the call added to its worker's resident memory (over what the worker
  said it had at the start) warns at ``warn_ratio`` of ``memory_mb`` and terminates the call
  over it;
* CPU, per plugin: the CPU its calls used, whatever worker ran them, as a share of the machine
  over ``cpu_window_ms``, so that a runaway made of many short calls is measured as one. At
  ``warn_ratio`` of ``cpu_percent`` it warns; over it the plugin is throttled: each of its
  running calls' workers is stopped (SIGSTOP) for most of each ``throttle_period_ms`` (a duty
  cycle sized to hold the plugin under its share, split among its calls, a smaller one each
  window it still measures over; a running slice the loop ends late is followed by a stop as
  much longer), and calls that start while it is throttled are throttled
  from their start. Still over ``terminate_after_s`` after the throttle, its running calls are
  terminated. Measured under half its share while throttled, it is let go.

A call only ever gets readings taken while it ran: a worker that moved on to another call
between the reading and its use does not pass one call's usage to the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import anyio
import psutil

from runtime.clock import Clock
from runtime.config import QuotaSection

from .escalation import CpuShare, DutyCycle, Escalation
from .notify import Notifier
from .plugins import MIB, Call

__all__ = ["PluginCpu", "ProcessMonitor", "Reading", "Tracked", "in_thread", "read_processes"]

Terminate = Callable[[Call, str, float, float, str], None]
T = TypeVar("T")
RELEASE_RATIO = 0.5  # a throttled plugin measured under half its share is let go,
RELEASE_AFTER_WINDOWS = 2  # but not before it has been measured throttled this many windows
_OVERRUN_RATIO = 1.01  # a running slice this much longer than planned is compensated
_BIND_POLL_S = 0.002  # how often a throttled call not yet on its worker is looked at


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` in a worker thread (the default ``offload``)."""
    return await anyio.to_thread.run_sync(fn, *args)


class Reading(NamedTuple):
    """A worker process's cumulative CPU seconds and its resident bytes."""

    cpu_s: float
    rss_bytes: int


def read_processes(pids: list[int], cache: dict[int, psutil.Process]) -> dict[int, Reading]:
    """Read each pid (blocking: run it in a thread); pids that are gone are left out.
    ``cache`` keeps the psutil handles between calls and drops the ones no longer asked for."""
    for pid in set(cache) - set(pids):
        del cache[pid]
    found: dict[int, Reading] = {}
    for pid in pids:
        try:
            process = cache.get(pid) or cache.setdefault(pid, psutil.Process(pid))
            times = process.cpu_times()
            found[pid] = Reading(times.user + times.system, process.memory_info().rss)
        except psutil.Error:
            cache.pop(pid, None)
    return found


class Tracked:
    """What the monitor keeps about one running watched call."""

    __slots__ = ("active", "call", "cpu_read", "memory", "peak_growth_bytes", "scope")

    def __init__(self, call: Call, settings: QuotaSection) -> None:
        self.call = call
        self.active = True
        self.memory = Escalation(warn_ratio=settings.warn_ratio, throttles=False,
                                 terminate_after_s=0.0)  # fmt: skip
        self.scope: anyio.CancelScope | None = None  # its duty cycle, while throttled
        self.peak_growth_bytes = 0
        self.cpu_read: tuple[float, float] | None = None  # first and last CPU seconds read


class PluginCpu:
    """One plugin's CPU across its process calls: the share, its escalation, its throttle."""

    __slots__ = ("adapted_at", "calls", "cpu_s", "duty", "escalation", "idle_since", "share",
                 "throttled_at")  # fmt: skip

    def __init__(self, settings: QuotaSection, cpus: int) -> None:
        self.share = CpuShare(settings.cpu_window_ms / 1000, cpus)
        self.escalation = Escalation(warn_ratio=settings.warn_ratio, throttles=True,
                                     terminate_after_s=settings.terminate_after_s,
                                     release_ratio=RELEASE_RATIO)  # fmt: skip
        self.cpu_s = 0.0  # CPU seconds its calls used, counted as readings came
        self.calls: set[Tracked] = set()
        self.duty: DutyCycle | None = None  # set while throttled
        self.adapted_at = 0.0
        self.throttled_at = 0.0
        self.idle_since: float | None = None


class ProcessMonitor:
    """Measures watched plugin calls and escalates (see the module docstring).

    ``read`` reads pids (default: ``read_processes`` with psutil) and ``offload`` runs it off
    the loop (default: in a thread); ``terminate`` ends a call for a quota (the gate's).
    """

    def __init__(
        self,
        settings: QuotaSection,
        *,
        clock: Clock,
        notifier: Notifier,
        terminate: Terminate,
        cpus: int,
        read: Callable[[list[int]], dict[int, Reading]] | None = None,
        offload: Callable[..., Awaitable[Any]] = in_thread,
    ) -> None:
        self.settings = settings
        self.cpus = cpus
        self._clock = clock
        self._notifier = notifier
        self._terminate = terminate
        cache: dict[int, psutil.Process] = {}
        self._read = read or (lambda pids: read_processes(pids, cache))
        self._offload = offload
        self._tracked: dict[int, Tracked] = {}  # by task id
        self._plugins: dict[str, PluginCpu] = {}  # by plugin name, while active
        self._tg: anyio.abc.TaskGroup | None = None
        self.rounds = 0

    def __len__(self) -> int:
        return len(self._tracked)

    def plugin_cpu(self, name: str) -> PluginCpu | None:
        """The CPU state of plugin ``name`` while it is measured."""
        return self._plugins.get(name)

    # -- tracking -----------------------------------------------------------------------------

    def track(self, call: Call) -> None:
        """A watched call starts (throttled from the start when its plugin is)."""
        tracked = Tracked(call, self.settings)
        call.tracked = tracked
        self._tracked[call.task.id] = tracked
        if call.plugin.quota.cpu_percent is None:
            return
        state = self._plugins.get(call.plugin.name)
        if state is None:
            state = self._plugins[call.plugin.name] = PluginCpu(self.settings, self.cpus)
        state.calls.add(tracked)
        state.idle_since = None
        if state.duty is not None:
            self._throttle_call(tracked)

    def untrack(self, call: Call) -> None:
        """A watched call ended: stop throttling it, add up what it used."""
        tracked = self._tracked.pop(call.task.id, None)
        state = self._plugins.get(call.plugin.name)
        if tracked is not None:
            tracked.active = False
            if tracked.scope is not None:
                tracked.scope.cancel()
            if state is not None:
                state.calls.discard(tracked)
        watch, record = call.watch, call.plugin.record
        if watch is None:
            return
        read_s = 0.0
        if tracked is not None and tracked.cpu_read is not None:
            read_s = tracked.cpu_read[1] - tracked.cpu_read[0]
        used_s = read_s if watch.cpu_s is None else watch.cpu_s  # killed: what was read
        record.cpu_s += used_s
        if state is not None:  # what the readings missed (before the first, after the last)
            state.cpu_s += max(0.0, used_s - read_s)
        peak = 0 if tracked is None else tracked.peak_growth_bytes
        if watch.peak_rss_bytes is not None and watch.start_rss_bytes is not None:
            peak = max(peak, watch.peak_rss_bytes - watch.start_rss_bytes)
        record.peak_memory_bytes = max(record.peak_memory_bytes, peak)

    # -- measuring ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Measure every ``interval_ms`` until cancelled; duty cycles run in its task group."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                while True:
                    await self._clock.sleep(self.settings.interval_ms / 1000)
                    await self.measure()
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def measure(self) -> None:
        """One round: read the running watched calls' workers (in a thread), then judge."""
        targets = [(t, t.call.watch.pid) for t in self._tracked.values()
                   if t.call.watch is not None and t.call.watch.running
                   and t.call.watch.pid is not None]  # fmt: skip
        readings: dict[int, Reading] = {}
        if targets:
            readings = await self._offload(self._read, [pid for _, pid in targets])
        now = self._clock.now()
        self.rounds += 1
        for tracked, pid in targets:
            reading = readings.get(pid)
            if tracked.active and reading is not None and not tracked.call.terminated:
                self._count_cpu(tracked, reading)
                self._judge_memory(tracked, reading)
        for name, state in list(self._plugins.items()):
            self._judge_cpu(name, state, now)

    def _count_cpu(self, tracked: Tracked, reading: Reading) -> None:
        if tracked.cpu_read is None:
            tracked.cpu_read = (reading.cpu_s, reading.cpu_s)
            return
        first, last = tracked.cpu_read
        tracked.cpu_read = (first, reading.cpu_s)
        state = self._plugins.get(tracked.call.plugin.name)
        if state is not None:
            state.cpu_s += max(0.0, reading.cpu_s - last)

    def _judge_memory(self, tracked: Tracked, reading: Reading) -> None:
        call = tracked.call
        start = None if call.watch is None else call.watch.start_rss_bytes
        if start is None:
            return  # the worker has not said what it had at the start yet
        growth = max(0, reading.rss_bytes - start)
        tracked.peak_growth_bytes = max(tracked.peak_growth_bytes, growth)
        limit_mb = call.plugin.quota.memory_mb
        if limit_mb is None:
            return
        measured_mb = growth / MIB
        for step in tracked.memory.observe(measured_mb, limit_mb, self._clock.now()):
            if step == "warn":
                self._warn(call, "memory", measured_mb, limit_mb)
            elif step == "terminate":
                reason = f"added {measured_mb:.1f} MB to its worker's memory"
                self._terminate(call, "memory", measured_mb, limit_mb, reason)

    def _judge_cpu(self, name: str, state: PluginCpu, now: float) -> None:
        share = state.share.add(now, state.cpu_s)
        if not state.calls:
            state.idle_since = now if state.idle_since is None else state.idle_since
            if now - state.idle_since >= state.share.window_s:  # idle a whole window: forget
                del self._plugins[name]
                return
        limit = next((t.call.plugin.quota.cpu_percent for t in state.calls), None)
        if share is None or limit is None:
            return
        window_s = state.share.window_s
        settling = (
            state.duty is not None and now - state.throttled_at < RELEASE_AFTER_WINDOWS * window_s
        )
        if settling and share <= limit:
            return  # a short span just after the throttle says too little to let it go
        for step in state.escalation.observe(share, limit, now):
            self._cpu_step(name, state, step, share, limit, now)
        if state.duty is not None and now - state.adapted_at >= window_s:
            state.adapted_at = now
            state.duty.adapt(share, limit)

    def _cpu_step(self, name: str, state: PluginCpu, step: str, share: float, limit: float,
                  now: float) -> None:  # fmt: skip
        calls = sorted(state.calls, key=lambda t: t.call.task.id)
        if step == "warn" and calls:
            self._warn(calls[0].call, "cpu", share, limit)
        elif step == "throttle":
            state.duty = DutyCycle(limit, self.cpus)
            state.adapted_at = state.throttled_at = now
            state.share.reset()  # from now on it measures the throttled plugin
            self._notifier.throttled(name, "cpu", share, limit, None)
            for tracked in calls:
                self._throttle_call(tracked)
        elif step == "recover" and state.duty is not None:
            state.duty = None
            for tracked in calls:
                if tracked.scope is not None:
                    tracked.scope.cancel()
        elif step == "terminate":
            reason = f"used {share:.1f}% of the machine while throttled"
            for tracked in calls:
                self._terminate(tracked.call, "cpu", share, limit, reason)

    def _warn(self, call: Call, quota: str, measured: float, limit: float) -> None:
        call.plugin.record.warnings += 1
        self._notifier.exceeded(call.plugin.name, quota, measured, limit)

    # -- throttling ---------------------------------------------------------------------------

    def _throttle_call(self, tracked: Tracked) -> None:
        call = tracked.call
        if not call.throttled:
            call.throttled = True
            call.plugin.record.throttled += 1
        if self._tg is not None and tracked.scope is None:
            tracked.scope = anyio.CancelScope()
            self._tg.start_soon(self._duty_cycle, tracked, tracked.scope)

    async def _duty_cycle(self, tracked: Tracked, scope: anyio.CancelScope) -> None:
        """Let the call's worker run its part of each period, stopped the rest, until the call
        ends or its plugin is let go."""
        watch = tracked.call.watch
        assert watch is not None
        period_s = self.settings.throttle_period_ms / 1000
        with scope:
            try:
                while tracked.active:
                    state = self._plugins.get(tracked.call.plugin.name)
                    if state is None or state.duty is None:
                        break
                    if not watch.running:  # its worker has not taken the call yet: it
                        await self._clock.sleep(_BIND_POLL_S)  # will in a few ms
                        continue
                    running_s, stopped_s = state.duty.split(period_s, len(state.calls))
                    began = self._clock.now()
                    await self._clock.sleep(running_s)
                    ran_s = self._clock.now() - began
                    if stopped_s > 0 and watch.pause():
                        # A busy loop wakes us late: stop it longer in proportion, so that
                        # the share it gets stays the duty cycle's whatever the lag.
                        if ran_s > running_s * _OVERRUN_RATIO:
                            stopped_s *= ran_s / running_s
                        await self._clock.sleep(stopped_s)
                        watch.resume()
            finally:
                watch.resume()
                tracked.scope = None
