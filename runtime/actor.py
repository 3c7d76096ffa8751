"""Actors: a mailbox, a handler and a loop — the mechanism kept small and visible.

An ``ActorRef`` is an actor's address. It owns the mailbox (a bounded ``Channel``) and outlives
every instance of the actor: when an instance crashes, the messages waiting in the mailbox are
handled by the instance its supervisor starts next.

A handler that raises is retried in place with exponential backoff and full jitter
(``RetryPolicy``); after the last retry the message goes to the dead letters (an ``ask`` gets the
error) and the instance crashes, so its supervisor restarts it from a clean state.
"""

from __future__ import annotations

import asyncio
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
    """A request waiting for its reply: the envelope ``ask`` puts in the mailbox.

    The reply travels through a bare loop future: cheaper than an event, and the kernel runs
    on asyncio (uvloop included).
    """

    __slots__ = ("future", "message")

    def __init__(self, message: object) -> None:
        self.message = message
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def reply(self, value: object) -> None:
        if not self.future.done():  # the asker may have timed out or been cancelled
            self.future.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


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

        Raises ``DeadlineExceeded`` after ``timeout_s`` (waiting for mailbox room counts),
        ``ActorStopped``, or whatever the handler raised on its last retry.
        """
        request = _Ask(message)
        clock = self._ctx.clock
        if timeout_s is None:
            await self.tell(request, priority=priority)
            return await request.future
        deadline = clock.now() + timeout_s
        mailbox = self._mailbox
        if mailbox.policy == "block" and mailbox._size >= mailbox.capacity:
            try:
                with clock.fail_after(timeout_s):
                    await self.tell(request, priority=priority)
            except TimeoutError:
                raise self._timed_out(timeout_s) from None
        else:
            self.tell_nowait(request, priority=priority)
        # A timer, not a cancel scope: the common case then costs one future and one handle.
        timer = clock.call_later(
            deadline - clock.now(), lambda: request.fail(self._timed_out(timeout_s))
        )
        try:
            return await request.future
        finally:
            timer.cancel()

    def _timed_out(self, timeout_s: float) -> DeadlineExceeded:
        return DeadlineExceeded(f"ask to actor {self.name!r} timed out after {timeout_s}s")

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
        else:
            self._mailbox.wake_receivers()  # an idle instance wakes, sees the request, returns

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
        # No cancel scope per message: a stop request wakes an idle instance through the
        # mailbox, and a busy one sees the request after its current message.
        mailbox = self._mailbox
        while True:
            while mailbox._size:  # the kernel reads its own channel's depth without a call
                if self._stop_requested and not self._drain:
                    return
                await self._handle(instance, mailbox.receive_nowait())
            if (self._stop_requested and not self._drain) or mailbox.closed:
                return
            await mailbox.wait_receivable()

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
