"""Plugin calls in worker processes: measured with psutil, escalated, throttled by duty cycle.

Every ``interval_ms`` the monitor reads, in a thread, the CPU time and resident memory of each
worker running a watched plugin call, then per call:

* memory: what the call added to its worker's resident memory (over what the worker said it
  had at the start) warns at ``warn_ratio`` of ``memory_mb`` and terminates the call over it;
* CPU: the worker's share of the machine over ``cpu_window_ms`` warns at ``warn_ratio`` of
  ``cpu_percent`` and, over it, throttles the call: its worker is stopped (SIGSTOP) for part
  of each ``throttle_period_ms`` (the duty cycle), a smaller part each window it still
  measures over; still over ``terminate_after_s`` after that, the call is terminated.

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

__all__ = ["ProcessMonitor", "Reading", "Tracked", "in_thread", "read_processes"]

Terminate = Callable[[Call, str, float, float, str], None]
T = TypeVar("T")


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

    __slots__ = ("active", "adapted_at", "call", "cpu", "cpu_read", "duty", "memory",
                 "peak_growth_bytes", "scope", "share")  # fmt: skip

    def __init__(self, call: Call, settings: QuotaSection, cpus: int) -> None:
        self.call = call
        self.active = True
        self.share = CpuShare(settings.cpu_window_ms / 1000, cpus)
        self.cpu = Escalation(warn_ratio=settings.warn_ratio, throttles=True,
                              terminate_after_s=settings.terminate_after_s)  # fmt: skip
        self.memory = Escalation(warn_ratio=settings.warn_ratio, throttles=False,
                                 terminate_after_s=0.0)  # fmt: skip
        self.duty: DutyCycle | None = None
        self.adapted_at = 0.0
        self.scope: anyio.CancelScope | None = None
        self.peak_growth_bytes = 0
        self.cpu_read: tuple[float, float] | None = None  # first and last CPU seconds read


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
        self._tg: anyio.abc.TaskGroup | None = None
        self.rounds = 0

    def __len__(self) -> int:
        return len(self._tracked)

    # -- tracking -----------------------------------------------------------------------------

    def track(self, call: Call) -> None:
        """A watched call starts."""
        tracked = Tracked(call, self.settings, self.cpus)
        call.tracked = tracked
        self._tracked[call.task.id] = tracked

    def untrack(self, call: Call) -> None:
        """A watched call ended: stop throttling it, add up what it used."""
        tracked = self._tracked.pop(call.task.id, None)
        if tracked is not None:
            tracked.active = False
            if tracked.scope is not None:
                tracked.scope.cancel()
        watch, record = call.watch, call.plugin.record
        if watch is None:
            return
        if watch.cpu_s is not None:
            record.cpu_s += watch.cpu_s
        elif tracked is not None and tracked.cpu_read is not None:  # killed: what was read
            first, last = tracked.cpu_read
            record.cpu_s += last - first
        peak = 0 if tracked is None else tracked.peak_growth_bytes
        if watch.peak_rss_bytes is not None and watch.start_rss_bytes is not None:
            peak = max(peak, watch.peak_rss_bytes - watch.start_rss_bytes)
        record.peak_memory_bytes = max(record.peak_memory_bytes, peak)

    # -- running ------------------------------------------------------------------------------

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
        if not targets:
            return
        readings: dict[int, Reading] = await self._offload(self._read, [pid for _, pid in targets])
        now = self._clock.now()
        self.rounds += 1
        for tracked, pid in targets:
            reading = readings.get(pid)
            if tracked.active and reading is not None and not tracked.call.terminated:
                self.judge(tracked, reading, now)

    def judge(self, tracked: Tracked, reading: Reading, now: float) -> None:
        """Escalate one call's memory and CPU quotas on a reading taken while it ran."""
        first = reading.cpu_s if tracked.cpu_read is None else tracked.cpu_read[0]
        tracked.cpu_read = (first, reading.cpu_s)
        self._judge_memory(tracked, reading)
        if not tracked.call.terminated:
            self._judge_cpu(tracked, reading, now)

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

    def _judge_cpu(self, tracked: Tracked, reading: Reading, now: float) -> None:
        share = tracked.share.add(now, reading.cpu_s)
        limit = tracked.call.plugin.quota.cpu_percent
        if share is None or limit is None:
            return
        call = tracked.call
        for step in tracked.cpu.observe(share, limit, now):
            if step == "warn":
                self._warn(call, "cpu", share, limit)
            elif step == "throttle":
                self._throttle(tracked, share, limit, now)
            elif step == "terminate":
                reason = f"used {share:.1f}% of the machine while throttled"
                self._terminate(call, "cpu", share, limit, reason)
        window_s = tracked.share.window_s
        if tracked.duty is not None and now - tracked.adapted_at >= window_s:
            tracked.adapted_at = now
            tracked.duty.adapt(share, limit)

    def _warn(self, call: Call, quota: str, measured: float, limit: float) -> None:
        call.plugin.record.warnings += 1
        self._notifier.exceeded(call.plugin.name, quota, measured, limit)

    def _throttle(self, tracked: Tracked, share: float, limit: float, now: float) -> None:
        call = tracked.call
        tracked.duty = DutyCycle(limit, self.cpus)
        tracked.adapted_at = now
        tracked.share.reset()  # from now on it measures the throttled process
        if not call.throttled:
            call.throttled = True
            call.plugin.record.throttled += 1
        self._notifier.throttled(call.plugin.name, "cpu", share, limit, None)
        if self._tg is not None:
            self._tg.start_soon(self._duty_cycle, tracked)

    async def _duty_cycle(self, tracked: Tracked) -> None:
        """Let the call's worker run ``fraction`` of each period, stopped the rest."""
        watch, duty = tracked.call.watch, tracked.duty
        assert watch is not None and duty is not None
        with anyio.CancelScope() as tracked.scope:
            if not tracked.active:
                tracked.scope.cancel()
            try:
                while watch.running:
                    running_s, stopped_s = duty.split(self.settings.throttle_period_ms / 1000)
                    await self._clock.sleep(running_s)
                    if stopped_s > 0 and watch.pause():
                        await self._clock.sleep(stopped_s)
                        watch.resume()
            finally:
                watch.resume()
