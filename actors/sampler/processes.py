"""Reading processes with psutil: one process's figures, a group's totals, a process tree.

psutil's ``Process.cpu_percent()`` compares with the previous call on the same object and
returns 0.0 on the first one, so ``ProcessTable`` keeps one object per live process across
samples: a process is primed when first seen and measured from its second sample on.

Processes come and go between listing and reading them: ``NoSuchProcess`` (a zombie counts as
gone) and ``AccessDenied`` are expected here, and the callers decide what each means. Blocking:
call from a worker thread.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import psutil

__all__ = ["ProcessReading", "ProcessTable", "child_pids", "read_process", "total"]

T = TypeVar("T")


class ProcessReading(NamedTuple):
    """One process's figures (``None``: forbidden to read), or a group's sums."""

    rss_bytes: int
    uss_bytes: int | None
    cpu_percent: float
    threads: int
    open_fds: int | None


def read_process(proc: psutil.Process) -> ProcessReading:
    """Read ``proc`` in one pass. USS and open fds are ``None`` when forbidden.

    Raises ``psutil.NoSuchProcess`` when it is gone or a zombie, ``psutil.AccessDenied``
    when even its memory, CPU or threads are forbidden.
    """
    with proc.oneshot():
        if proc.status() == psutil.STATUS_ZOMBIE:
            raise psutil.ZombieProcess(proc.pid)
        return ProcessReading(
            rss_bytes=proc.memory_info().rss,
            uss_bytes=_unless_forbidden(lambda: proc.memory_full_info().uss),
            cpu_percent=proc.cpu_percent(None),
            threads=proc.num_threads(),
            open_fds=_unless_forbidden(proc.num_fds),
        )


def _unless_forbidden(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except psutil.AccessDenied:
        return None


def total(readings: list[ProcessReading]) -> ProcessReading:
    """The sums of ``readings``; a forbidden figure sums what could be read (``None`` if none)."""
    return ProcessReading(
        rss_bytes=sum(r.rss_bytes for r in readings),
        uss_bytes=_sum_known([r.uss_bytes for r in readings]),
        cpu_percent=sum((r.cpu_percent for r in readings), 0.0),
        threads=sum(r.threads for r in readings),
        open_fds=_sum_known([r.open_fds for r in readings]),
    )


def _sum_known(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class ProcessTable:
    """One ``psutil.Process`` per live pid, kept across samples so CPU figures stay primed."""

    def __init__(self, factory: Callable[[int], psutil.Process] = psutil.Process) -> None:
        self._factory = factory
        self._procs: dict[int, psutil.Process] = {}

    def get(self, pid: int) -> psutil.Process:
        """The kept object for ``pid``, or a new (unprimed) one if the pid is new or reused.

        Raises ``psutil.NoSuchProcess`` when no process has that pid.
        """
        proc = self._procs.get(pid)
        if proc is None or not proc.is_running():  # is_running: same pid, same process?
            proc = self._procs[pid] = self._factory(pid)
        return proc

    def keep_only(self, pids: set[int]) -> None:
        """Forget every process not in ``pids`` (those not seen in this sample)."""
        for pid in self._procs.keys() - pids:
            del self._procs[pid]

    def __len__(self) -> int:
        return len(self._procs)


def child_pids(pid: int, *, proc_root: Path = Path("/proc")) -> list[int]:
    """Every descendant of ``pid``, breadth first.

    Reads ``/proc/<pid>/task/<tid>/children`` (one small file per thread) instead of scanning
    every process as ``psutil.Process.children`` does: ~50x cheaper on a busy host. Falls back
    to psutil when the kernel lacks those files. Raises ``psutil.NoSuchProcess`` if ``pid``
    is gone.
    """
    found: list[int] = []
    queue = deque([pid])
    while queue:
        parent = queue.popleft()
        children = _children_of(parent, proc_root)
        if children is None:
            if parent == pid:
                return [p.pid for p in psutil.Process(pid).children(recursive=True)]
            continue  # a descendant vanished while we looked
        found.extend(children)
        queue.extend(children)
    return found


def _children_of(pid: int, proc_root: Path) -> list[int] | None:
    tasks = proc_root / str(pid) / "task"
    try:
        tids = os.listdir(tasks)
    except FileNotFoundError:
        return None
    children: list[int] = []
    for tid in tids:
        try:
            children.extend(int(c) for c in (tasks / tid / "children").read_text().split())
        except FileNotFoundError:
            if not (tasks / tid).exists():
                continue  # the thread ended
            return None  # no children files in this kernel
    return children
