"""Resource limits around one call in a worker process, and what the call used.

A watched call travels as three frames more than a plain one (see ``_worker``)::

    parent -> worker   LIMITS   b"L" + memory_limit_bytes, cpu_limit_s (-1: none)
    parent -> worker   the call
    worker -> parent   STARTED  b"S" + resident bytes when the call starts
    worker -> parent   USAGE    b"U" + CPU seconds the call used, peak resident bytes
    worker -> parent   the reply

Tags cannot be mistaken for a call: a pickle starts with b"\\x80". Limits are soft rlimits,
lowered for the call and put back after it (an unprivileged process may raise a soft limit up
to its hard limit, which is never touched): ``RLIMIT_AS`` to the address space at the start
plus ``memory_limit_bytes`` (an allocation past it raises ``MemoryError`` in the call), and
``RLIMIT_CPU`` to the CPU time used so far plus ``cpu_limit_s`` (past it the kernel sends
SIGXCPU, which kills the worker; core dumps are off while the limit is in force).

Workers import this module at start: standard library only.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import struct
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "Limits",
    "Meter",
    "Usage",
    "applied",
    "decode_limits",
    "decode_started",
    "decode_usage",
    "encode_limits",
    "is_limits",
]

LIMITS_TAG = b"L"
STARTED_TAG = b"S"
USAGE_TAG = b"U"
_LIMITS = struct.Struct("!qq")
_STARTED = struct.Struct("!q")
_USAGE = struct.Struct("!dq")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# ru_maxrss is in kilobytes on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


class Limits(NamedTuple):
    """What a call may use beyond what its worker used when it started (None: no limit)."""

    memory_limit_bytes: int | None
    cpu_limit_s: int | None


class Usage(NamedTuple):
    """What a call used: CPU seconds, and the worker's peak resident memory during it."""

    cpu_s: float
    peak_rss_bytes: int


def encode_limits(limits: Limits) -> bytes:
    memory, cpu = limits
    return LIMITS_TAG + _LIMITS.pack(-1 if memory is None else memory, -1 if cpu is None else cpu)


def is_limits(frame: bytes) -> bool:
    return frame[:1] == LIMITS_TAG


def decode_limits(frame: bytes) -> Limits:
    memory, cpu = _LIMITS.unpack(frame[1:])
    return Limits(None if memory < 0 else memory, None if cpu < 0 else cpu)


def decode_started(frame: bytes) -> int:
    """The resident bytes a STARTED frame carries; ``ValueError`` for another frame."""
    if frame[:1] != STARTED_TAG:
        raise ValueError(f"expected a STARTED frame from the worker, got {frame[:16]!r}")
    (rss,) = _STARTED.unpack(frame[1:])
    return int(rss)


def decode_usage(frame: bytes) -> Usage:
    """The usage a USAGE frame carries; ``ValueError`` for another frame."""
    if frame[:1] != USAGE_TAG:
        raise ValueError(f"expected a USAGE frame from the worker, got {frame[:16]!r}")
    cpu_s, peak = _USAGE.unpack(frame[1:])
    return Usage(cpu_s, peak)


# -- the worker's side -------------------------------------------------------------------------


def _statm() -> tuple[int, int] | None:
    """(address space, resident) bytes of this process, or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as file:
            size, resident = file.read().split()[:2]
    except OSError:
        return None
    return int(size) * _PAGE_BYTES, int(resident) * _PAGE_BYTES


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def _reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (VmHWM), so it measures one call.

    ``ru_maxrss`` is the whole life's peak: a worker that was once bigger hides what a later
    call used. Linux resets VmHWM on writing 5 to /proc/self/clear_refs.
    """
    try:
        with open("/proc/self/clear_refs", "wb") as file:
            file.write(b"5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int | None:
    """VmHWM from /proc/self/status, in bytes, or None where it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as file:
            for line in file:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Meter:
    """Measures one call in the worker: made when it starts, read when it ends."""

    def __init__(self) -> None:
        statm = _statm()
        self._peak_before = _maxrss_bytes()
        self._peak_reset = _reset_peak_rss()
        self.start_rss_bytes = statm[1] if statm is not None else self._peak_before
        self._cpu_before = time.process_time()

    def started_frame(self) -> bytes:
        return STARTED_TAG + _STARTED.pack(self.start_rss_bytes)

    def usage_frame(self) -> bytes:
        cpu_s = time.process_time() - self._cpu_before
        peak = _peak_rss_bytes() if self._peak_reset else None
        if peak is None:
            peak = _maxrss_bytes()
            if peak <= self._peak_before:  # the worker was bigger before: the call's own peak
                statm = _statm()  # is unknown, at least what it holds now
                peak = max(self.start_rss_bytes, statm[1] if statm is not None else 0)
        return USAGE_TAG + _USAGE.pack(cpu_s, peak)


def _lower(which: int, soft: int) -> tuple[int, int, int]:
    """Lower a soft limit (never above the hard one); returns what restores it."""
    old_soft, hard = resource.getrlimit(which)
    new = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
    resource.setrlimit(which, (new, hard))
    return which, old_soft, hard


@contextlib.contextmanager
def applied(limits: Limits | None) -> Iterator[None]:
    """Hold the process to ``limits`` for the body; put the old soft limits back after it."""
    saved: list[tuple[int, int, int]] = []
    try:
        if limits is not None and limits.memory_limit_bytes is not None:
            statm = _statm()
            if statm is not None:  # no /proc (macOS): RLIMIT_AS is not enforced there anyway
                saved.append(_lower(resource.RLIMIT_AS, statm[0] + limits.memory_limit_bytes))
        if limits is not None and limits.cpu_limit_s is not None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            used_s = math.ceil(usage.ru_utime + usage.ru_stime)
            saved.append(_lower(resource.RLIMIT_CORE, 0))
            saved.append(_lower(resource.RLIMIT_CPU, used_s + limits.cpu_limit_s))
        yield
    finally:
        for which, soft, hard in reversed(saved):
            resource.setrlimit(which, (soft, hard))
