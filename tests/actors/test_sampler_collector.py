"""The Collector and process reading on the real machine: priming, process trees, processes
that vanish or may not be read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from actors.sampler.collector import Collector, busy_percent
from actors.sampler.processes import (
    ProcessReading,
    ProcessTable,
    child_pids,
    read_process,
    total,
)
from runtime.testing import capture_logs

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A child that starts a grandchild and waits for it.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])",
]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real child process that sleeps until killed (reaped at the end of the test)."""
    proc = subprocess.Popen(SLEEPER)
    yield proc
    proc.kill()
    proc.wait()


def spin_cpu(seconds: float) -> None:
    """Use ``seconds`` of this process's CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def cpu_times(**fields: float) -> Any:
    """A psutil cpu_times record with ``fields`` set and the rest 0."""
    kind = type(psutil.cpu_times())
    return kind(**{name: fields.get(name, 0.0) for name in kind._fields})


def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    """Poll a condition of the real OS (a process starting or exiting), bounded."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- system CPU --------------------------------------------------------------------------------


def test_busy_percent_counts_idle_and_iowait_as_idle() -> None:
    """Of 10 s spent: 2 idle + 1 iowait is 70 % busy."""
    before = cpu_times(user=100.0, system=50.0, idle=500.0, iowait=10.0)
    after = cpu_times(user=105.0, system=52.0, idle=502.0, iowait=11.0)
    assert busy_percent(before, after) == pytest.approx(70.0)


def test_busy_percent_does_not_count_guest_time_twice() -> None:
    """Guest time is inside user time already: 4 s user (3 of them guest) + 4 s idle is 50 %."""
    before = cpu_times(user=10.0, idle=10.0, guest=1.0)
    after = cpu_times(user=14.0, idle=14.0, guest=4.0)
    assert busy_percent(before, after) == pytest.approx(50.0)


def test_busy_percent_is_zero_when_no_time_passed() -> None:
    """Two identical readings give 0.0 rather than dividing by zero."""
    same = cpu_times(user=1.0, idle=1.0)
    assert busy_percent(same, same) == 0.0


# -- reading processes -------------------------------------------------------------------------


def test_priming_makes_the_first_sample_measure_cpu() -> None:
    """After prime, the first collect reports the CPU this process used since (psutil's own
    first call would say 0.0)."""
    collector = Collector(cgroup_root=None)
    collector.prime(time.monotonic())
    spin_cpu(0.05)
    sample = collector.collect(time.monotonic(), time.time(), {}).sample
    assert sample.process_cpu_percent > 0.0
    assert psutil.Process().cpu_percent(None) == 0.0  # what an unprimed first call gives


def test_a_sample_covers_system_process_and_load() -> None:
    """A real sample has per-core CPU for every core, memory, disk, own RSS/USS, threads, fds."""
    collector = Collector(cgroup_root=None)
    collector.prime(time.monotonic())
    sample = collector.collect(time.monotonic() + 1.0, 1_800_000_000.0, {}).sample
    assert sample.timestamp == 1_800_000_000.0
    assert len(sample.cpu_percent_per_core) == sample.cpu_count == psutil.cpu_count()
    assert 0.0 < sample.memory_percent < 100.0
    assert sample.memory_total_bytes == psutil.virtual_memory().total
    assert 0.0 < sample.disk_percent <= 100.0
    assert sample.process_rss_bytes > 0 and (sample.process_uss_bytes or 0) > 0
    assert sample.process_threads >= 1 and (sample.process_open_fds or 0) >= 3
    assert sample.load1 >= 0.0


def test_a_process_is_primed_once_and_kept_across_samples(sleeper: subprocess.Popen[bytes]) -> None:
    """The table returns the same psutil object for a pid until it is forgotten."""
    table = ProcessTable()
    first = table.get(sleeper.pid)
    assert table.get(sleeper.pid) is first
    table.keep_only(set())
    assert len(table) == 0
    assert table.get(sleeper.pid) is not first


def test_read_process_reads_a_real_process(sleeper: subprocess.Popen[bytes]) -> None:
    """RSS, USS, threads and fds of a live child are readable and positive."""
    reading = read_process(psutil.Process(sleeper.pid))
    assert reading.rss_bytes > 0 and (reading.uss_bytes or 0) > 0
    assert reading.threads >= 1 and (reading.open_fds or 0) >= 1


def test_a_killed_and_reaped_process_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    """Reading a process that was killed and reaped raises NoSuchProcess."""
    proc = psutil.Process(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    with pytest.raises(psutil.NoSuchProcess):
        read_process(proc)


def test_a_zombie_counts_as_gone(sleeper: subprocess.Popen[bytes]) -> None:
    """A killed child not yet reaped (a zombie) raises NoSuchProcess too."""
    proc = psutil.Process(sleeper.pid)
    sleeper.kill()
    wait_until(lambda: proc.status() == psutil.STATUS_ZOMBIE)
    with pytest.raises(psutil.NoSuchProcess):
        read_process(proc)


class Forbidding:
    """A real process whose named methods raise AccessDenied, as another user's would."""

    def __init__(self, pid: int, forbidden: set[str]) -> None:
        self._proc = psutil.Process(pid)
        self._forbidden = forbidden
        self.pid = pid

    def __getattr__(self, name: str) -> Any:
        if name in self._forbidden:

            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise psutil.AccessDenied(self.pid)

            return refuse
        return getattr(self._proc, name)


def test_forbidden_uss_and_fds_are_left_out_not_fatal(sleeper: subprocess.Popen[bytes]) -> None:
    """With smaps and the fd directory forbidden, USS and fds are None; the rest is read."""
    reading = read_process(Forbidding(sleeper.pid, {"memory_full_info", "num_fds"}))
    assert reading.uss_bytes is None and reading.open_fds is None
    assert reading.rss_bytes > 0 and reading.threads >= 1


def test_a_process_forbidden_outright_raises_access_denied(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """With even its memory forbidden, reading raises AccessDenied for the caller to handle."""
    with pytest.raises(psutil.AccessDenied):
        read_process(Forbidding(sleeper.pid, {"memory_info"}))


def test_totals_sum_what_could_be_read() -> None:
    """Group sums skip forbidden figures; a figure forbidden everywhere is None."""
    readings = [ProcessReading(10, 4, 1.5, 2, None), ProcessReading(20, None, 2.5, 3, None)]
    assert total(readings) == ProcessReading(30, 4, 4.0, 5, None)
    assert total([]) == ProcessReading(0, None, 0.0, 0, None)


# -- process trees -----------------------------------------------------------------------------


def test_child_pids_finds_children_and_grandchildren() -> None:
    """A child that starts a grandchild: both are descendants of this process."""
    parent = subprocess.Popen(PARENT)
    try:
        wait_until(lambda: psutil.Process(parent.pid).children())
        grandchild = psutil.Process(parent.pid).children()[0].pid
        found = child_pids(os.getpid())
        assert parent.pid in found and grandchild in found
        assert found.index(parent.pid) < found.index(grandchild)  # breadth first
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()


def test_child_pids_falls_back_to_psutil_without_children_files(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """Under a /proc whose task directories lack "children" files, psutil's scan is used."""
    fake_proc = tmp_path / "proc"
    (fake_proc / str(os.getpid()) / "task" / str(os.getpid())).mkdir(parents=True)
    assert sleeper.pid in child_pids(os.getpid(), proc_root=fake_proc)


def test_child_pids_of_a_vanished_process_raises_no_such_process(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """Asking for the children of a reaped pid raises NoSuchProcess."""
    sleeper.kill()
    sleeper.wait()
    with pytest.raises(psutil.NoSuchProcess):
        child_pids(sleeper.pid)


def test_children_are_counted_in_the_sample(sleeper: subprocess.Popen[bytes]) -> None:
    """The sleeping child shows in children_count and children_rss_bytes."""
    collector = Collector(cgroup_root=None)
    collector.prime(time.monotonic())
    sample = collector.collect(time.monotonic(), time.time(), {}).sample
    assert sample.children_count >= 1
    assert sample.children_rss_bytes >= psutil.Process(sleeper.pid).memory_info().rss


# -- watched processes -------------------------------------------------------------------------


def test_a_watched_process_that_was_killed_is_reported_vanished(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """Watched for "weather", the process shows in plugins; once killed, it is reported
    vanished (not raised) and its plugin has no figures."""
    collector = Collector(cgroup_root=None)
    collector.prime(time.monotonic())
    watched = {sleeper.pid: "weather"}
    before = collector.collect(time.monotonic(), time.time(), watched)
    assert before.sample.plugins["weather"].processes == 1
    assert before.sample.plugins["weather"].rss_bytes > 0
    sleeper.kill()
    sleeper.wait()
    after = collector.collect(time.monotonic(), time.time(), watched)
    assert after.vanished == [(sleeper.pid, "weather")]
    assert "weather" not in after.sample.plugins


def test_a_watched_process_forbidden_outright_is_reported_forbidden(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """A watched process whose memory may not be read is reported forbidden, not raised."""
    collector = Collector(
        cgroup_root=None,
        process_factory=lambda pid: (
            Forbidding(pid, {"memory_info"}) if pid == sleeper.pid else psutil.Process(pid)
        ),
    )
    collector.prime(time.monotonic())
    reading = collector.collect(time.monotonic(), time.time(), {sleeper.pid: "weather"})
    assert reading.forbidden == [(sleeper.pid, "weather")]
    assert reading.vanished == []


def test_processes_of_a_plugin_are_summed(sleeper: subprocess.Popen[bytes]) -> None:
    """Two processes watched for one plugin are summed in its PluginStats."""
    other = subprocess.Popen(SLEEPER)
    try:
        collector = Collector(cgroup_root=None)
        collector.prime(time.monotonic())
        watched = {sleeper.pid: "weather", other.pid: "weather"}
        stats = collector.collect(time.monotonic(), time.time(), watched).sample.plugins
        rss = [psutil.Process(p).memory_info().rss for p in watched]
        assert stats["weather"].processes == 2
        assert stats["weather"].rss_bytes == pytest.approx(sum(rss), rel=0.2)
    finally:
        other.kill()
        other.wait()


def test_an_unreadable_disk_path_leaves_disk_usage_at_zero_and_warns_once(
    tmp_path: Path,
) -> None:
    """disk_path that does not exist: disk usage 0, one warning, the sample still taken."""
    collector = Collector(cgroup_root=None, disk_path=str(tmp_path / "absent"))
    with capture_logs() as logs:
        collector.prime(time.monotonic())
        first = collector.collect(time.monotonic(), time.time(), {}).sample
        collector.collect(time.monotonic(), time.time(), {})
    assert first.disk_percent == 0.0 and first.process_rss_bytes > 0
    warned = [e for e in logs if e["event"] == "disk_path unreadable; disk usage left at 0"]
    assert len(warned) == 1


def test_collect_without_prime_primes_first() -> None:
    """A collect before any prime primes itself and still returns a sample."""
    collector = Collector(cgroup_root=None)
    sample = collector.collect(time.monotonic(), 1_800_000_000.0, {}).sample
    assert sample.timestamp == 1_800_000_000.0 and sample.process_rss_bytes > 0
