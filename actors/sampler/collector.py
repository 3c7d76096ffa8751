"""The Collector takes one Sample: system, cgroup budget, own process tree, watched plugins.

Every psutil and ``/proc`` read happens here, synchronously: the Sampler runs ``prime`` and
``collect`` in a worker thread, never on the event loop. Rates and CPU percentages compare
with the previous call's counters, which the collector keeps; ``prime`` takes the first set so
that the first real sample already covers a whole interval (psutil's own ``cpu_percent``
returns a meaningless 0.0 on a first call; system CPU is computed here from ``cpu_times`` so
that other callers of ``psutil.cpu_percent`` in the process cannot reset our baseline).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from runtime.logging import get_logger

from .cgroup import DEFAULT_ROOT, CgroupLimits, CgroupReader, CgroupUsage
from .processes import ProcessReading, ProcessTable, child_pids, read_process, total
from .sample import PluginStats, Sample

__all__ = ["Collector", "Reading", "busy_percent"]

_NO_LIMITS = CgroupLimits(None, None, None, None, None, None)
_NO_USAGE = CgroupUsage(None, 0, None, None)


class Reading(NamedTuple):
    """What one collection found: the sample, and watched pids to drop as ``(pid, plugin)``."""

    sample: Sample
    vanished: list[tuple[int, str]]
    forbidden: list[tuple[int, str]]


class _Counters(NamedTuple):
    """The previous call's cumulative counters, for rates and CPU shares."""

    at_s: float
    cpu_times: list[Any]
    disk: tuple[int, int]
    net: tuple[int, int]
    cgroup_cpu_us: int | None


def busy_percent(before: Any, after: Any) -> float:
    """The busy share (0..100) of CPU time between two ``psutil.cpu_times()`` readings.

    Idle and iowait count as idle; guest time is already inside user and nice on Linux, so it
    is not counted twice. 0.0 when no time passed.
    """
    b, a = before._asdict(), after._asdict()
    guest = ("guest", "guest_nice")
    spent = sum(a[k] - b[k] for k in a if k not in guest)
    idle = sum(a.get(k, 0.0) - b.get(k, 0.0) for k in ("idle", "iowait"))
    if spent <= 0:
        return 0.0
    return float(min(100.0, max(0.0, (spent - idle) / spent * 100)))


def _rate(before: int, after: int, elapsed_s: float) -> float:
    # A counter that went down was reset (a disk or interface went away): no rate this time.
    return (after - before) / elapsed_s if elapsed_s > 0 and after >= before else 0.0


class Collector:
    """Takes Samples. Blocking: call ``prime`` once, then ``collect``, from a worker thread.

    ``cgroup_root=None`` ignores cgroups (the host's figures are used).
    """

    def __init__(
        self,
        *,
        pid: int | None = None,
        disk_path: str = "/",
        cgroup_root: Path | None = DEFAULT_ROOT,
        proc_self_cgroup: Path = Path("/proc/self/cgroup"),
        proc_root: Path = Path("/proc"),
        process_factory: Callable[[int], psutil.Process] = psutil.Process,
    ) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.disk_path = disk_path
        self._cgroup_root = cgroup_root
        self._proc_self_cgroup = proc_self_cgroup
        self._proc_root = proc_root
        self._table = ProcessTable(process_factory)
        self._cgroup: CgroupReader | None = None
        self._previous: _Counters | None = None
        self._warned: set[str] = set()
        self._log = get_logger("sampler")

    @property
    def cgroup(self) -> CgroupReader | None:
        """The cgroup v2 reader found by ``prime`` (``None``: no v2 cgroup, or ignored)."""
        return self._cgroup

    def prime(self, now_s: float) -> None:
        """Find the cgroup and take the baselines every later sample is compared with."""
        if self._cgroup_root is not None:
            self._cgroup = CgroupReader.discover(self._cgroup_root, self._proc_self_cgroup)
        _, usage = self._cgroup_figures()
        self._previous = self._counters(now_s, usage)
        self._own_tree()  # primes the CPU figures of our own process and its children

    def collect(self, now_s: float, wall_s: float, watched: Mapping[int, str]) -> Reading:
        """One Sample at ``wall_s``; ``watched`` maps pids to plugin names (a snapshot).

        Rates cover the time since the previous call (``now_s``: monotonic seconds). Raises
        what psutil raises for the host itself (``OSError``); processes that vanish or are
        forbidden are reported in the ``Reading``, not raised.
        """
        if self._previous is None:
            self.prime(now_s)
        assert self._previous is not None
        limits, usage = self._cgroup_figures()
        counters = self._counters(now_s, usage)
        fields = self._cpu(self._previous, counters, limits)
        fields |= self._memory(limits, usage) | self._storage(self._previous, counters)
        own, seen = self._own_tree()
        plugins, vanished, forbidden = self._plugins(watched)
        self._table.keep_only(seen | watched.keys())
        self._previous = counters
        load1, load5, load15 = psutil.getloadavg()
        sample = Sample(
            timestamp=wall_s, load1=load1, load5=load5, load15=load15, plugins=plugins,
            **fields, **own,
        )  # fmt: skip
        return Reading(sample, vanished, forbidden)

    # -- the parts of a sample ----------------------------------------------------------------

    def _cgroup_figures(self) -> tuple[CgroupLimits, CgroupUsage]:
        if self._cgroup is None:
            return _NO_LIMITS, _NO_USAGE
        try:
            limits = self._cgroup.limits()
            return limits, self._cgroup.usage(limits)
        except ValueError as exc:  # a malformed file: say so once, use the host's figures
            self._warn_once("cgroup", "cgroup files unreadable; using host figures", str(exc))
            return _NO_LIMITS, _NO_USAGE

    def _counters(self, now_s: float, usage: CgroupUsage) -> _Counters:
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        return _Counters(
            at_s=now_s,
            cpu_times=psutil.cpu_times(percpu=True),
            disk=(disk.read_bytes, disk.write_bytes) if disk is not None else (0, 0),
            net=(net.bytes_sent, net.bytes_recv) if net is not None else (0, 0),
            cgroup_cpu_us=usage.cpu_usage_us,
        )

    def _cpu(self, before: _Counters, after: _Counters, limits: CgroupLimits) -> dict[str, Any]:
        pairs = list(zip(before.cpu_times, after.cpu_times, strict=False))
        per_core = tuple(busy_percent(b, a) for b, a in pairs)
        cpu_percent = sum(per_core) / len(per_core) if per_core else 0.0
        cores = limits.cpu_limit_cores
        elapsed_s = after.at_s - before.at_s
        if cores and before.cgroup_cpu_us is not None and after.cgroup_cpu_us is not None:
            used_s = (after.cgroup_cpu_us - before.cgroup_cpu_us) / 1e6
            cpu_percent = max(0.0, used_s / (elapsed_s * cores) * 100) if elapsed_s > 0 else 0.0
        return {
            "cpu_percent": cpu_percent,
            "cpu_percent_per_core": per_core,
            "cpu_count": len(after.cpu_times),
            "cpu_limit_cores": cores,
        }

    def _memory(self, limits: CgroupLimits, usage: CgroupUsage) -> dict[str, Any]:
        host, swap = psutil.virtual_memory(), psutil.swap_memory()
        used, budget = host.total - host.available, host.total
        if limits.memory_max_bytes is not None and usage.memory_current_bytes is not None:
            # The working set, as the kernel's OOM decisions and kubectl see it.
            used = max(0, usage.memory_current_bytes - usage.memory_inactive_file_bytes)
            budget = min(limits.memory_max_bytes, host.total)
        swap_used, swap_budget = swap.used, swap.total
        if limits.swap_max_bytes is not None and usage.swap_current_bytes is not None:
            swap_used, swap_budget = usage.swap_current_bytes, limits.swap_max_bytes
        return {
            "memory_percent": used / budget * 100 if budget else 0.0,
            "memory_used_bytes": used,
            "memory_total_bytes": budget,
            "memory_limit_bytes": limits.memory_max_bytes,
            "swap_percent": swap_used / swap_budget * 100 if swap_budget else 0.0,
            "swap_used_bytes": swap_used,
            "swap_total_bytes": swap_budget,
        }

    def _storage(self, before: _Counters, after: _Counters) -> dict[str, Any]:
        elapsed_s = after.at_s - before.at_s
        fields: dict[str, Any] = {
            "disk_read_bytes_total": after.disk[0],
            "disk_write_bytes_total": after.disk[1],
            "disk_read_bytes_per_s": _rate(before.disk[0], after.disk[0], elapsed_s),
            "disk_write_bytes_per_s": _rate(before.disk[1], after.disk[1], elapsed_s),
            "net_sent_bytes_total": after.net[0],
            "net_recv_bytes_total": after.net[1],
            "net_sent_bytes_per_s": _rate(before.net[0], after.net[0], elapsed_s),
            "net_recv_bytes_per_s": _rate(before.net[1], after.net[1], elapsed_s),
        }
        try:
            usage = psutil.disk_usage(self.disk_path)
        except OSError as exc:
            self._warn_once("disk", "disk_path unreadable; disk usage left at 0", repr(exc))
            return fields
        fields |= {
            "disk_percent": usage.percent,
            "disk_used_bytes": usage.used,
            "disk_free_bytes": usage.free,
        }
        return fields

    def _own_tree(self) -> tuple[dict[str, Any], set[int]]:
        """Our process and its descendants (those that vanish meanwhile are left out), and the
        pids read."""
        own = read_process(self._table.get(self.pid))
        seen = {self.pid}
        children: list[ProcessReading] = []
        for pid in child_pids(self.pid, proc_root=self._proc_root):
            try:
                children.append(read_process(self._table.get(pid)))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen.add(pid)
        kids = total(children)
        fields = {
            "process_rss_bytes": own.rss_bytes,
            "process_uss_bytes": own.uss_bytes,
            "process_cpu_percent": own.cpu_percent,
            "process_threads": own.threads,
            "process_open_fds": own.open_fds,
            "children_count": len(children),
            "children_rss_bytes": kids.rss_bytes,
            "children_uss_bytes": kids.uss_bytes,
            "children_cpu_percent": kids.cpu_percent,
        }
        return fields, seen

    def _plugins(
        self, watched: Mapping[int, str]
    ) -> tuple[dict[str, PluginStats], list[tuple[int, str]], list[tuple[int, str]]]:
        readings: dict[str, list[ProcessReading]] = {}
        vanished: list[tuple[int, str]] = []
        forbidden: list[tuple[int, str]] = []
        for pid, plugin in watched.items():
            try:
                reading = read_process(self._table.get(pid))
            except psutil.NoSuchProcess:
                vanished.append((pid, plugin))
            except psutil.AccessDenied:
                forbidden.append((pid, plugin))
            else:
                readings.setdefault(plugin, []).append(reading)
        return {p: _stats(r) for p, r in readings.items()}, vanished, forbidden

    def _warn_once(self, key: str, message: str, error: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._log.warning(message, error=error)


def _stats(readings: list[ProcessReading]) -> PluginStats:
    summed = total(readings)
    return PluginStats(processes=len(readings), **summed._asdict())
