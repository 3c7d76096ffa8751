"""A watched process call: limits applied in the worker around it, and what it used.

Whoever polices a call (the quota enforcer) asks the scheduler to watch a process task
(``Scheduler.watch``) before it starts. The pool then sends the limits to the worker ahead of
the call, and the worker, while the call runs, holds its address space to what it had at the
start plus ``memory_limit_bytes`` (``RLIMIT_AS``) and its CPU time to ``cpu_limit_s`` more
seconds (``RLIMIT_CPU``, a backstop: past it the kernel kills the worker). The worker reports
its resident memory when the call starts, and its CPU time and peak memory when it ends.

While the call runs, ``pid`` names its worker and ``pause``/``resume`` stop and continue that
worker (duty-cycle throttling); once it ends they do nothing, so a late pause can never stop a
worker that has moved on to someone else's call.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ProcessWatch", "WorkerControl"]


class WorkerControl(Protocol):
    """What the pool lends a watch while the call runs: stop and continue its worker."""

    def hold(self) -> bool: ...

    def unhold(self) -> bool: ...


class ProcessWatch:
    """One process call's limits (set before it starts) and usage (set by the pool).

    ``start_rss_bytes``: the worker's resident memory when the call started (``None`` until
    the worker said so); ``cpu_s`` and ``peak_rss_bytes``: the CPU time the call used and the
    worker's highest resident memory during it, known once it returned (``peak_rss_bytes`` is
    a lower bound when the worker had been bigger before). Raises ``ValueError`` for a limit
    that is not a positive int.
    """

    __slots__ = (
        "_control",
        "cpu_limit_s",
        "cpu_s",
        "memory_limit_bytes",
        "peak_rss_bytes",
        "pid",
        "start_rss_bytes",
    )

    def __init__(
        self, *, memory_limit_bytes: int | None = None, cpu_limit_s: int | None = None
    ) -> None:
        limits = {"memory_limit_bytes": memory_limit_bytes, "cpu_limit_s": cpu_limit_s}
        for name, value in limits.items():
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive int or None; got {value!r}")
        self.memory_limit_bytes = memory_limit_bytes
        self.cpu_limit_s = cpu_limit_s
        self.pid: int | None = None
        self.start_rss_bytes: int | None = None
        self.cpu_s: float | None = None
        self.peak_rss_bytes: int | None = None
        self._control: WorkerControl | None = None

    @property
    def running(self) -> bool:
        """Whether a worker runs the call now."""
        return self._control is not None

    def pause(self) -> bool:
        """Stop the call's worker (SIGSTOP); ``False`` when it does not run or is stopped."""
        return self._control.hold() if self._control is not None else False

    def resume(self) -> bool:
        """Continue a worker ``pause`` stopped; ``False`` when there is nothing to resume."""
        return self._control.unhold() if self._control is not None else False

    # -- the pool's side ----------------------------------------------------------------------

    def bind(self, pid: int, control: WorkerControl) -> None:
        """The call starts on worker ``pid``."""
        self.pid = pid
        self._control = control

    def unbind(self) -> None:
        """The call has ended (returned, failed, or its worker died or was killed)."""
        self._control = None

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"<ProcessWatch pid={self.pid} {state}>"
