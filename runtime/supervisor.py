"""Supervisors with Erlang/OTP semantics.

A supervisor starts its children in order, watches them and applies its strategy when one
exits:

- ``one_for_one``: restart only the child that exited;
- ``one_for_all``: stop the others (in reverse order), then restart every child in order;
- ``rest_for_one``: stop the children started after it, then restart it and them in order.

Whether an exit is followed by a restart depends on the child's restart type: ``permanent``
always, ``transient`` only after a crash, ``temporary`` never. More than ``intensity`` restarts
within ``period_s`` and the supervisor gives up: it stops every child and raises
``SupervisorEscalation`` to its parent, which treats that as a crash of the supervisor.
Supervisors nest: a ``Supervisor`` is a valid child.

On a graceful stop, children stop in reverse order; each drains its mailbox within its shutdown
timeout and is cancelled after it (what is left goes to the dead letters).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import anyio
import msgspec
import structlog

from . import events
from .actor import Actor, ActorContext, ActorRef, ActorStatistics
from .channel import Channel, Policy
from .exceptions import SupervisorEscalation

__all__ = ["ChildSpec", "RestartType", "Strategy", "Supervisor", "SupervisorStatistics"]

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary")


class _Child(Protocol):
    """What a supervisor needs of a child: an actor's address or a nested supervisor."""

    name: str
    restarts: int
    normal_exit: bool

    async def run(self, started: Callable[[], None]) -> None: ...

    def request_stop(self, *, drain: bool, normal_exit: bool = False) -> None: ...

    def close(self, *, reason: str) -> None: ...


@dataclass(frozen=True)
class ChildSpec:
    """How to run one actor under a supervisor."""

    name: str
    factory: Callable[[], Actor]
    restart: RestartType = "permanent"
    shutdown_timeout_s: float = 5.0
    mailbox_capacity: int = 1000
    mailbox_policy: Policy = "block"

    def __post_init__(self) -> None:
        if self.restart not in RESTART_TYPES:
            raise ValueError(
                f"restart must be one of {', '.join(RESTART_TYPES)}; got {self.restart!r}"
            )
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0, got {self.shutdown_timeout_s}")


class SupervisorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a supervisor and everything under it."""

    name: str
    strategy: str
    restarts: int
    actors: list[ActorStatistics]
    supervisors: list[SupervisorStatistics]


class _Exit(NamedTuple):
    slot: _Slot
    incarnation: int
    outcome: Exception | None


class _Slot:
    """A child's place in the supervisor: its spec and the state of its current incarnation."""

    __slots__ = (
        "child",
        "done",
        "incarnation",
        "restart",
        "scope",
        "shutdown_timeout_s",
        "stopping",
    )

    def __init__(self, child: _Child, restart: RestartType, shutdown_timeout_s: float) -> None:
        self.child = child
        self.restart = restart
        self.shutdown_timeout_s = shutdown_timeout_s
        self.scope: anyio.CancelScope | None = None
        self.done = anyio.Event()
        self.incarnation = 0
        self.stopping = False  # stopped by its supervisor: its exit is not news


class Supervisor:
    """Starts, watches and restarts its children. Use ``async with`` or run it as a child."""

    def __init__(
        self,
        name: str,
        *,
        strategy: Strategy = "one_for_one",
        intensity: int = 5,
        period_s: float = 10.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        context: ActorContext | None = None,
        restart: RestartType = "permanent",
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        if intensity < 0 or period_s <= 0:
            raise ValueError(f"need intensity >= 0 and period_s > 0; got {intensity}, {period_s}")
        self.name = name
        self.strategy: Strategy = strategy
        self.intensity = intensity
        self.period_s = period_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.context = context or ActorContext()
        self.restart_type: RestartType = restart
        self.shutdown_timeout_s = shutdown_timeout_s
        self.restarts = 0  # times this supervisor was restarted by its parent
        self.restarts_performed = 0
        self.normal_exit = False
        self._slots: list[_Slot] = []
        self._restart_times: deque[float] = deque()
        self._exits: Channel[_Exit] = Channel(1 << 16)
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopping = False
        self._log = structlog.get_logger(actor=name)
        self._outer_tg: anyio.abc.TaskGroup | None = None

    # -- building the tree --------------------------------------------------------------------

    def add(self, spec: ChildSpec) -> ActorRef:
        """Add an actor child; it starts with the supervisor (or at once if it is running)."""
        ref = ActorRef(
            spec.name,
            spec.factory,
            context=self.context,
            capacity=spec.mailbox_capacity,
            policy=spec.mailbox_policy,
        )
        self._add_slot(_Slot(ref, spec.restart, spec.shutdown_timeout_s))
        return ref

    def add_supervisor(self, child: Supervisor) -> Supervisor:
        """Nest ``child``; its restart type and shutdown timeout are its own settings."""
        self._add_slot(_Slot(child, child.restart_type, child.shutdown_timeout_s))
        return child

    def _add_slot(self, slot: _Slot) -> None:
        if any(s.child.name == slot.child.name for s in self._slots):
            raise ValueError(
                f"supervisor {self.name!r} already has a child named {slot.child.name!r}"
            )
        self._slots.append(slot)
        if self._tg is not None:
            self._tg.start_soon(self._start_one, slot)

    @property
    def children(self) -> list[str]:
        return [slot.child.name for slot in self._slots]

    # -- running ------------------------------------------------------------------------------

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        """Start every child in order, then supervise until stopped (returns).

        Raises ``SupervisorEscalation`` after stopping every child when the restart intensity is
        exceeded.
        """
        self._stopping = False
        self.normal_exit = False
        self._exits = Channel(1 << 16)
        escalation: SupervisorEscalation | None = None
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                for slot in list(self._slots):
                    await self._start_one(slot)
                started()
                await self._supervise()
            except SupervisorEscalation as exc:
                # Raised outside the task group, so the parent sees it bare, not in a group.
                escalation = exc
                await self._stop_all(drain=False)
            finally:
                self._tg = None
                tg.cancel_scope.cancel()
        if escalation is not None:
            raise escalation

    async def _start_one(self, slot: _Slot) -> None:
        """Start a child's incarnation and wait until it is up (or has already exited)."""
        assert self._tg is not None
        slot.done = anyio.Event()
        slot.stopping = False
        slot.incarnation += 1
        up = anyio.Event()
        slot.scope = anyio.CancelScope()
        self._tg.start_soon(self._run_child, slot, slot.scope, up)
        await up.wait()

    async def _run_child(self, slot: _Slot, scope: anyio.CancelScope, up: anyio.Event) -> None:
        outcome: Exception | None = None
        incarnation = slot.incarnation
        with scope:
            try:
                await slot.child.run(up.set)
            except Exception as exc:  # a crash: reported to the strategy, never swallowed
                outcome = exc
        up.set()
        slot.done.set()
        if not (scope.cancelled_caught or slot.stopping or self._stopping):
            self._exits.send_nowait(_Exit(slot, incarnation, outcome))

    async def _supervise(self) -> None:
        async for exit_ in self._exits:
            slot, outcome = exit_.slot, exit_.outcome
            if slot not in self._slots or exit_.incarnation != slot.incarnation:
                continue  # news about an incarnation a group restart has already replaced
            if outcome is not None:
                self._on_crash(slot, outcome)
            if not self._wants_restart(slot, outcome):
                self._slots.remove(slot)
                slot.child.close(reason="actor_stopped")
                continue
            await self._restart(slot)

    def _wants_restart(self, slot: _Slot, outcome: BaseException | None) -> bool:
        if slot.restart == "permanent":
            return True
        if slot.restart == "transient":
            return outcome is not None or not slot.child.normal_exit
        return False

    def _on_crash(self, slot: _Slot, error: BaseException) -> None:
        described = f"{type(error).__name__}: {error}"
        self._log.error("child crashed", child=slot.child.name, error=described)
        self._publish(
            events.ActorCrashed, name=slot.child.name, error=described, restarts=slot.child.restarts
        )

    async def _restart(self, failed: _Slot) -> None:
        self._count_restart()  # raises SupervisorEscalation past the intensity
        index = self._slots.index(failed)
        if self.strategy == "one_for_one":
            group = [failed]
        elif self.strategy == "one_for_all":
            group = list(self._slots)
        else:
            group = self._slots[index:]
        for slot in reversed(group):
            if slot is not failed:
                await self._stop_one(slot, drain=False)
        delay_s = self._backoff_s()
        await self._context_sleep(delay_s)
        for slot in group:
            slot.child.restarts += 1
            await self._start_one(slot)
            self._publish(
                events.ActorRestarted,
                name=slot.child.name,
                restarts=slot.child.restarts,
                delay_s=delay_s,
            )

    def _count_restart(self) -> None:
        now = self.context.clock.now()
        times = self._restart_times
        times.append(now)
        while times and times[0] <= now - self.period_s:
            times.popleft()
        self.restarts_performed += 1
        if len(times) > self.intensity:
            self._log.error(
                "restart intensity exceeded; escalating",
                restarts=len(times),
                period_s=self.period_s,
            )
            raise SupervisorEscalation(self.name, len(times), self.period_s)

    def _backoff_s(self) -> float:
        """Exponential in the restarts of the current period: a quiet period resets it."""
        attempt = max(0, len(self._restart_times) - 1)
        return float(min(self.backoff_max_s, self.backoff_initial_s * (2**attempt)))

    async def _context_sleep(self, seconds: float) -> None:
        if seconds > 0:
            await self.context.clock.sleep(seconds)

    # -- stopping -----------------------------------------------------------------------------

    async def _stop_one(self, slot: _Slot, *, drain: bool) -> None:
        """Stop a child within its shutdown timeout; cancel it past the timeout."""
        if slot.done.is_set():
            return
        slot.stopping = True
        slot.child.request_stop(drain=drain)
        with self.context.clock.move_on_after(slot.shutdown_timeout_s):
            await slot.done.wait()
        if not slot.done.is_set():
            self._log.warning(
                "child did not stop in time; cancelling",
                child=slot.child.name,
                shutdown_timeout_s=slot.shutdown_timeout_s,
            )
            assert slot.scope is not None
            slot.scope.cancel()
            await slot.done.wait()

    async def stop(self) -> None:
        """Stop every child in reverse order, draining mailboxes, then end ``run``."""
        await self._stop_all(drain=True)

    async def _stop_all(self, *, drain: bool) -> None:
        if self._stopping:
            return
        self._stopping = True
        for slot in reversed(self._slots):
            await self._stop_one(slot, drain=drain)
            if drain:
                slot.child.close(reason="shutdown")
        self._exits.close()

    def request_stop(self, *, drain: bool, normal_exit: bool = False) -> None:
        """As a child: stop the whole subtree, in a task of the running supervisor.

        Without ``drain`` the mailboxes stay open for the subtree's next incarnation.
        """
        self.normal_exit = self.normal_exit or normal_exit
        if self._tg is not None:
            self._tg.start_soon(lambda: self._stop_all(drain=drain))

    def close(self, *, reason: str) -> None:
        for slot in self._slots:
            slot.child.close(reason=reason)

    # -- the async context manager face -------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        self._outer_tg = anyio.create_task_group()
        await self._outer_tg.__aenter__()
        self._escalation: SupervisorEscalation | None = None
        up = anyio.Event()
        self._outer_tg.start_soon(self._run_as_root, up)
        await up.wait()
        if self._escalation is not None:
            await self._outer_tg.__aexit__(None, None, None)
            raise self._escalation
        return self

    async def _run_as_root(self, up: anyio.Event) -> None:
        try:
            await self.run(up.set)
        except SupervisorEscalation as exc:
            self._escalation = exc
            up.set()
            assert self._outer_tg is not None
            self._outer_tg.cancel_scope.cancel()  # the body of ``async with`` ends here too

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._outer_tg is not None
        try:
            await self.stop()
        finally:
            # Always leave the task group, even when stop() is cancelled: a task group left open
            # would corrupt the caller's stack of cancel scopes.
            suppressed = await self._outer_tg.__aexit__(*exc_info)
        if self._escalation is not None:
            raise self._escalation
        return suppressed

    # -- introspection ------------------------------------------------------------------------

    def _publish(self, event_type: type[events.Event], **fields: Any) -> None:
        bus = self.context.events
        if bus is not None:
            bus.emit(event_type, actor=self.name, **fields)

    def statistics(self) -> SupervisorStatistics:
        actors = [s.child.statistics() for s in self._slots if isinstance(s.child, ActorRef)]
        subs = [s.child.statistics() for s in self._slots if isinstance(s.child, Supervisor)]
        return SupervisorStatistics(
            name=self.name,
            strategy=self.strategy,
            restarts=self.restarts_performed,
            actors=actors,
            supervisors=subs,
        )
