"""Typed events and the bus that carries them from publishers to subscribers.

Events are frozen msgspec Structs in one tagged union (the tag, field ``type``, is the class name),
so they log, encode and decode as JSON with one decoder built once. Every event carries ``at``
(wall-clock seconds, stamped by the publisher from its injected clock) and ``actor`` (who
published it).

The event ``QuotaExceeded`` here is what the quota enforcer *publishes*; the exception that
callers *catch* is ``runtime.exceptions.QuotaExceeded``. Import them by module to keep the two
apart (``events.QuotaExceeded``).

The bus never lets a slow subscriber slow a publisher: ``publish`` is synchronous, and each
subscriber has its own bounded channel that drops its oldest event when full (counted). Nobody
listening is the common case on hot paths (a cache hit), so ``wants(type)`` lets a publisher skip
building an event at all.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeAlias, TypeVar, get_args, overload

import msgspec

from .channel import Channel
from .clock import Clock

__all__ = [
    "EVENT_TYPES",
    "ActorCrashed",
    "ActorRestarted",
    "AlertEvent",
    "AlertFiring",
    "AlertPending",
    "AlertResolved",
    "AnyEvent",
    "AutoRecoveryCompleted",
    "AutoRecoveryStarted",
    "CacheEviction",
    "CacheExpired",
    "CacheHit",
    "CacheInvalidated",
    "CacheMiss",
    "CircuitBreakerStateChanged",
    "ConfigReloaded",
    "DeadlineMissed",
    "Event",
    "EventBus",
    "EventBusStatistics",
    "PluginTerminated",
    "PluginThrottled",
    "QuotaExceeded",
    "Subscription",
    "SubscriptionStatistics",
    "TaskFinished",
    "TaskQueued",
    "TaskStarted",
    "decode_event",
    "encode_event",
]

TaskId: TypeAlias = int | str


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The base of every event: when (wall-clock seconds) and who published it."""

    at: float
    actor: str


# -- cache ----------------------------------------------------------------------------------


class CacheHit(Event, frozen=True, kw_only=True):
    """A read found ``key`` in ``tier``."""

    key: str
    namespace: str
    tier: str


class CacheMiss(Event, frozen=True, kw_only=True):
    """A read did not find ``key``: in ``tier``, or in any tier when ``tier`` is ``None``."""

    key: str
    namespace: str
    tier: str | None = None


class CacheEviction(Event, frozen=True, kw_only=True):
    """``key`` was evicted from ``tier`` to make room (``reason``: e.g. entries, bytes)."""

    key: str
    namespace: str
    tier: str
    reason: str = "capacity"


class CacheExpired(Event, frozen=True, kw_only=True):
    """``key`` outlived its time to live (``ttl``) or its time to idle (``tti``)."""

    key: str
    namespace: str
    tier: str
    kind: Literal["ttl", "tti"] = "ttl"


class CacheInvalidated(Event, frozen=True, kw_only=True):
    """Entries were invalidated: one ``key``, a whole ``namespace``, or everything with ``tag``."""

    namespace: str
    key: str | None = None
    tag: str | None = None
    count: int = 1


# -- scheduler ------------------------------------------------------------------------------


class TaskQueued(Event, frozen=True, kw_only=True):
    """A task was admitted; ``deadline_s`` is its relative deadline, if any."""

    task_id: TaskId
    task_class: str
    priority: int
    deadline_s: float | None = None
    plugin: str | None = None
    queue_depth: int = 0


class TaskStarted(Event, frozen=True, kw_only=True):
    """A task started running ``run_in`` ("loop", "thread" or "process") after waiting."""

    task_id: TaskId
    task_class: str
    queue_wait_s: float
    run_in: str = "loop"
    plugin: str | None = None


class TaskFinished(Event, frozen=True, kw_only=True):
    """A task finished; ``error`` is ``"Type: message"`` when it failed (``ok`` false)."""

    task_id: TaskId
    task_class: str
    queue_wait_s: float
    run_s: float
    ok: bool
    error: str | None = None
    plugin: str | None = None


class DeadlineMissed(Event, frozen=True, kw_only=True):
    """A task finished (or was still running) ``late_by_s`` past its ``deadline_s``."""

    task_id: TaskId
    task_class: str
    deadline_s: float
    late_by_s: float
    plugin: str | None = None


# -- quotas ---------------------------------------------------------------------------------


class QuotaExceeded(Event, frozen=True, kw_only=True):
    """A plugin went past its ``quota`` (the event; the exception is in runtime.exceptions)."""

    plugin: str
    quota: str
    measured: float
    limit: float
    retry_after_s: float | None = None


class PluginThrottled(Event, frozen=True, kw_only=True):
    """A plugin is throttled for ``throttle_s`` seconds (``None``: until it is back in quota)."""

    plugin: str
    quota: str
    throttle_s: float | None = None


class PluginTerminated(Event, frozen=True, kw_only=True):
    """A plugin's work was terminated (its worker process ``pid``, when it had one)."""

    plugin: str
    quota: str
    reason: str = ""
    pid: int | None = None


# -- alerts ---------------------------------------------------------------------------------


class AlertEvent(Event, frozen=True, kw_only=True):
    """The base of the alert events; subscribe to it to get all three."""

    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    value: float | None = None
    active_since: float | None = None


class AlertPending(AlertEvent, frozen=True, kw_only=True):
    """A rule's expression became true; it fires if it stays true for the rule's ``for``."""


class AlertFiring(AlertEvent, frozen=True, kw_only=True):
    """An alert fires."""


class AlertResolved(AlertEvent, frozen=True, kw_only=True):
    """A firing alert resolved (after the rule's ``keep_firing_for``)."""


# -- actors, recovery, configuration --------------------------------------------------------


class ActorCrashed(Event, frozen=True, kw_only=True):
    """Actor ``name`` crashed with ``error`` (``"Type: message"``); ``restarts`` so far."""

    name: str
    error: str
    restarts: int


class ActorRestarted(Event, frozen=True, kw_only=True):
    """Actor ``name`` was restarted after a backoff of ``delay_s``."""

    name: str
    restarts: int
    delay_s: float = 0.0


class CircuitBreakerStateChanged(Event, frozen=True, kw_only=True):
    """Circuit breaker ``name`` went from ``old`` to ``new`` (closed, open, half_open)."""

    name: str
    old: str
    new: str


class AutoRecoveryStarted(Event, frozen=True, kw_only=True):
    """A recovery ``action`` (e.g. shed_background) started, triggered by ``alert``."""

    action: str
    alert: str | None = None
    reason: str = ""


class AutoRecoveryCompleted(Event, frozen=True, kw_only=True):
    """A recovery ``action`` finished after ``duration_s``; ``ok`` false with ``detail`` if not."""

    action: str
    alert: str | None = None
    ok: bool = True
    detail: str = ""
    duration_s: float = 0.0


class ConfigReloaded(Event, frozen=True, kw_only=True):
    """A reload: ``changed`` $.paths applied; or ``ok`` false, nothing applied, ``problems``."""

    changed: list[str]
    ok: bool = True
    source: str | None = None
    restart_required: list[str] = []
    problems: list[str] = []


AnyEvent: TypeAlias = (
    CacheHit | CacheMiss | CacheEviction | CacheExpired | CacheInvalidated
    | TaskQueued | TaskStarted | TaskFinished | DeadlineMissed
    | QuotaExceeded | PluginThrottled | PluginTerminated
    | AlertPending | AlertFiring | AlertResolved
    | ActorCrashed | ActorRestarted | CircuitBreakerStateChanged
    | AutoRecoveryStarted | AutoRecoveryCompleted | ConfigReloaded
)  # fmt: skip
EVENT_TYPES: tuple[type[Event], ...] = get_args(AnyEvent)

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    """The event as JSON, with its class name in the ``type`` field."""
    return _ENCODER.encode(event)


def decode_event(data: bytes | str) -> AnyEvent:
    """An event from JSON made by ``encode_event``.

    Raises ``msgspec.ValidationError`` (an unknown ``type``, a missing or mistyped field) or
    ``msgspec.DecodeError`` (not JSON).
    """
    event: AnyEvent = _DECODER.decode(data)
    return event


# -- the bus --------------------------------------------------------------------------------

E = TypeVar("E", bound=Event)
E_co = TypeVar("E_co", bound=Event, covariant=True)


class SubscriptionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one subscription: what it wants, holds, got and lost."""

    name: str | None
    types: list[str]
    depth: int
    capacity: int
    delivered: int
    dropped: int


class EventBusStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the bus; ``dropped`` counts every subscriber's losses, past ones too."""

    published: dict[str, int]
    published_total: int
    subscribers: int
    dropped: int
    subscriptions: list[SubscriptionStatistics]
    closed: bool


class Subscription(Generic[E_co]):
    """The events of the wanted types, in publish order, from subscribe until close.

    Iterate with ``async for``; use as a (sync or async) context manager to unsubscribe on exit.
    When full, it drops its oldest event (counted in ``dropped``) rather than slow the publisher.
    """

    __slots__ = ("_bus", "_channel", "_dropped", "name", "types")

    def __init__(
        self, bus: EventBus, types: tuple[type[Event], ...], capacity: int, name: str | None
    ) -> None:
        self._bus = bus
        self.types = types
        self.name = name
        self._dropped = 0
        self._channel: Channel[E_co] = Channel(
            capacity, "drop_oldest", name=f"events:{name or hex(id(self))}", on_drop=self._lost
        )

    def accepts(self, event_type: type[Event]) -> bool:
        """Whether events of ``event_type`` are delivered here."""
        return not self.types or issubclass(event_type, self.types)

    def _lost(self, _event: object) -> None:
        self._dropped += 1
        self._bus._dropped += 1

    @property
    def dropped(self) -> int:
        """How many events this subscriber lost because it was full."""
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._channel.closed

    def __len__(self) -> int:
        return len(self._channel)

    def close(self) -> None:
        """Unsubscribe: no new events; iteration ends after what is already buffered."""
        self._bus._unsubscribe(self)
        self._channel.close()

    def receive_nowait(self) -> E_co:
        """The next buffered event. Raises ``anyio.WouldBlock`` if none, ``ChannelClosed`` once
        closed and drained."""
        return self._channel.receive_nowait()

    async def receive(self) -> E_co:
        """The next event, waiting for one. Raises ``ChannelClosed`` once closed and drained."""
        return await self._channel.receive()

    def __aiter__(self) -> Subscription[E_co]:
        return self

    async def __anext__(self) -> E_co:
        return await self._channel.__anext__()

    def __enter__(self) -> Subscription[E_co]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription[E_co]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> SubscriptionStatistics:
        channel = self._channel.statistics()
        return SubscriptionStatistics(
            name=self.name,
            types=[t.__name__ for t in self.types],
            depth=channel.depth,
            capacity=channel.capacity,
            delivered=channel.sent,
            dropped=self._dropped,
        )

    def __repr__(self) -> str:
        wanted = ",".join(t.__name__ for t in self.types) or "*"
        return f"<Subscription {self.name or hex(id(self))} {wanted} {self._channel!r}>"


class EventBus:
    """Fans events out to subscribers, each through its own bounded drop-oldest channel.

    ``clock`` stamps events built by ``emit``. Raises ``ValueError`` for a
    ``subscriber_capacity`` below 1.
    """

    def __init__(self, *, clock: Clock, subscriber_capacity: int = 1000) -> None:
        if type(subscriber_capacity) is not int or subscriber_capacity < 1:
            raise ValueError(
                f"subscriber_capacity must be an int >= 1, got {subscriber_capacity!r}"
            )
        self.clock = clock
        self.subscriber_capacity = subscriber_capacity
        # A tuple, replaced on every change: publish iterates it without copying, and a
        # subscriber that closes during publish does not disturb the loop.
        self._subscriptions: tuple[Subscription[Event], ...] = ()
        self._wanted: dict[type[Event], bool] = {}
        self._published: dict[type[Event], int] = {}
        self._dropped = 0
        self._closed = False

    def wants(self, event_type: type[Event]) -> bool:
        """Whether any subscriber would receive an event of ``event_type`` (cheap; cached)."""
        if not self._subscriptions:
            return False
        wanted = self._wanted.get(event_type)
        if wanted is None:
            wanted = any(sub.accepts(event_type) for sub in self._subscriptions)
            self._wanted[event_type] = wanted
        return wanted

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber that wants it. Never blocks, never raises for
        a slow subscriber: a full one loses its oldest event instead."""
        event_type = type(event)
        self._published[event_type] = self._published.get(event_type, 0) + 1
        for sub in self._subscriptions:
            if not sub.types or isinstance(event, sub.types):
                sub._channel.send_nowait(event)

    def emit(self, event_type: type[E], *, actor: str, **fields: Any) -> None:
        """Build and publish an ``event_type`` stamped with the clock's wall time, only if
        someone wants it. Raises ``TypeError`` for fields the event does not have."""
        if self.wants(event_type):
            self.publish(event_type(at=self.clock.wall(), actor=actor, **fields))

    @overload
    def subscribe(
        self, event_type: type[E], /, *, capacity: int | None = None, name: str | None = None
    ) -> Subscription[E]: ...

    @overload
    def subscribe(
        self, *event_types: type[Event], capacity: int | None = None, name: str | None = None
    ) -> Subscription[Event]: ...

    def subscribe(
        self, *event_types: type[Event], capacity: int | None = None, name: str | None = None
    ) -> Subscription[Event]:
        """Receive the events of ``event_types`` (and their subclasses; none means all).

        ``capacity`` defaults to the bus's ``subscriber_capacity``. After ``close()`` the
        subscription is born closed: its iteration ends at once. Raises ``TypeError`` for a type
        that is not an ``Event`` subclass and ``ValueError`` for a capacity below 1.
        """
        for event_type in event_types:
            if not (isinstance(event_type, type) and issubclass(event_type, Event)):
                raise TypeError(
                    f"event_types must be Event subclasses from runtime.events, got {event_type!r}"
                )
        sub: Subscription[Event] = Subscription(
            self, event_types, self.subscriber_capacity if capacity is None else capacity, name
        )
        if self._closed:
            sub._channel.close()
        else:
            self._subscriptions = (*self._subscriptions, sub)
            self._wanted.clear()
        return sub

    def _unsubscribe(self, sub: Subscription[Event]) -> None:
        if sub in self._subscriptions:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not sub)
            self._wanted.clear()

    def close(self) -> None:
        """End every subscription once drained of what it holds; later publishes reach nobody."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, ()
        self._wanted.clear()
        for sub in subscriptions:
            sub._channel.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> EventBusStatistics:
        published = {t.__name__: n for t, n in self._published.items()}
        return EventBusStatistics(
            published=published,
            published_total=sum(published.values()),
            subscribers=len(self._subscriptions),
            dropped=self._dropped,
            subscriptions=[sub.statistics() for sub in self._subscriptions],
            closed=self._closed,
        )
