"""Each escalation step as an event and a log line naming the plugin, the quota and the value.

Events are published every time (the bus skips the work when nobody listens); log lines are
limited to one per plugin, quota and step each ``log_interval_s``, with a count of the ones
held back, because a plugin called a thousand times a second over its rate would otherwise
write a thousand lines a second.
"""

from __future__ import annotations

from typing import Any

from runtime.clock import Clock
from runtime.events import EventBus, PluginTerminated, PluginThrottled, QuotaExceeded
from runtime.logging import get_logger

__all__ = ["ACTOR", "Notifier"]

ACTOR = "quotas"


class Notifier:
    """Publishes QuotaExceeded, PluginThrottled and PluginTerminated, and logs each step."""

    def __init__(self, *, clock: Clock, bus: EventBus | None, log_interval_s: float) -> None:
        self._clock = clock
        self._bus = bus
        self.log_interval_s = log_interval_s
        self._log = get_logger(ACTOR)
        self._logged_at: dict[tuple[str, str, str], float] = {}
        self._held_back: dict[tuple[str, str, str], int] = {}

    def exceeded(
        self,
        plugin: str,
        quota: str,
        measured: float,
        limit: float,
        *,
        retry_after_s: float | None = None,
        refused: bool = False,
        log: bool = True,
    ) -> None:
        """A quota was reached or exceeded: a warning, or a refused call (``refused``).
        ``log`` false: the event only (the step that follows logs it all)."""
        bus = self._bus
        if bus is not None and bus.wants(QuotaExceeded):
            bus.emit(QuotaExceeded, actor=ACTOR, plugin=plugin, quota=quota, measured=measured,
                     limit=limit, retry_after_s=retry_after_s)  # fmt: skip
        if not log:
            return
        step = "refused" if refused else "warned"
        self._line("quota refused" if refused else "quota warning", plugin, quota, step,
                   measured=measured, limit=limit, retry_after_s=retry_after_s)  # fmt: skip

    def throttled(
        self, plugin: str, quota: str, measured: float, limit: float, throttle_s: float | None
    ) -> None:
        """A plugin's call is held back: delayed ``throttle_s`` or, when None, paused."""
        bus = self._bus
        if bus is not None and bus.wants(PluginThrottled):
            bus.emit(PluginThrottled, actor=ACTOR, plugin=plugin, quota=quota,
                     throttle_s=throttle_s)  # fmt: skip
        self._line("plugin throttled", plugin, quota, "throttled", measured=measured,
                   limit=limit, throttle_s=throttle_s)  # fmt: skip

    def terminated(
        self,
        plugin: str,
        quota: str,
        measured: float,
        limit: float,
        *,
        reason: str,
        pid: int | None,
    ) -> None:
        """A plugin's call was ended for a quota (its worker ``pid`` killed, if it had one)."""
        bus = self._bus
        if bus is not None and bus.wants(PluginTerminated):
            bus.emit(PluginTerminated, actor=ACTOR, plugin=plugin, quota=quota, reason=reason,
                     pid=pid)  # fmt: skip
        self._line("plugin terminated", plugin, quota, "terminated", measured=measured,
                   limit=limit, reason=reason, pid=pid)  # fmt: skip

    def _line(self, event: str, plugin: str, quota: str, step: str, **fields: Any) -> None:
        key = (plugin, quota, step)
        now = self._clock.now()
        last = self._logged_at.get(key)
        if last is not None and now - last < self.log_interval_s:
            self._held_back[key] = self._held_back.get(key, 0) + 1
            return
        self._logged_at[key] = now
        suppressed = self._held_back.pop(key, 0)
        log = self._log.error if step == "terminated" else self._log.warning
        log(event, plugin=plugin, quota=quota, suppressed=suppressed, **fields)
