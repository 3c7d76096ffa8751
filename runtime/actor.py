"""Actors: a mailbox, a handler and a loop — the mechanism kept small and visible.

An ``ActorRef`` is an actor's address. It owns the mailbox (a bounded ``Channel``) and outlives
every instance of the actor: when an instance crashes, the messages waiting in the mailbox are
handled by the instance its supervisor starts next.

A handler that raises is retried in place with exponential backoff and full jitter
(``RetryPolicy``); after the last retry the message goes to the dead letters (an ``ask`` gets the
error) and the instance crashes, so its supervisor restarts it from a clean state.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec
import structlog

from .breaker import CircuitBreaker
from .channel import DEFAULT_PRIORITY, Channel, ChannelStatistics, Policy
from .clock import Clock, RealClock
from .events import CircuitBreakerStateChanged
from .exceptions import ActorStopped, ChannelClosed, ChannelFull, DeadlineExceeded
from .retry import RetryPolicy, backoff_delays

if TYPE_CHECKING:
    from .deadletters import DeadLetters
    from .events import EventBus
    from .metrics import MetricsRegistry

__all__ = ["Actor", "ActorContext", "ActorRef", "ActorStatistics"]

ActorState = Literal["idle", "starting", "running", "stopping", "stopped", "crashed"]


@dataclass
class ActorContext:
    """What every actor and supervisor of one runtime shares."""

    clock: Clock = field(default_factory=RealClock)
    dead_letters: DeadLetters | None = None
    events: EventBus | None = None
    metrics: MetricsRegistry | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rng: random.Random = field(default_factory=random.Random)

    def dead_letter(self, message: object, *, reason: str, source: str) -> None:
        if self.dead_letters is not None:
            self.dead_letters.add(message, reason=reason, source=source)

    def circuit_breaker(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        success_threshold: int = 2,
    ) -> CircuitBreaker:
        """A breaker on this context's clock that logs and publishes its state changes."""
        log = structlog.get_logger(actor=name)

        def changed(breaker: str, old: str, new: str) -> None:
            log.warning("circuit breaker state changed", breaker=breaker, old=old, new=new)
            if self.events is not None:
                self.events.emit(
                    CircuitBreakerStateChanged, actor=name, name=breaker, old=old, new=new
                )

        return CircuitBreaker(
            name,
            clock=self.clock,
            failure_threshold=failure_threshold,
            reset_timeout_s=reset_timeout_s,
            success_threshold=success_threshold,
            on_state_change=changed,
        )


class Actor:
    """Subclass and implement ``receive``; the return value is the reply to an ``ask``.

    ``ref``, ``clock`` and ``log`` are set before ``on_start`` runs.
    """

    ref: ActorRef
    clock: Clock
    log: Any

    async def on_start(self) -> None:
        """Called before the first message of each instance; raising here is a crash."""

    async def on_stop(self) -> None:
        """Called after the last message of each instance, on a stop or a crash."""

    async def receive(self, message: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement receive()")

    def stop(self) -> None:
        """Stop this actor normally after the current message (a transient child stays down)."""
        self.ref.request_stop(drain=False, normal_exit=True)


class _Ask:
    """A request waiting for its reply: the envelope ``ask`` puts in the mailbox."""

    __slots__ = ("done", "error", "message", "value")

    def __init__(self, message: object) -> None:
        self.message = message
        self.done = anyio.Event()
        self.value: object = None
        self.error: BaseException | None = None

    def reply(self, value: object) -> None:
        self.value = value
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class ActorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one actor."""

    name: str
    state: str
    restarts: int
    handled: int
    failed: int
    mailbox: ChannelStatistics


class ActorRef:
    """The address of an actor: its mailbox, ``tell``, ``ask``, and the loop an instance runs."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Actor],
        *,
        context: ActorContext | None = None,
        capacity: int = 1000,
        policy: Policy = "block",
    ) -> None:
        self.name = name
        self._factory = factory
        self._ctx = context or ActorContext()
        self._mailbox: Channel[Any] = Channel(
            capacity, policy, name=f"{name}.mailbox", on_drop=self._on_drop
        )
        self._state: ActorState = "idle"
        self._stop_requested = False
        self._drain = False
        self.normal_exit = False
        self._receive_scope: anyio.CancelScope | None = None
        self._log = structlog.get_logger(actor=name)
        self.restarts = 0
        self.handled = 0
        self.failed = 0

    # -- the caller's side --------------------------------------------------------------------

    async def tell(self, message: object, *, priority: int = DEFAULT_PRIORITY) -> None:
        """Send without waiting for a reply; waits for room when the mailbox policy is ``block``.

        Raises ``ActorStopped`` when the actor is stopped for good, ``ChannelFull`` under the
        ``reject`` policy.
        """
        try:
            await self._mailbox.send(message, priority=priority)
        except ChannelClosed:
            raise ActorStopped(self.name) from None

    def tell_nowait(self, message: object, *, priority: int = DEFAULT_PRIORITY) -> None:
        """Send now or raise ``ChannelFull`` (``block``/``reject``) or ``ActorStopped``."""
        try:
            self._mailbox.send_nowait(message, priority=priority)
        except ChannelClosed:
            raise ActorStopped(self.name) from None

    async def ask(
        self, message: object, *, timeout_s: float | None = 5.0, priority: int = DEFAULT_PRIORITY
    ) -> Any:
        """Send ``message`` and wait for the handler's return value.

        Raises ``DeadlineExceeded`` after ``timeout_s`` (the send counts), ``ActorStopped``, or
        whatever the handler raised on its last retry.
        """
        request = _Ask(message)
        try:
            with self._ctx.clock.fail_after(timeout_s):
                await self.tell(request, priority=priority)
                await request.done.wait()
        except TimeoutError as exc:
            if isinstance(exc, ChannelFull):
                raise
            raise DeadlineExceeded(
                f"ask to actor {self.name!r} timed out after {timeout_s}s"
            ) from None
        if request.error is not None:
            raise request.error
        return request.value

    # -- the supervisor's side ----------------------------------------------------------------

    @property
    def state(self) -> ActorState:
        return self._state

    @property
    def mailbox(self) -> Channel[Any]:
        return self._mailbox

    def request_stop(self, *, drain: bool, normal_exit: bool = False) -> None:
        """Ask the running instance to stop after its current message.

        With ``drain`` the mailbox is closed first and every waiting message is handled; without
        it the waiting messages stay for the next instance.
        """
        self._stop_requested = True
        self.normal_exit = self.normal_exit or normal_exit
        if drain:
            self._drain = True
            self._mailbox.close()
        elif self._receive_scope is not None:
            self._receive_scope.cancel()

    def close(self, *, reason: str) -> None:
        """Close the mailbox for good; what is still in it goes to the dead letters."""
        self._mailbox.close()
        for item in self._mailbox.drain_nowait():
            self._reject(item, reason)
        self._state = "stopped"

    async def run(self, started: Callable[[], None]) -> None:
        """Run one instance until it stops (returns) or crashes (raises)."""
        self._stop_requested = False
        self.normal_exit = False
        self._state = "starting"
        instance = self._factory()
        instance.ref = self
        instance.clock = self._ctx.clock
        instance.log = self._log
        try:
            await instance.on_start()
            self._state = "running"
            started()
            await self._loop(instance)
        except Exception:
            self._state = "crashed"
            await self._stop_instance(instance)
            raise
        self._state = "stopping"
        await self._stop_instance(instance)
        self._state = "stopped"

    async def _stop_instance(self, instance: Actor) -> None:
        try:
            await instance.on_stop()
        except Exception:
            self._log.exception("on_stop failed")

    async def _loop(self, instance: Actor) -> None:
        while (item := await self._next()) is not _STOP:
            await self._handle(instance, item)

    async def _next(self) -> Any:
        if self._stop_requested and not self._drain:
            return _STOP
        with anyio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                return await self._mailbox.receive()
            except ChannelClosed:
                return _STOP
            finally:
                self._receive_scope = None
        return _STOP  # cancelled by request_stop

    async def _handle(self, instance: Actor, item: Any) -> None:
        request = item if type(item) is _Ask else None
        message = request.message if request is not None else item
        delays = None
        while True:
            try:
                result = await instance.receive(message)
            except anyio.get_cancelled_exc_class():
                # Killed mid-message (a shutdown timeout ran out): the message is not lost.
                self._ctx.dead_letter(message, reason="killed", source=self.name)
                if request is not None:
                    request.fail(ActorStopped(self.name))
                raise
            except Exception as exc:
                self.failed += 1
                if delays is None:
                    delays = backoff_delays(self._ctx.retry, self._ctx.rng)
                delay = next(delays, None)
                if delay is None:
                    self._ctx.dead_letter(message, reason="handler_failed", source=self.name)
                    if request is not None:
                        request.fail(exc)
                    raise
                self._log.warning("handler failed; retrying", error=repr(exc), delay_s=delay)
                await self._ctx.clock.sleep(delay)
                continue
            self.handled += 1
            if request is not None:
                request.reply(result)
            return

    def _on_drop(self, item: object) -> None:
        self._reject(item, "mailbox_full")

    def _reject(self, item: object, reason: str) -> None:
        if type(item) is _Ask:
            item.fail(
                ActorStopped(self.name)
                if reason != "mailbox_full"
                else ChannelFull(self._mailbox.capacity, name=self._mailbox.name)
            )
            item = item.message
        self._ctx.dead_letter(item, reason=reason, source=self.name)

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            name=self.name,
            state=self._state,
            restarts=self.restarts,
            handled=self.handled,
            failed=self.failed,
            mailbox=self._mailbox.statistics(),
        )

    def __repr__(self) -> str:
        return f"<ActorRef {self.name} {self._state}>"


_STOP: Any = object()
