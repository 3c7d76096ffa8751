"""The errors jarvis-runtime raises to its callers.

The tree::

    Exception
    ├── RuntimeError
    │   ├── ChannelClosed        a send to (or a receive from an empty) closed channel
    │   ├── ActorStopped         a tell or ask to an actor that is not running and never will again
    │   ├── Overloaded           admission control refused a task: the deadline could not be met
    │   ├── CircuitOpen          a call refused while a circuit breaker is open
    │   ├── SupervisorEscalation a supervisor gave up: restart intensity exceeded
    │   └── WorkerDied           a worker process died (killed, crashed, exited) during a call
    ├── ValueError
    │   └── ConfigError          the configuration is invalid; ``.problems`` lists every one
    ├── TimeoutError
    │   ├── DeadlineExceeded     a task or an ``ask`` ran past its deadline
    │   └── ChannelFull          a send found the channel full (policy ``reject``, ``send_nowait``,
    │                            or a send with a deadline that ran out)
    └── QuotaExceeded (RuntimeError) a plugin went past one of its quotas

``ChannelFull`` is a ``TimeoutError`` because that is what it means to a caller: the operation
could not complete now and may succeed later.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ActorStopped",
    "ChannelClosed",
    "ChannelFull",
    "CircuitOpen",
    "ConfigError",
    "ConfigProblem",
    "DeadlineExceeded",
    "Overloaded",
    "QuotaExceeded",
    "SupervisorEscalation",
    "WorkerDied",
]


class ChannelClosed(RuntimeError):
    """The channel was closed: no more sends, and nothing is left to receive."""


class ChannelFull(TimeoutError):
    """The channel had no room for the message and the caller could not wait."""

    def __init__(self, capacity: int, *, name: str | None = None) -> None:
        where = f"channel {name!r}" if name else "channel"
        super().__init__(f"{where} is full (capacity {capacity}); retry later or raise capacity")
        self.capacity = capacity


class ActorStopped(RuntimeError):
    """The actor is stopped for good: its mailbox is closed."""

    def __init__(self, name: str) -> None:
        super().__init__(f"actor {name!r} is stopped")
        self.name = name


class DeadlineExceeded(TimeoutError):
    """Work ran past its deadline (a task, an ``ask``, a send with a deadline)."""


class Overloaded(RuntimeError):
    """Admission control refused work because its deadline could not be met."""


class CircuitOpen(RuntimeError):
    """A call was refused because the circuit breaker guarding it is open."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {retry_after_s:.3f}s")
        self.name = name
        self.retry_after_s = retry_after_s


class SupervisorEscalation(RuntimeError):
    """A supervisor exceeded its restart intensity and gave up on its children."""

    def __init__(self, name: str, restarts: int, period_s: float) -> None:
        super().__init__(
            f"supervisor {name!r} exceeded its restart intensity "
            f"({restarts} restarts within {period_s:g}s); escalating"
        )
        self.name = name


class WorkerDied(RuntimeError):
    """A worker process died while starting or running a call; the pool replaces it.

    ``exitcode`` is the process's exit code, negative for the signal that ended it (``-9`` for
    SIGKILL), or None when it could not be known.
    """

    def __init__(self, pid: int, exitcode: int | None, doing: str) -> None:
        if exitcode is None:
            cause = "cause unknown"
        elif exitcode < 0:
            cause = f"signal {-exitcode}"
        else:
            cause = f"exit code {exitcode}"
        super().__init__(f"worker {pid} died ({cause}) while {doing}")
        self.pid = pid
        self.exitcode = exitcode


class QuotaExceeded(RuntimeError):
    """A plugin went past a quota; ``retry_after_s`` says when to try again, if ever."""

    def __init__(
        self, plugin: str, quota: str, measured: float, limit: float, retry_after_s: float | None
    ) -> None:
        when = f"; retry in {retry_after_s:.3f}s" if retry_after_s is not None else ""
        super().__init__(
            f"plugin {plugin!r} exceeded its {quota} quota ({measured:g} > {limit:g}){when}"
        )
        self.plugin = plugin
        self.quota = quota
        self.measured = measured
        self.limit = limit
        self.retry_after_s = retry_after_s


class ConfigProblem:
    """One problem in a configuration: where it is and what is wrong."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigProblem) and (self.path, self.message) == (
            other.path,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.message))


class ConfigError(ValueError):
    """The configuration is invalid. ``problems`` holds every problem found, each with its path."""

    def __init__(self, problems: Sequence[ConfigProblem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head} ({len(self.problems)} problem(s)):\n{lines}")
