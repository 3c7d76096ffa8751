"""The Sampler service: gauges, subscribers, watched plugins, history, reloads and restarts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from actors.sampler import PluginStats, Sample, Sampler
from actors.sampler.collector import Collector
from actors.sampler.history import SampleHistory
from runtime.actor import ActorContext, ActorRef
from runtime.clock import FakeClock, settle
from runtime.exceptions import ChannelClosed
from runtime.supervisor import Supervisor
from runtime.testing import capture_logs

from .test_sampler_kit import (
    FakeCollector,
    config_with,
    context,
    inline,
    make_sampler,
    running_sampler,
    section,
)

NO_SUCH_PID = 2**31 - 1  # above any pid_max


# -- latest and gauges -------------------------------------------------------------------------


async def test_latest_is_none_before_the_first_sample_then_the_newest(clock: FakeClock) -> None:
    """latest() is None until one interval has passed, then always the newest sample."""
    async with running_sampler(clock, FakeCollector()) as sampler:
        assert sampler.latest() is None
        await clock.advance(1.0)
        first = sampler.latest()
        await clock.advance(1.0)
        second = sampler.latest()
    assert first is not None and second is not None
    assert (first.cpu_percent, second.cpu_percent) == (1.0, 2.0)
    assert second.timestamp == clock.wall()


async def test_real_samples_appear_as_gauges_in_the_registry(clock: FakeClock) -> None:
    """With the real collector, cpu_percent, memory_percent, process_rss_bytes and per-core
    cpu_percent{core="0"} are in the registry for alert rules to read."""
    sampler = Sampler(
        section(), context(clock), collector=lambda c: Collector(cgroup_root=None), offload=inline
    )
    async with sampler.running():
        await clock.advance(1.0)
        sample = sampler.latest()
    metrics = sampler.metrics
    assert sample is not None
    assert metrics.get("cpu_percent") == sample.cpu_percent
    assert metrics.get("memory_percent") == sample.memory_percent
    assert metrics.get("process_rss_bytes") == sample.process_rss_bytes > 0
    assert metrics.get("cpu_percent", core="0") == sample.cpu_percent_per_core[0]
    assert metrics.get("load1") == sample.load1


async def test_a_plugins_gauges_go_when_its_process_goes(clock: FakeClock) -> None:
    """plugin_rss_bytes{plugin="weather"} is set while the plugin has figures, removed after."""
    collector = FakeCollector()
    collector.plugins = {"weather": PluginStats(processes=1, rss_bytes=4096)}
    async with running_sampler(clock, collector) as sampler:
        await clock.advance(1.0)
        assert sampler.metrics.get("plugin_rss_bytes", plugin="weather") == 4096
        collector.plugins = {}
        await clock.advance(1.0)
        assert sampler.metrics.get("plugin_rss_bytes", plugin="weather") is None
        assert sampler.metrics.get("cpu_percent") == 2.0


async def test_without_a_registry_in_the_context_the_sampler_keeps_its_own(
    clock: FakeClock,
) -> None:
    """A standalone context has no registry: the sampler makes one and writes to it."""
    sampler = Sampler(
        section(), ActorContext(clock=clock), collector=lambda c: FakeCollector(), offload=inline
    )
    async with sampler.running():
        await clock.advance(1.0)
    assert sampler.metrics.get("cpu_percent") == 1.0


async def test_collections_run_in_a_worker_thread_by_default(clock: FakeClock) -> None:
    """Without an offload given, blocking calls run in a thread, not on the event loop."""
    sampler = Sampler(section(), context(clock))
    loop_thread = threading.get_ident()
    assert await sampler._offload(threading.get_ident) != loop_thread


def test_a_whole_config_or_its_sampler_section_is_accepted(clock: FakeClock) -> None:
    """Sampler(Config, ...) uses config.sampler; Sampler(SamplerSection, ...) uses it as is."""
    whole = Sampler(config_with(interval_ms=250), context(clock))
    part = Sampler(section(interval_ms=500), context(clock))
    assert (whole.config.interval_ms, part.config.interval_ms) == (250, 500)


# -- subscribers -------------------------------------------------------------------------------


async def test_a_subscriber_receives_every_sample_in_order(clock: FakeClock) -> None:
    """A subscriber that keeps up gets each sample once, in order."""
    async with running_sampler(clock, FakeCollector()) as sampler:
        received: list[float] = []

        async def consume() -> None:
            async for sample in sampler.subscribe():
                received.append(sample.cpu_percent)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await clock.advance(3.0)
            tg.cancel_scope.cancel()
    assert received == [1.0, 2.0, 3.0]


async def test_a_slow_subscriber_loses_its_oldest_samples(clock: FakeClock) -> None:
    """Capacity 2, five samples unread: the newest two are kept, three dropped and counted."""
    async with running_sampler(clock, FakeCollector()) as sampler:
        sub = sampler.subscribe(capacity=2)
        await clock.advance(5.0)
        kept = [sub.receive_nowait().cpu_percent, sub.receive_nowait().cpu_percent]
        assert sub.dropped == 3
        assert sampler.statistics().subscriber_drops == 3
        sub.close()
        assert sampler.statistics().subscribers == 0
        assert sampler.statistics().subscriber_drops == 3  # the closed one's losses are kept
    assert kept == [4.0, 5.0]


async def test_subscriptions_end_when_the_sampler_stops(clock: FakeClock) -> None:
    """Stopping the sampler ends every subscriber's iteration; a later subscribe is closed."""
    sampler = make_sampler(clock, FakeCollector())
    async with sampler.running():
        sub = sampler.subscribe()
        await clock.advance(1.0)
    assert [s.cpu_percent async for s in sub] == [1.0]
    late = sampler.subscribe()
    assert late.closed
    with pytest.raises(ChannelClosed):
        await late.receive()


def test_a_subscription_capacity_below_one_is_refused(clock: FakeClock) -> None:
    """subscribe(capacity=0) raises ValueError."""
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        make_sampler(clock, FakeCollector()).subscribe(capacity=0)


# -- watched processes -------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real child process that sleeps until killed (reaped at the end of the test)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


async def test_watched_pids_are_passed_to_the_collector(
    clock: FakeClock, sleeper: subprocess.Popen[bytes]
) -> None:
    """watch(pid, plugin=...) reaches the next collection; unwatch removes it."""
    collector = FakeCollector()
    async with running_sampler(clock, collector) as sampler:
        sampler.watch(sleeper.pid, plugin="weather")
        await clock.advance(1.0)
        assert sampler.statistics().watched == {"weather": [sleeper.pid]}
        assert sampler.unwatch(sleeper.pid) is True
        assert sampler.unwatch(sleeper.pid) is False
        await clock.advance(1.0)
    assert collector.watched == [{sleeper.pid: "weather"}, {}]


async def test_a_real_watched_process_that_exits_is_dropped(
    clock: FakeClock, sleeper: subprocess.Popen[bytes]
) -> None:
    """With the real collector: a watched child shows as plugin gauges; killed and reaped, it
    is unwatched with a log line, its gauges removed, and sampling goes on."""
    sampler = Sampler(
        section(), context(clock), collector=lambda c: Collector(cgroup_root=None), offload=inline
    )
    async with sampler.running():
        sampler.watch(sleeper.pid, plugin="weather")
        await clock.advance(1.0)
        assert (sampler.metrics.get("plugin_rss_bytes", plugin="weather") or 0) > 0
        sleeper.kill()
        sleeper.wait()
        with capture_logs() as logs:
            await clock.advance(1.0)
        assert sampler.watched() == {}
        assert sampler.metrics.get("plugin_rss_bytes", plugin="weather") is None
        assert sampler.statistics().samples == 2
    assert [e["pid"] for e in logs if e["event"] == "watched process dropped"] == [sleeper.pid]


async def test_a_vanished_watched_process_is_dropped_with_a_log_line(clock: FakeClock) -> None:
    """A pid the collector reports vanished is unwatched, counted and logged; sampling goes on."""
    collector = FakeCollector()
    async with running_sampler(clock, collector) as sampler:
        sampler._watched[4242] = "weather"  # as watch() would, without a real process
        collector.vanish = [(4242, "weather")]
        with capture_logs() as logs:
            await clock.advance(2.0)
        stats = sampler.statistics()
    assert sampler.watched() == {}
    assert (stats.vanished, stats.samples) == (1, 2)
    line = next(e for e in logs if e["event"] == "watched process dropped")
    assert (line["pid"], line["plugin"], line["reason"]) == (4242, "weather", "vanished")
    assert line["level"] == "warning"


async def test_a_forbidden_watched_process_is_dropped_with_a_log_line(clock: FakeClock) -> None:
    """A pid that may not be read at all is unwatched, counted and logged."""
    collector = FakeCollector()
    async with running_sampler(clock, collector) as sampler:
        sampler._watched[4242] = "weather"
        collector.forbid = [(4242, "weather")]
        with capture_logs() as logs:
            await clock.advance(1.0)
    assert sampler.watched() == {} and sampler.statistics().forbidden == 1
    assert [e["reason"] for e in logs if e["event"] == "watched process dropped"] == ["forbidden"]


async def test_a_pid_rewatched_for_another_plugin_meanwhile_is_kept(clock: FakeClock) -> None:
    """A vanished report for (pid, "weather") does not drop the pid now watched for "music"."""
    collector = FakeCollector()
    async with running_sampler(clock, collector) as sampler:
        sampler._watched[4242] = "music"
        collector.vanish = [(4242, "weather")]
        await clock.advance(1.0)
    assert sampler.watched() == {4242: "music"}


@pytest.mark.parametrize(
    ("pid", "plugin", "error", "message"),
    [
        (0, "weather", ValueError, "pid must be a positive int, got 0"),
        (True, "weather", ValueError, "pid must be a positive int, got True"),
        ("12", "weather", ValueError, "pid must be a positive int, got '12'"),
        (1, "", ValueError, "plugin must be a non-empty name"),
        (NO_SUCH_PID, "weather", ProcessLookupError, f"no process with pid {NO_SUCH_PID}"),
    ],
)
def test_watch_refuses_bad_pids_and_plugins(
    clock: FakeClock, pid: object, plugin: str, error: type[Exception], message: str
) -> None:
    """A non-positive or non-int pid, an empty plugin or a pid with no process is refused."""
    sampler = make_sampler(clock, FakeCollector())
    with pytest.raises(error, match=message):
        sampler.watch(pid, plugin=plugin)  # type: ignore[arg-type]
    assert sampler.watched() == {}


def test_a_pid_watched_for_one_plugin_cannot_be_claimed_by_another(clock: FakeClock) -> None:
    """watch(pid, plugin="music") on a pid watched for "weather" raises ValueError."""
    sampler = make_sampler(clock, FakeCollector())
    sampler.watch(1, plugin="weather")
    sampler.watch(1, plugin="weather")  # the same again is fine
    with pytest.raises(ValueError, match="pid 1 is already watched for plugin 'weather'"):
        sampler.watch(1, plugin="music")


# -- history -----------------------------------------------------------------------------------


async def tick_and_store(sampler: Sampler, clock: FakeClock, ticks: int) -> None:
    """Advance one interval at a time; after each, wait until the sample is stored (a
    subscriber gets it after the SQLite write, which runs in aiosqlite's thread)."""
    with sampler.subscribe(capacity=ticks) as sub:
        for _ in range(ticks):
            await clock.advance(sampler.config.interval_ms / 1000)
            await sub.receive()


async def test_samples_are_kept_in_the_history(clock: FakeClock, tmp_path: Path) -> None:
    """Three ticks with a history file: history(since_s=10) returns the three samples."""
    path = tmp_path / "samples.db"
    async with running_sampler(clock, FakeCollector(), history_path=path) as sampler:
        await tick_and_store(sampler, clock, 3)
        found = await sampler.history(10)
        recent = await sampler.history(1.5)
        older = await sampler.history(10, until_s=1.5)
    assert [s.cpu_percent for s in found] == [1.0, 2.0, 3.0]
    assert [s.cpu_percent for s in recent] == [2.0, 3.0]
    assert [s.cpu_percent for s in older] == [1.0]


async def test_history_is_empty_when_disabled(clock: FakeClock) -> None:
    """With history_path null, history() returns []."""
    async with running_sampler(clock, FakeCollector()) as sampler:
        await clock.advance(2.0)
        assert await sampler.history(60) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since_s": 0}, "since_s must be a positive number"),
        ({"since_s": float("nan")}, "since_s must be a positive number"),
        ({"since_s": 10, "until_s": 10}, "until_s must be None or 0 <= until_s < since_s"),
        ({"since_s": 10, "until_s": -1}, "until_s must be None or 0 <= until_s < since_s"),
        ({"since_s": 10, "until_s": True}, "until_s must be None or 0 <= until_s < since_s"),
        ({"since_s": "10"}, "since_s must be a positive number"),
        ({"since_s": 10, "resolution_s": 0}, "resolution_s must be None or a positive number"),
    ],
)
async def test_a_bad_history_window_is_refused(
    clock: FakeClock, kwargs: dict[str, float], message: str
) -> None:
    """since_s > 0, 0 <= until_s < since_s and resolution_s > 0, else ValueError."""
    sampler = make_sampler(clock, FakeCollector())
    with pytest.raises(ValueError, match=message):
        await sampler.history(**kwargs)


async def test_a_history_that_cannot_open_is_logged_and_sampling_goes_on(
    clock: FakeClock, tmp_path: Path
) -> None:
    """An unusable history file: one error logged and counted, samples still published,
    history() says it is not open."""
    path = tmp_path / "broken.db"
    path.write_bytes(b"not a database" * 200)
    with capture_logs() as logs:
        async with running_sampler(clock, FakeCollector(), history_path=path) as sampler:
            await clock.advance(2.0)
            assert sampler.latest() is not None
            assert sampler.statistics().history_errors == 1
            with pytest.raises(RuntimeError, match="is not open"):
                await sampler.history(10)
    assert any(e["event"] == "sample history not opened; sampling without it" for e in logs)


class FailingHistory(SampleHistory):
    """A history whose writes fail as on a full disk."""

    async def append(self, sample: Sample) -> None:
        raise sqlite3.OperationalError("database or disk is full")


async def test_failed_history_writes_are_counted_and_logged_sparingly(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Five failed writes: all counted, logged at the 1st, 2nd and 4th; sampling goes on."""
    sampler = make_sampler(clock, FakeCollector(), history_path=tmp_path / "s.db")
    sampler._history = FailingHistory(tmp_path / "s.db", retention_s=60)
    with capture_logs() as logs:
        async with sampler.running():
            await clock.advance(5.0)
    assert sampler.statistics().history_errors == 5
    assert sampler.statistics().samples == 5
    logged = [e["errors"] for e in logs if e["event"] == "sample history write failed"]
    assert logged == [1, 2, 4]


async def test_history_is_maintained_as_samples_come(clock: FakeClock, tmp_path: Path) -> None:
    """With a 5 s retention, after 20 samples only the last few seconds are kept."""
    path = tmp_path / "s.db"
    sampler = make_sampler(
        clock, FakeCollector(), history_path=path, retention_s=5, downsample_bucket_s=1
    )
    async with sampler.running():
        await tick_and_store(sampler, clock, 20)
        kept = await sampler.history(3600)
    assert [s.cpu_percent for s in kept] == [15.0, 16.0, 17.0, 18.0, 19.0, 20.0]


# -- configuration, statistics, restarts -------------------------------------------------------


async def test_a_reload_reports_what_needs_a_restart(clock: FakeClock, tmp_path: Path) -> None:
    """history_path and enabled need a restart (and keep their values); the rest applies live."""
    sampler = make_sampler(clock, FakeCollector())
    changed = config_with(history_path=str(tmp_path / "x.db"), enabled=False, retention_s=99)
    assert sampler.apply_config(changed) == ["$.sampler.enabled", "$.sampler.history_path"]
    assert sampler.config.history_path is None and sampler.config.enabled is True
    assert sampler.config.retention_s == 99


async def test_a_reload_changes_the_history_windows_live(clock: FakeClock, tmp_path: Path) -> None:
    """retention_s and the downsampling keys reach the open history."""
    sampler = make_sampler(clock, FakeCollector(), history_path=tmp_path / "s.db")
    changed = config_with(history_path=str(tmp_path / "s.db"), retention_s=77,
                          downsample_after_s=88, downsample_bucket_s=11)  # fmt: skip
    assert sampler.apply_config(changed) == []
    assert sampler._history is not None
    assert (sampler._history.retention_s, sampler._history.raw_s) == (77, 88)
    assert sampler._history.bucket_s == 11


async def test_a_failed_collection_crashes_the_actor_and_a_restart_resumes(
    clock: FakeClock,
) -> None:
    """A collection that raises crashes the actor; restarted, it primes again and samples on,
    its counts kept."""
    collector = FakeCollector()
    async with running_sampler(clock, collector) as sampler:
        await clock.advance(1.0)
        collector.fail_next = True
        await clock.advance(1.0)  # the crash at 2.0; restarted after a 0.05 s backoff
        await clock.advance(1.5)  # its first sample is due one interval later, at 3.05
        stats = sampler.statistics()
    assert collector.primed == [0.0, 2.05]
    assert collector.taken == [1.0, 3.05]
    assert (stats.samples, stats.running) == (2, True)
    assert sampler.statistics().running is False


async def test_the_actor_takes_no_other_messages(clock: FakeClock) -> None:
    """A message that is not a tick is refused with TypeError."""
    sampler = make_sampler(clock, FakeCollector())
    supervisor = Supervisor("root", context=sampler._context)
    sampler.attach(supervisor, sampler._context)
    async with supervisor:
        actor = next(s.child for s in supervisor._slots if s.child.name == "sampler")
        assert isinstance(actor, ActorRef)
        with pytest.raises(TypeError, match="the sampler takes no messages"):
            await actor.ask("hello", timeout_s=None)
        await clock.advance(0.1)  # let the supervisor restart it before stopping


async def test_statistics_report_the_schedule_and_the_watch_list(clock: FakeClock) -> None:
    """Statistics give the interval, samples, lateness, the watch list by plugin and state."""
    async with running_sampler(clock, FakeCollector(), interval_ms=500) as sampler:
        sampler._watched.update({30: "weather", 10: "weather", 20: "music"})
        await clock.advance(2.0)
        stats = sampler.statistics()
    assert stats.running is True
    assert (stats.interval_s, stats.samples, stats.skipped) == (0.5, 4, 0)
    assert stats.lateness_p99_ms == 0.0
    assert stats.watched == {"music": [20], "weather": [10, 30]}
    assert stats.history_path is None and stats.cgroup is None
    await settle()
