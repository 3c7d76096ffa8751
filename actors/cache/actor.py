"""The cache's actor: it owns the I/O no reader should wait for.

``CacheActor`` opens the slow tiers when it starts (a corrupt SQLite file is replaced there),
commits write-behind batches (every ``write_behind.interval_ms``, or at once when a batch is
full), sweeps expired entries every ``sweep_interval_s``, replaces a database found corrupt in
use, and on stop commits what is buffered and closes the files. Timers only send it messages:
the work runs in its own loop, under its supervisor, and a failure there is a crash.

``CacheHost`` is the supervisor the cache runs under: it holds the task group in which stale
entries are recomputed in the background (stale-while-revalidate), cancelled before its actor
stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from runtime.actor import Actor, ActorContext
from runtime.clock import TimerHandle
from runtime.exceptions import ActorStopped, ChannelFull
from runtime.supervisor import ChildSpec, Supervisor

from .sqlite import SqliteTier

if TYPE_CHECKING:
    from .service import Cache

__all__ = ["CacheActor", "CacheHost", "Flush", "Recover", "Sweep"]


class Flush(msgspec.Struct, frozen=True):
    """Commit the write-behind tiers' buffered writes; ``timer`` when the interval is due."""

    timer: bool = False


class Sweep(msgspec.Struct, frozen=True):
    """Drop expired entries from every tier."""


class Recover(msgspec.Struct, frozen=True):
    """Replace tier ``tier``'s database, found corrupt while in use."""

    tier: str


class CacheActor(Actor):
    """Maintenance and I/O of one ``Cache``."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._timers: dict[str, TimerHandle] = {}
        self._flush_asked = False

    async def on_start(self) -> None:
        """Open the slow tiers (failures are logged by each tier: the cache goes on without)."""
        for tier in self._cache.slow_tiers():
            await tier.open()
            if isinstance(tier, SqliteTier):
                tier.on_flush_needed = self._flush_soon
                tier.on_corrupt = self._recover_soon(tier.name)
        self._arm_sweep()
        self._arm_flush()

    async def on_stop(self) -> None:
        """Commit what is buffered and close the files (on a restart as on a shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for tier in self._cache.slow_tiers():
            if isinstance(tier, SqliteTier):
                tier.on_flush_needed = tier.on_corrupt = None
            await tier.close()

    async def receive(self, message: Any) -> None:
        match message:
            case Flush(timer=timer):
                if not timer:
                    self._flush_asked = False
                await self._cache.flush_tiers()
                if timer:
                    self._arm_flush()
            case Sweep():
                await self._cache.sweep()
                self._arm_sweep()
            case Recover(tier=name):
                for tier in self._cache.slow_tiers():
                    if isinstance(tier, SqliteTier) and tier.name == name:
                        await tier.recover()
            case _:
                raise TypeError(f"the cache actor takes Flush, Sweep or Recover; got {message!r}")

    def _arm_sweep(self) -> None:
        interval_s = self._cache.config.sweep_interval_s
        self._timers["sweep"] = self.clock.call_later(interval_s, lambda: self._send(Sweep()))

    def _arm_flush(self) -> None:
        if not any(t.write == "behind" for t in self._cache.slow_tiers()):
            return
        interval_s = self._cache.config.write_behind.interval_ms / 1000
        self._timers["flush"] = self.clock.call_later(
            interval_s, lambda: self._send(Flush(timer=True))
        )

    def _flush_soon(self) -> None:
        """A batch is full: flush now rather than at the interval (once until it runs)."""
        if not self._flush_asked:
            self._flush_asked = True
            self._send(Flush())

    def _recover_soon(self, name: str) -> Callable[[], None]:
        return lambda: self._send(Recover(name))

    def _send(self, message: object) -> None:
        # Stopping, or the mailbox is full of work already: the next timer will do.
        with contextlib.suppress(ActorStopped, ChannelFull):
            self.ref.tell_nowait(message)


class CacheHost(Supervisor):
    """The cache's supervisor: runs its actor, and the background revalidations in a task
    group of its own that ends (cancelled) before the actor stops."""

    def __init__(self, cache: Cache, context: ActorContext) -> None:
        super().__init__(cache.name, context=context, shutdown_timeout_s=cache.shutdown_timeout_s)
        self._cache = cache
        cache._actor = self.add(
            ChildSpec(
                f"{cache.name}.io",
                lambda: CacheActor(cache),
                shutdown_timeout_s=cache.shutdown_timeout_s,
                mailbox_capacity=64,
                mailbox_policy="reject",
            )
        )

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        async with anyio.create_task_group() as tg:
            self._cache._computations.tg = tg
            try:
                await super().run(started)
            finally:
                self._cache._computations.tg = None
                tg.cancel_scope.cancel()

    def request_stop(self, *, drain: bool, normal_exit: bool = False) -> None:
        self._cache._computations.cancel_background()
        super().request_stop(drain=drain, normal_exit=normal_exit)
