"""Time, rate and concurrency quotas, enforced from the scheduler's hooks.

``admit`` runs as the scheduler admits a task of a plugin. Over its rate, a call waits for its
token (held out of the queue, released when the token is due) or is refused; over its
concurrency, it waits for a slot (released in FIFO order as calls end) or is refused. A wait
that would end past the task's deadline, or beyond ``max_waiting`` calls waiting, is refused
with ``QuotaExceeded`` saying when to retry. ``start`` arms the time limit, ``finish`` gives
back what the call held and adds up what it used. Everything here is synchronous and runs on
the hot path of each plugin task; tasks without a plugin return at the first line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from runtime.clock import Clock
from runtime.exceptions import QuotaExceeded

from .deadlines import Deadlines
from .notify import Notifier
from .plugins import MEMORY_BACKSTOP, Call, Plugin
from .ports import SchedulerPort

__all__ = ["Gate"]

Tracker = Callable[[Call], None]


class Gate:
    """The plugins and their calls in flight; the scheduler hooks that enforce their quotas.

    ``on_start``/``on_finish`` are told when a watched process call starts and ends (the
    process monitor tracks it meanwhile).
    """

    def __init__(
        self,
        scheduler: SchedulerPort,
        *,
        clock: Clock,
        notifier: Notifier,
        on_start: Tracker,
        on_finish: Tracker,
    ) -> None:
        self.plugins: dict[str, Plugin] = {}
        self.calls: dict[int, Call] = {}
        self._scheduler = scheduler
        self._clock = clock
        self._notifier = notifier
        self._on_start = on_start
        self._on_finish = on_finish
        self._deadlines = Deadlines(clock, self._time_out)

    def attach(self) -> None:
        """Add the hooks to the scheduler (admission last: it holds tasks the others let in)."""
        hooks = self._scheduler.hooks
        hooks.admission.append(self.admit)
        hooks.start.append(self.start)
        hooks.finish.append(self.finish)

    def detach(self) -> None:
        """Take the hooks off the scheduler (calls in flight keep their state until they end;
        time limits are no longer enforced)."""
        self._deadlines.close()
        hooks = self._scheduler.hooks
        for hooks_list, hook in ((hooks.admission, self.admit), (hooks.start, self.start),
                                 (hooks.finish, self.finish)):  # fmt: skip
            if hook in hooks_list:
                hooks_list.remove(hook)

    # -- admission ----------------------------------------------------------------------------

    def admit(self, task: Any) -> None:
        """Let a plugin's task in, hold it, or refuse it (``QuotaExceeded``, or ``ValueError``
        for a plugin nobody registered)."""
        name = task.plugin
        if name is None:
            return
        plugin = self.plugins.get(name)
        if plugin is None:
            raise self._unknown(name)
        plugin.record.calls += 1
        call = Call(plugin, task)
        bucket = plugin.bucket
        if bucket is not None and (delay_s := bucket.try_take(now := self._clock.now())) > 0:
            self._wait_for_token(call, delay_s, now)
        elif not plugin.slots.try_acquire():
            self._wait_for_slot_or_refuse(call)
        self.calls[task.id] = call
        if task.run_in == "process":
            call.watch = self._scheduler.watch(task, memory_limit_bytes=plugin.memory_limit_bytes,
                                               cpu_limit_s=plugin.cpu_limit_s)  # fmt: skip

    def _wait_for_token(self, call: Call, delay_s: float, now: float) -> None:
        plugin, task = call.plugin, call.task
        bucket, quota = plugin.bucket, plugin.quota
        assert bucket is not None and quota.rate is not None
        attempted = bucket.attempted_rate(now)
        too_late = task.deadline_at is not None and now + delay_s > task.deadline_at
        if quota.on_rate == "refuse" or too_late:
            raise self._refuse(plugin, "rate", attempted, quota.rate, retry_after_s=delay_s)
        self._check_waiting_room(plugin, retry_after_s=delay_s)
        bucket.take(now)
        call.token_mark = bucket.mark
        self._hold(call, "rate")
        call.timer = self._clock.call_later(delay_s, functools.partial(self._token_due, call))
        self._throttle(call, "rate", attempted, quota.rate, delay_s)

    def _token_due(self, call: Call) -> None:
        call.timer = None
        if call.phase != "rate":
            return
        call.token_mark = None  # its token is spent now, whatever happens next
        plugin = call.plugin
        if plugin.slots.try_acquire():
            self._activate(call)
            return
        if plugin.quota.on_concurrency == "refuse":
            error = self._refuse(plugin, "concurrency", plugin.slots.active + 1,
                                 plugin.quota.max_concurrency or 0)  # fmt: skip
            self._scheduler.release(call.task, error)
            return
        call.phase = "slot"
        self._wait_for_slot(call)

    def _wait_for_slot_or_refuse(self, call: Call) -> None:
        """No slot free: wait for one, or be refused (giving back the token just taken)."""
        plugin = call.plugin
        try:
            if plugin.quota.on_concurrency == "refuse":
                limit = plugin.quota.max_concurrency or 0
                raise self._refuse(plugin, "concurrency", plugin.slots.active + 1, limit)
            self._check_waiting_room(plugin, retry_after_s=None)
        except QuotaExceeded:
            if plugin.bucket is not None:
                plugin.bucket.give_back(plugin.bucket.mark)
            raise
        self._hold(call, "slot")
        self._wait_for_slot(call)

    def _check_waiting_room(self, plugin: Plugin, *, retry_after_s: float | None) -> None:
        if plugin.held >= plugin.quota.max_waiting:
            raise self._refuse(plugin, "max_waiting", plugin.held + 1, plugin.quota.max_waiting,
                               retry_after_s=retry_after_s)  # fmt: skip

    def _wait_for_slot(self, call: Call) -> None:
        plugin, task = call.plugin, call.task
        plugin.slots.wait(call)
        limit = plugin.quota.max_concurrency or 0
        if task.deadline_at is not None:
            wait_s = task.deadline_at - self._clock.now()
            call.timer = self._clock.call_later(wait_s, functools.partial(self._slot_late, call))
        self._throttle(call, "concurrency", plugin.slots.active + 1, limit, None)

    def _slot_late(self, call: Call) -> None:
        """A call waiting for a slot reached its deadline: refused, since running it late
        would break the concurrency limit or the deadline."""
        call.timer = None
        if call.phase != "slot":
            return
        plugin = call.plugin
        plugin.slots.discard(call)
        error = self._refuse(plugin, "concurrency", plugin.slots.active + 1,
                             plugin.quota.max_concurrency or 0)  # fmt: skip
        self._scheduler.release(call.task, error)

    def _hold(self, call: Call, phase: str) -> None:
        call.phase = "rate" if phase == "rate" else "slot"
        call.plugin.held += 1
        self._scheduler.hold(call.task)

    def _activate(self, call: Call) -> None:
        """A held call takes its slot and goes to the scheduler's queue."""
        call.cancel_timer()
        call.phase = "active"
        call.plugin.held -= 1
        self._scheduler.release(call.task)

    def _throttle(self, call: Call, quota: str, measured: float, limit: float,
                  throttle_s: float | None) -> None:  # fmt: skip
        if not call.throttled:
            call.throttled = True
            call.plugin.record.throttled += 1
        self._notifier.throttled(call.plugin.name, quota, measured, limit, throttle_s)

    def _refuse(self, plugin: Plugin, quota: str, measured: float, limit: float, *,
                retry_after_s: float | None = None) -> QuotaExceeded:  # fmt: skip
        plugin.record.refused += 1
        self._notifier.exceeded(plugin.name, quota, measured, limit, retry_after_s=retry_after_s,
                                refused=True)  # fmt: skip
        return QuotaExceeded(plugin.name, quota, measured, limit, retry_after_s)

    def _unknown(self, name: str) -> ValueError:
        known = ", ".join(sorted(self.plugins)) or "none"
        return ValueError(
            f"plugin {name!r} is not registered (registered: {known}); register it with "
            f"rt.quotas.register({name!r}, ...) or add it to quotas.plugins in the config"
        )

    # -- running and ending -------------------------------------------------------------------

    def start(self, task: Any) -> None:
        """A plugin's task starts: arm its time limit; track its process call."""
        if task.plugin is None:
            return
        call = self.calls.get(task.id)
        if call is None:
            return
        timeout_s = call.plugin.quota.timeout_s
        if timeout_s is not None:
            self._deadlines.add(self._clock.now() + timeout_s, call)
        if call.watch is not None:
            self._on_start(call)

    def _time_out(self, call: Call) -> None:
        started_at = call.task.started_at
        limit = call.plugin.quota.timeout_s or 0.0
        elapsed = limit if started_at is None else self._clock.now() - started_at
        self.terminate(call, "timeout", elapsed, limit, reason=f"ran past {limit:g}s")

    def terminate(self, call: Call, quota: str, measured: float, limit: float, *,
                  reason: str) -> None:  # fmt: skip
        """End a running call for ``quota``: QuotaExceeded and PluginTerminated, then the
        scheduler cancels it (killing its worker process, if it runs in one)."""
        if call.phase == "done" or call.terminated:
            return
        call.terminated = True
        plugin = call.plugin
        plugin.record.terminated += 1
        pid = None if call.watch is None else call.watch.pid
        self._notifier.exceeded(plugin.name, quota, measured, limit, log=False)
        self._notifier.terminated(plugin.name, quota, measured, limit, reason=reason, pid=pid)
        self._scheduler.cancel(call.task, QuotaExceeded(plugin.name, quota, measured, limit, None))

    def finish(self, task: Any) -> None:
        """A plugin's task ended (or was refused after admission): give back what it held."""
        if task.plugin is None:
            return
        call = self.calls.pop(task.id, None)
        if call is None:
            return
        if call.timer is not None:
            call.cancel_timer()
        phase, call.phase = call.phase, "done"
        plugin = call.plugin
        if phase == "active":
            for waiting in plugin.slots.release():
                self._activate(waiting)
        else:
            plugin.held -= 1
            if phase == "slot":
                plugin.slots.discard(call)
            elif plugin.bucket is not None and call.token_mark is not None:
                plugin.bucket.give_back(call.token_mark)  # it never used its token
        record = plugin.record
        if task.error is None:
            record.completed += 1
        else:
            record.failed += 1
        if call.watch is not None:
            if isinstance(task.error, MemoryError) and not call.terminated:
                self._memory_refused(call, task.error)
            self._on_finish(call)

    def _memory_refused(self, call: Call, error: MemoryError) -> None:
        """The address-space rlimit refused an allocation of a process call: the call ended
        for its memory quota (its worker lives on)."""
        plugin = call.plugin
        limit_mb = plugin.quota.memory_mb
        if limit_mb is None:
            return
        call.terminated = True
        plugin.record.terminated += 1
        backstop_mb = float(limit_mb * MEMORY_BACKSTOP)
        pid = None if call.watch is None else call.watch.pid
        reason = f"an allocation went past its worker's address-space limit (+{backstop_mb:g} MB)"
        self._notifier.exceeded(plugin.name, "memory", backstop_mb, limit_mb, log=False)
        self._notifier.terminated(plugin.name, "memory", backstop_mb, limit_mb, reason=reason,
                                  pid=pid)  # fmt: skip
        error.add_note(
            f"plugin {plugin.name!r} exceeded its memory quota ({limit_mb} MB): {reason}"
        )

    def activate_waiting(self, plugin: Plugin, calls: list[Call]) -> None:
        """Let in calls a raised limit made room for."""
        for call in calls:
            self._activate(call)
