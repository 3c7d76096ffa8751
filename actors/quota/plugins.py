"""A registered plugin (its quota and the state that enforces it) and one call of it.

A ``Plugin`` turns its ``PluginQuota`` into a token bucket, a concurrency limit and the limits
its process calls run under; a ``Call`` follows one admitted task of the plugin from
admission to its end through its phases:

* ``rate``: held out of the scheduler's queue until its token is due;
* ``slot``: held until one of the plugin's concurrency slots frees;
* ``active``: holds a slot (queued or running in the scheduler);
* ``done``: ended, what it held given back.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from runtime.clock import TimerHandle
from runtime.config import PluginQuota

from .bucket import ConcurrencyLimit, TokenBucket
from .ports import TaskView, WatchView
from .stats import PluginRecord

__all__ = ["MEMORY_BACKSTOP", "MIB", "Call", "Phase", "Plugin", "Source"]

MIB = 1024 * 1024
# The address-space rlimit of a process call is this many times its memory quota: a backstop
# against a sudden huge allocation, loose enough that the measured quota acts first.
MEMORY_BACKSTOP = 2
Phase = Literal["rate", "slot", "active", "done"]
Source = Literal["config", "api"]


class Plugin:
    """A plugin's quota, its bucket and slots, how many of its calls are held, its counters."""

    __slots__ = ("bucket", "cpu_limit_s", "held", "memory_limit_bytes", "name", "quota",
                 "record", "slots", "source")  # fmt: skip

    def __init__(self, name: str, quota: PluginQuota, *, source: Source, cpus: int) -> None:
        self.name = name
        self.bucket: TokenBucket | None = None
        self.slots: ConcurrencyLimit[Call] = ConcurrencyLimit(None)
        self.held = 0  # calls in phase rate or slot
        self.record = PluginRecord()
        self.configure(quota, source=source, cpus=cpus)

    def configure(
        self, quota: PluginQuota, *, source: Source, cpus: int, now: float | None = None
    ) -> list[Call]:
        """Apply a (new) quota live (the bucket keeps its tokens as of ``now``); returns the
        waiting calls a raised limit lets in now."""
        self.quota = quota
        self.source: Source = source
        if quota.rate is None:
            self.bucket = None
        else:
            burst = quota.burst or 1
            if self.bucket is None:
                self.bucket = TokenBucket(quota.rate, burst, strict_spacing=quota.strict_spacing)
            else:
                self.bucket.configure(
                    quota.rate, burst, strict_spacing=quota.strict_spacing, now=now
                )
        self.slots.configure(quota.max_concurrency)
        memory_mb = quota.memory_mb
        self.memory_limit_bytes = None if memory_mb is None else memory_mb * MIB * MEMORY_BACKSTOP
        # RLIMIT_CPU backs the time limit: a call cannot use more CPU than cores x wall time.
        timeout_s = quota.timeout_s
        self.cpu_limit_s = None if timeout_s is None else math.ceil(timeout_s * cpus) + 1
        return self.slots.admit_waiting()

    def __repr__(self) -> str:
        return f"<Plugin {self.name} {self.source}>"


class Call:
    """One admitted task of a plugin (see the module docstring for its phases)."""

    __slots__ = ("phase", "plugin", "task", "terminated", "throttled", "timer", "token_mark",
                 "tracked", "watch")  # fmt: skip

    def __init__(self, plugin: Plugin, task: Any) -> None:
        self.plugin = plugin
        self.task: TaskView = task
        self.phase: Phase = "active"
        self.timer: TimerHandle | None = None  # rate due, slot deadline, or time limit
        self.watch: WatchView | None = None  # its process call, when it runs in one
        self.tracked: Any = None  # the process monitor's record while it runs
        self.throttled = False
        self.terminated = False
        self.token_mark: float | None = None  # its reservation, while it waits for its token

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def __repr__(self) -> str:
        return f"<Call {self.plugin.name} task={self.task.id} {self.phase}>"
