"""Functions the quota tests run in worker processes (no tests here).

Module level and standard library only, so that a ``spawn`` worker loads them quickly.
"""

from __future__ import annotations

import os
import time

MIB = 1024 * 1024


def pid() -> int:
    return os.getpid()


def square(x: int) -> int:
    return x * x


def grow(step_mb: int, pause_s: float, cap_mb: int, mark_mb: int, mark_path: str) -> int:
    """Allocate (and touch) ``step_mb`` every ``pause_s`` up to ``cap_mb``; write the
    monotonic time to ``mark_path`` once ``mark_mb`` are held."""
    held: list[bytes] = []
    marked = False
    while len(held) * step_mb < cap_mb:
        held.append(b"\x01" * (step_mb * MIB))
        if not marked and len(held) * step_mb >= mark_mb:
            with open(mark_path, "w") as file:
                file.write(repr(time.monotonic()))
            marked = True
        time.sleep(pause_s)
    return len(held)


def allocate(mb: int) -> int:
    """One allocation of ``mb`` (touched); returns its size."""
    return len(b"\x01" * (mb * MIB))


def spin_until(path: str) -> int:
    """Burn CPU until ``path`` exists; return how many rounds it made."""
    rounds = 0
    while not os.path.exists(path):
        rounds += 1
    return rounds


def spin_for(seconds: float) -> int:
    """Burn CPU for ``seconds`` of CPU time."""
    rounds = 0
    end = time.process_time() + seconds
    while time.process_time() < end:
        rounds += 1
    return rounds
