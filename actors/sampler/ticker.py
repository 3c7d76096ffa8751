"""The sampling actor: a timer per slot of the drift-free schedule, a collection per tick.

The timer does not sample; it only sends the actor a ``Tick`` (a message it sends itself), so a
sample is taken by the actor's own loop under its supervisor, and a crash is a crash of the
actor. The next timer is armed after a tick is handled, for the slot the clock is then in:
a collection that overruns its slot skips the slots it covered instead of queueing them.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.actor import Actor
from runtime.clock import TimerHandle
from runtime.config import SamplerSection
from runtime.exceptions import ActorStopped, ChannelFull

from .schedule import DriftFreeSchedule, Slot

if TYPE_CHECKING:
    from .service import CollectorLike, Sampler

__all__ = ["Tick", "Ticker"]


class Tick(msgspec.Struct, frozen=True):
    """Time to take the sample of ``slot``."""

    slot: Slot


class Ticker(Actor):
    """Takes a sample at each slot of the schedule and hands it to the ``Sampler`` service."""

    def __init__(self, service: Sampler) -> None:
        self._service = service
        self._collector: CollectorLike | None = None
        self._schedule: DriftFreeSchedule | None = None
        self._timer: TimerHandle | None = None
        self._interval_s = service.config.interval_ms / 1000

    async def on_start(self) -> None:
        """Prime a fresh collector (in a thread), open the history, start the schedule.

        Raises what priming raises (an ``OSError`` reading the host): a crash.
        """
        service = self._service
        collector = service._new_collector()
        await service._offload(functools.partial(collector.prime, self.clock.now()))
        self._collector = collector
        await service._started(self, collector)
        # Slot 0 is the priming: the first sample is due one interval later, covering it all.
        self._schedule = DriftFreeSchedule(self.clock.now(), self._interval_s)
        self._arm()

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A closed mailbox means a shutdown (the supervisor drains it), not a restart.
        await self._service._stopped(final=self.ref.mailbox.closed)

    def reconfigure(self, config: SamplerSection) -> None:
        """Take a new interval from the next tick on (the slots restart from that tick)."""
        self._interval_s = config.interval_ms / 1000

    async def receive(self, message: Any) -> None:
        match message:
            case Tick(slot=slot):
                await self._tick(slot)
            case _:
                raise TypeError(f"the sampler takes no messages; got {message!r}")

    async def _tick(self, slot: Slot) -> None:
        if self.ref.mailbox.closed:
            return  # shutting down: the supervisor drains the mailbox, no more samples
        service, clock = self._service, self.clock
        assert self._collector is not None and self._schedule is not None
        started = clock.now()
        service._ticked(slot, lateness_s=started - slot.due_s)
        collect = functools.partial(
            self._collector.collect, started, clock.wall(), dict(service._watched)
        )
        self._collector.disk_path = service.config.disk_path
        reading = await service._offload(collect)
        await service._publish(reading, collect_s=clock.now() - started)
        if self._interval_s != self._schedule.interval_s:
            self._schedule = DriftFreeSchedule(started, self._interval_s)
        self._arm()

    def _arm(self) -> None:
        assert self._schedule is not None
        now = self.clock.now()
        slot = self._schedule.next_slot(now)
        self._timer = self.clock.call_later(slot.due_s - now, functools.partial(self._fire, slot))

    def _fire(self, slot: Slot) -> None:
        self._timer = None
        # Stopping, or a tick is already waiting (this one would only be skipped): no tick.
        with contextlib.suppress(ActorStopped, ChannelFull):
            self.ref.tell_nowait(Tick(slot))
