"""Process quotas on the fake clock: a fake worker pool and scripted psutil readings drive the
monitor through warn, throttle (the duty cycle's stops and continues) and terminate, and the
usage that ends up in the statistics."""

from __future__ import annotations

import pytest

from actors.quota.monitor import Reading, read_processes
from runtime.clock import FakeClock
from runtime.config import PluginQuota
from runtime.events import PluginTerminated, PluginThrottled, QuotaExceeded
from runtime.exceptions import QuotaExceeded as QuotaError

from .test_quota_kit import MIB, Harness, drain, enforced, quota_config

START_RSS = 20 * MIB


def explode() -> None:
    raise MemoryError


# -- memory ------------------------------------------------------------------------------------


async def test_memory_warns_near_the_quota_and_terminates_over_it(clock: FakeClock) -> None:
    """What a call adds to its worker: 85 of 100 MB warns, 120 MB terminates and kills it."""
    async with enforced(clock, quota_config(interval_ms=100)) as h:
        h.quotas.register("hog", memory_mb=100)
        with h.bus.subscribe(QuotaExceeded, PluginTerminated) as events:
            handle = h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="hog")
            await clock.advance(0)
            (pid,) = h.pool.running()
            h.readings[pid] = Reading(1.0, START_RSS + 50 * MIB)
            await clock.advance(0.1)
            assert drain(events) == []
            h.readings[pid] = Reading(1.0, START_RSS + 85 * MIB)
            await clock.advance(0.1)
            (warning,) = drain(events)
            h.readings[pid] = Reading(1.2, START_RSS + 120 * MIB)
            await clock.advance(0.1)
            exceeded, terminated = drain(events)
        assert (warning.quota, warning.measured, warning.limit) == ("memory", 85.0, 100.0)  # type: ignore[attr-defined]
        assert isinstance(exceeded, QuotaExceeded) and exceeded.measured == 120.0
        assert isinstance(terminated, PluginTerminated) and terminated.pid == pid
        with pytest.raises(QuotaError, match=r"memory quota \(120 > 100\)"):
            await handle.result()
        assert h.pool.cancelled == [pid]  # the pool kills a cancelled call's worker
        stats = h.quotas.statistics().plugins["hog"]
        assert (stats.warnings, stats.terminated, stats.failed) == (1, 1, 1)
        assert stats.peak_memory_mb == 120.0
        assert stats.cpu_s == pytest.approx(0.2)  # killed: what the readings saw it use


async def test_memory_is_not_judged_before_the_worker_says_what_it_had(clock: FakeClock) -> None:
    """Without the worker's start memory there is no baseline: nothing is judged."""
    async with enforced(clock) as h:
        h.quotas.register("hog", memory_mb=10)
        h.pool.start_rss_bytes = None  # type: ignore[assignment]
        handle = h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="hog")
        await clock.advance(0)
        (pid,) = h.pool.running()
        h.readings[pid] = Reading(0.0, 500 * MIB)
        await clock.advance(0.5)
        assert h.quotas.statistics().plugins["hog"].terminated == 0
        h.pool.finish(pid)
        assert await handle.result() == 1


async def test_an_allocation_the_rlimit_refused_counts_as_a_memory_termination(
    clock: FakeClock,
) -> None:
    """MemoryError from a watched call: counted, published, and the error says why."""
    async with enforced(clock) as h:
        h.quotas.register("hog", memory_mb=64)
        with h.bus.subscribe(PluginTerminated) as events:
            handle = h.scheduler.spawn(explode, task_class="plugin_cpu", plugin="hog")
            await clock.advance(0)
            (pid,) = h.pool.running()
            h.pool.finish(pid)
            with pytest.raises(MemoryError) as info:
                await handle.result()
            (event,) = drain(events)
        assert event.pid == pid and event.quota == "memory"  # type: ignore[attr-defined]
        assert "exceeded its memory quota (64 MB)" in info.value.__notes__[0]
        assert h.quotas.statistics().plugins["hog"].terminated == 1


async def test_a_memory_error_without_a_memory_quota_is_just_an_error(clock: FakeClock) -> None:
    """A plugin with no memory quota whose call raises MemoryError is not terminated."""
    async with enforced(clock) as h:
        h.quotas.register("any", timeout_s=10)
        handle = h.scheduler.spawn(explode, task_class="plugin_cpu", plugin="any")
        await clock.advance(0)
        h.pool.finish(h.pool.running()[0])
        with pytest.raises(MemoryError):
            await handle.result()
        stats = h.quotas.statistics().plugins["any"]
        assert (stats.terminated, stats.failed) == (0, 1)


# -- CPU ---------------------------------------------------------------------------------------


async def feed_full_core(h: Harness, pid: int, seconds: float, *, step_s: float = 0.1) -> None:
    """Advance ``seconds`` with the worker using a whole core (reading before each step)."""
    for _ in range(round(seconds / step_s)):
        cpu_s = h.readings[pid].cpu_s if pid in h.readings else 0.0
        h.readings[pid] = Reading(cpu_s + step_s, START_RSS)
        await h.clock.advance(step_s)


async def test_cpu_over_its_share_is_throttled_by_a_duty_cycle(clock: FakeClock) -> None:
    """A worker over its CPU share is warned, then stopped 84 ms of every 100 ms."""
    config = quota_config(interval_ms=100, cpu_window_ms=1000, throttle_period_ms=100)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("spinner", cpu_percent=10)
        with h.bus.subscribe(QuotaExceeded, PluginThrottled) as events:
            handle = h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="spinner")
            await clock.advance(0)
            (pid,) = h.pool.running()
            await feed_full_core(h, pid, 0.5)
            assert drain(events) == []  # half a window is not measured yet
            await feed_full_core(h, pid, 0.1)
            warning, throttled = drain(events)
        assert (warning.quota, warning.measured) == ("cpu", pytest.approx(50.0))  # type: ignore[attr-defined]
        assert isinstance(throttled, PluginThrottled) and throttled.throttle_s is None
        control = h.pool.controls[pid]
        await clock.advance(0.016)
        assert control.log == ["stop"] and control.held
        await clock.advance(0.084)
        assert control.log == ["stop", "cont"] and not control.held
        await clock.advance(0.2)
        assert control.log == ["stop", "cont"] * 3
        h.pool.finish(pid)
        assert await handle.result() == 1
        await clock.advance(1.0)
        assert control.log == ["stop", "cont"] * 3 and not control.held  # no stops after it ends
        stats = h.quotas.statistics().plugins["spinner"]
        assert (stats.warnings, stats.throttled, stats.terminated) == (1, 1, 0)


async def test_cpu_still_over_after_the_throttle_terminates_the_call(clock: FakeClock) -> None:
    """A call measured over its share terminate_after_s after it was throttled is ended."""
    config = quota_config(interval_ms=100, cpu_window_ms=400, terminate_after_s=1.0)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("spinner", cpu_percent=10)
        with h.bus.subscribe(PluginTerminated) as events:
            handle = h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="spinner")
            await clock.advance(0)
            (pid,) = h.pool.running()
            await feed_full_core(h, pid, 1.2)  # throttled at 0.3 s; it ignores the stops
            assert drain(events) == []
            await feed_full_core(h, pid, 0.1)  # still over 1 s after the throttle
            (terminated,) = drain(events)
        assert terminated.quota == "cpu" and terminated.pid == pid  # type: ignore[attr-defined]
        with pytest.raises(QuotaError, match="cpu quota"):
            await handle.result()


async def test_a_throttled_duty_cycle_shrinks_while_the_share_stays_over(
    clock: FakeClock,
) -> None:
    """A process over its share after a window of throttling runs a smaller part of each period."""
    config = quota_config(interval_ms=100, cpu_window_ms=400, terminate_after_s=60.0)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("threads", cpu_percent=10)
        h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="threads")
        await clock.advance(0)
        (pid,) = h.pool.running()
        await feed_full_core(h, pid, 0.3)
        state = h.quotas._monitor.plugin_cpu("threads")
        assert state is not None and state.duty is not None
        assert state.duty.fraction == pytest.approx(0.16)
        await feed_full_core(h, pid, 0.8)
        assert state.duty.fraction < 0.16
        h.pool.finish(pid)


async def test_a_runaway_of_short_calls_is_measured_and_throttled_as_one(
    clock: FakeClock,
) -> None:
    """Short back-to-back calls are measured as one plugin; its next call starts throttled."""
    config = quota_config(interval_ms=100, cpu_window_ms=1000)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("runaway", cpu_percent=10)
        h.pool.cpu_s = 0.2  # what each call reports it used
        with h.bus.subscribe(PluginThrottled) as events:
            for _ in range(4):
                handle = h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="runaway")
                await clock.advance(0)
                (pid,) = h.pool.running()
                await feed_full_core(h, pid, 0.2)
                h.pool.finish(pid)
                assert await handle.result() == 1
            (throttled,) = drain(events)
        assert throttled.quota == "cpu"  # type: ignore[attr-defined]
        h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="runaway")
        await clock.advance(0)
        (pid,) = h.pool.running()
        await clock.advance(0.05)
        assert h.pool.controls[pid].log == ["stop"]  # throttled from the start
        h.pool.finish(pid)
        assert h.quotas.statistics().plugins["runaway"].throttled >= 1


async def test_a_throttled_plugin_that_calms_down_is_let_go(clock: FakeClock) -> None:
    """Measured under half its share while throttled, the plugin's calls run free again."""
    config = quota_config(interval_ms=100, cpu_window_ms=400)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("bursty", cpu_percent=10)
        h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="bursty")
        await clock.advance(0)
        (pid,) = h.pool.running()
        await feed_full_core(h, pid, 0.3)
        state = h.quotas._monitor.plugin_cpu("bursty")
        assert state is not None and state.duty is not None
        await clock.advance(0.7)  # no CPU used since, but the throttle holds two windows
        assert state.duty is not None
        await clock.advance(0.2)  # past 0.8 s after the throttle: 0% < 5%, let go
        assert state.duty is None
        control = h.pool.controls[pid]
        stops = control.log.count("stop")
        await clock.advance(1.0)
        assert control.log.count("stop") == stops and not control.held
        h.pool.finish(pid)


async def test_two_throttled_calls_share_the_duty_cycle(clock: FakeClock) -> None:
    """Two calls of a throttled plugin each run half the plugin's part of each period."""
    config = quota_config(interval_ms=100, cpu_window_ms=400, throttle_period_ms=100)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("pair", cpu_percent=10)
        for _ in range(2):
            h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="pair")
        await clock.advance(0)
        first, second = h.pool.running()
        for _ in range(3):
            for pid in (first, second):
                cpu_s = h.readings[pid].cpu_s if pid in h.readings else 0.0
                h.readings[pid] = Reading(cpu_s + 0.1, START_RSS)
            await clock.advance(0.1)
        assert h.pool.controls[first].log == []
        await clock.advance(0.008)  # 0.16 of 100 ms, split in two
        assert h.pool.controls[first].log == ["stop"] and h.pool.controls[second].log == ["stop"]
        for pid in (first, second):
            h.pool.finish(pid)


async def test_a_finished_call_adds_its_cpu_and_peak_memory(clock: FakeClock) -> None:
    """The usage the worker reports (CPU seconds, peak over its start) goes to the plugin."""
    async with enforced(clock) as h:
        h.quotas.register("tool", timeout_s=30)
        for _ in range(2):
            handle = h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="tool")
            await clock.advance(0)
            assert h.quotas.statistics().watched_processes == 1
            h.pool.finish(h.pool.running()[0])
            assert await handle.result() == 1
        stats = h.quotas.statistics()
        assert stats.watched_processes == 0
        assert stats.plugins["tool"].cpu_s == pytest.approx(0.5)
        assert stats.plugins["tool"].peak_memory_mb == pytest.approx(10.0)


async def test_loop_and_thread_tasks_of_a_plugin_are_not_watched(clock: FakeClock) -> None:
    """Only process tasks run under limits and are measured."""
    async with enforced(clock) as h:
        h.quotas.register("hog", memory_mb=10, cpu_percent=5)
        assert await h.scheduler.submit(abs, -1, run_in="thread", plugin="hog") == 1
        assert h.quotas.statistics().plugins["hog"].cpu_s == 0.0


async def test_config_plugins_limit_process_calls_with_rlimits(clock: FakeClock) -> None:
    """A process call runs under 2x its memory quota and a CPU-time backstop of its limit."""
    config = quota_config({"tool": PluginQuota(memory_mb=50, timeout_s=2.5)})
    async with enforced(clock, config, cpu_count=4) as h:
        h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="tool")
        await clock.advance(0)
        call = next(iter(h.quotas._gate.calls.values()))
        watch = call.watch
        assert watch is not None
        assert (watch.memory_limit_bytes, watch.cpu_limit_s) == (100 * MIB, 11)  # type: ignore[attr-defined]
        h.pool.finish(h.pool.running()[0])


def test_read_processes_reads_live_pids_and_leaves_out_gone_ones() -> None:
    """psutil readings for this process; a pid that does not exist is left out and uncached."""
    import os

    cache: dict[int, object] = {}
    found = read_processes([os.getpid(), 2**22 + 12345], cache)  # type: ignore[arg-type]
    assert set(found) == {os.getpid()}
    assert found[os.getpid()].rss_bytes > 0 and found[os.getpid()].cpu_s > 0
    assert set(cache) == {os.getpid()}
    read_processes([], cache)  # type: ignore[arg-type]
    assert cache == {}


class LateClock(FakeClock):
    """A fake clock on which a sleep of ``late_for`` seconds wakes ``lag_s`` late (a busy
    loop)."""

    late_for = 0.016
    lag_s = 0.016

    async def sleep(self, seconds: float) -> None:
        late = abs(seconds - self.late_for) < 1e-9
        await super().sleep(seconds + (self.lag_s if late else 0.0))


async def test_a_running_slice_the_loop_ends_late_is_followed_by_a_longer_stop() -> None:
    """A running slice ended late (a busy loop) is followed by a stop as much longer."""
    clock = LateClock()
    config = quota_config(interval_ms=100, cpu_window_ms=1000, throttle_period_ms=100)
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register("spinner", cpu_percent=10)
        h.scheduler.spawn(abs, -1, task_class="plugin_cpu", plugin="spinner")
        await clock.advance(0)
        (pid,) = h.pool.running()
        await feed_full_core(h, pid, 0.6)  # throttled at 0.6 s
        control = h.pool.controls[pid]
        await clock.advance(0.032)
        assert control.log == ["stop"]
        await clock.advance(0.167)
        assert control.log == ["stop"]
        await clock.advance(0.002)
        assert control.log == ["stop", "cont"]
        h.pool.finish(pid)
