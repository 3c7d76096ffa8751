"""Typed events (names, encoding) and the event bus (filtering, overflow, lifecycle)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from runtime import events
from runtime.clock import FakeClock, settle
from runtime.events import (
    EVENT_TYPES,
    ActorCrashed,
    AlertEvent,
    AlertFiring,
    AlertPending,
    AlertResolved,
    CacheHit,
    CacheMiss,
    Event,
    EventBus,
    TaskFinished,
    decode_event,
    encode_event,
)
from runtime.exceptions import ChannelClosed

DESIGN_NAMES = [
    "CacheHit", "CacheMiss", "CacheEviction", "CacheExpired", "CacheInvalidated",
    "TaskQueued", "TaskStarted", "TaskFinished", "DeadlineMissed", "QuotaExceeded",
    "PluginThrottled", "PluginTerminated", "AlertPending", "AlertFiring", "AlertResolved",
    "ActorCrashed", "ActorRestarted", "CircuitBreakerStateChanged", "AutoRecoveryStarted",
    "AutoRecoveryCompleted", "ConfigReloaded",
]  # fmt: skip

STAMP: dict[str, Any] = {"at": 1_800_000_000.5, "actor": "test"}
SAMPLES: list[Event] = [
    events.CacheHit(**STAMP, key="k", namespace="response", tier="l1"),
    events.CacheMiss(**STAMP, key="k", namespace="response"),
    events.CacheEviction(**STAMP, key="k", namespace="embedding", tier="l2", reason="bytes"),
    events.CacheExpired(**STAMP, key="k", namespace="response", tier="l1", kind="tti"),
    events.CacheInvalidated(**STAMP, namespace="response", tag="weather", count=3),
    events.TaskQueued(**STAMP, task_id=7, task_class="voice", priority=1, deadline_s=1.0),
    events.TaskStarted(**STAMP, task_id="t-7", task_class="voice", queue_wait_s=0.002),
    events.TaskFinished(
        **STAMP,
        task_id=7,
        task_class="voice",
        queue_wait_s=0.002,
        run_s=0.3,
        ok=False,
        error="OSError: down",
        plugin="weather",
    ),
    events.DeadlineMissed(**STAMP, task_id=7, task_class="voice", deadline_s=1.0, late_by_s=0.2),
    events.QuotaExceeded(**STAMP, plugin="weather", quota="rate", measured=5, limit=2),
    events.PluginThrottled(**STAMP, plugin="weather", quota="rate", throttle_s=0.5),
    events.PluginTerminated(**STAMP, plugin="weather", quota="memory", pid=4242),
    events.AlertPending(**STAMP, name="HighMemoryUsage", labels={"severity": "warning"}),
    events.AlertFiring(**STAMP, name="HighMemoryUsage", value=91.5, active_since=1.0),
    events.AlertResolved(**STAMP, name="HighMemoryUsage", annotations={"summary": "ok"}),
    events.ActorCrashed(**STAMP, name="sampler", error="KeyError: 'x'", restarts=2),
    events.ActorRestarted(**STAMP, name="sampler", restarts=3, delay_s=0.1),
    events.CircuitBreakerStateChanged(**STAMP, name="webhook", old="closed", new="open"),
    events.AutoRecoveryStarted(**STAMP, action="shed_background", alert="HighCpu"),
    events.AutoRecoveryCompleted(**STAMP, action="shed_background", ok=False, detail="none"),
    events.ConfigReloaded(**STAMP, changed=["$.sampler.interval_ms"], source="config.yaml"),
]


def hit(key: str = "k") -> CacheHit:
    return CacheHit(at=0.0, actor="cache", key=key, namespace="response", tier="l1")


def miss(key: str = "k") -> CacheMiss:
    return CacheMiss(at=0.0, actor="cache", key=key, namespace="response")


# -- the events -----------------------------------------------------------------------------


def test_every_design_event_exists_tagged_with_its_class_name() -> None:
    """EVENT_TYPES holds exactly the events DESIGN.md names, each tagged with its class name."""
    assert [t.__name__ for t in EVENT_TYPES] == DESIGN_NAMES
    for event_type in EVENT_TYPES:
        assert event_type.__struct_config__.tag == event_type.__name__


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_events_round_trip_through_json(event: Event) -> None:
    """decode_event(encode_event(e)) gives back an equal event of the same type."""
    data = encode_event(event)
    assert msgspec.json.decode(data)["type"] == type(event).__name__
    decoded = decode_event(data)
    assert type(decoded) is type(event)
    assert decoded == event


def test_samples_cover_every_event_type() -> None:
    """The round-trip samples include one event of every type."""
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)


def test_decode_rejects_unknown_types_and_bad_fields() -> None:
    """An unknown tag or a mistyped field raises ValidationError naming the problem."""
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'Nope'"):
        decode_event(b'{"type": "Nope", "at": 0, "actor": "x"}')
    with pytest.raises(msgspec.ValidationError, match=r"\$\.restarts"):
        decode_event(
            b'{"type":"ActorCrashed","at":0,"actor":"x","name":"a","error":"e","restarts":"two"}'
        )


def test_decode_rejects_non_json() -> None:
    """Bytes that are not JSON raise DecodeError."""
    with pytest.raises(msgspec.DecodeError):
        decode_event(b"not json")


def test_events_are_frozen_and_keyword_only() -> None:
    """Events cannot be changed after publishing, nor built positionally."""
    event = hit()
    with pytest.raises(AttributeError):
        event.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ActorCrashed(0.0, "sup", "a", "e", 1)  # type: ignore[call-arg]


def test_quota_event_is_distinct_from_the_exception() -> None:
    """events.QuotaExceeded is an Event, not the QuotaExceeded exception callers catch."""
    from runtime.exceptions import QuotaExceeded as QuotaExceededError

    assert issubclass(events.QuotaExceeded, Event)
    assert not issubclass(events.QuotaExceeded, BaseException)
    assert issubclass(QuotaExceededError, RuntimeError)


# -- the bus: delivery and filtering --------------------------------------------------------


async def test_subscriber_gets_only_the_types_it_asked_for(clock: FakeClock) -> None:
    """A typed subscription skips other events; an untyped one receives everything."""
    bus = EventBus(clock=clock)
    hits = bus.subscribe(CacheHit)
    everything = bus.subscribe()
    bus.publish(miss())
    bus.publish(hit())
    assert hits.receive_nowait() == hit()
    with pytest.raises(anyio.WouldBlock):
        hits.receive_nowait()
    assert [everything.receive_nowait() for _ in range(2)] == [miss(), hit()]


async def test_subscribing_to_a_base_type_receives_its_subclasses(clock: FakeClock) -> None:
    """Subscribing to AlertEvent delivers pending, firing and resolved alerts."""
    bus = EventBus(clock=clock)
    alerts = bus.subscribe(AlertEvent)
    for alert_type in (AlertPending, AlertFiring, AlertResolved):
        bus.publish(alert_type(at=0.0, actor="alerter", name="HighCpu"))
    bus.publish(hit())
    received = [type(alerts.receive_nowait()) for _ in range(len(alerts))]
    assert received == [AlertPending, AlertFiring, AlertResolved]


async def test_async_iteration_wakes_on_publish(clock: FakeClock) -> None:
    """A subscriber waiting in ``async for`` receives events as they are published."""
    bus = EventBus(clock=clock)
    received: list[Event] = []

    async def consume() -> None:
        with bus.subscribe(CacheHit) as sub:
            async for event in sub:
                received.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await settle()
        bus.publish(hit("a"))
        await settle()
        assert received == [hit("a")]
        bus.publish(hit("b"))
        await settle()
        assert received == [hit("a"), hit("b")]
        tg.cancel_scope.cancel()


# -- overflow: the publisher never waits ----------------------------------------------------


async def test_full_subscriber_drops_its_oldest_events_and_counts_them(clock: FakeClock) -> None:
    """Past its capacity a subscriber keeps the newest events; the losses are counted."""
    bus = EventBus(clock=clock)
    sub = bus.subscribe(capacity=2)
    for n in range(5):
        bus.publish(hit(str(n)))
    assert [sub.receive_nowait() for _ in range(2)] == [hit("3"), hit("4")]
    assert sub.dropped == 3
    assert bus.statistics().dropped == 3


async def test_a_slow_subscriber_neither_blocks_the_publisher_nor_a_fast_one(
    clock: FakeClock,
) -> None:
    """Publishing to a full subscriber returns at once; another subscriber still gets all."""
    bus = EventBus(clock=clock)
    slow = bus.subscribe(capacity=1)
    fast = bus.subscribe(CacheHit, capacity=100)
    for n in range(50):
        bus.publish(hit(str(n)))  # synchronous: there is nothing to await, so nothing to wait on
    assert [fast.receive_nowait().key for _ in range(50)] == [str(n) for n in range(50)]
    assert slow.dropped == 49
    assert fast.dropped == 0


async def test_subscription_capacity_defaults_to_the_bus_setting(clock: FakeClock) -> None:
    """Without a capacity, a subscription holds subscriber_capacity events."""
    bus = EventBus(clock=clock, subscriber_capacity=3)
    sub = bus.subscribe()
    for _ in range(5):
        bus.publish(hit())
    assert len(sub) == 3
    assert sub.statistics().capacity == 3


# -- wants and emit -------------------------------------------------------------------------


async def test_wants_tells_publishers_whether_anyone_listens(clock: FakeClock) -> None:
    """wants() is false with no subscriber or none for the type, true for wanted types."""
    bus = EventBus(clock=clock)
    assert bus.wants(CacheHit) is False
    sub = bus.subscribe(AlertEvent)
    assert bus.wants(AlertFiring) is True
    assert bus.wants(CacheHit) is False
    other = bus.subscribe(CacheHit)
    assert bus.wants(CacheHit) is True
    other.close()
    assert bus.wants(CacheHit) is False
    sub.close()
    assert bus.wants(AlertFiring) is False


async def test_emit_stamps_wall_time_and_actor(clock: FakeClock) -> None:
    """emit builds the event with the clock's wall time and the given actor, then publishes."""
    bus = EventBus(clock=clock)
    await clock.advance(2.5)
    with bus.subscribe(ActorCrashed) as sub:
        bus.emit(ActorCrashed, actor="root", name="sampler", error="E: x", restarts=1)
        event = sub.receive_nowait()
    assert event == ActorCrashed(
        at=clock.wall(), actor="root", name="sampler", error="E: x", restarts=1
    )


async def test_emit_builds_nothing_when_nobody_listens(clock: FakeClock) -> None:
    """emit skips an unwanted event entirely: not built, not counted as published."""
    bus = EventBus(clock=clock)
    bus.subscribe(CacheHit)
    bus.emit(ActorCrashed, actor="root", name="a", error="e", restarts=0, bogus=1)
    assert bus.statistics().published == {}


async def test_emit_rejects_unknown_fields(clock: FakeClock) -> None:
    """emit of a wanted event with a field it does not have raises TypeError."""
    bus = EventBus(clock=clock)
    bus.subscribe()
    with pytest.raises(TypeError):
        bus.emit(ActorCrashed, actor="root", name="a", error="e", restarts=0, bogus=1)


# -- lifecycle ------------------------------------------------------------------------------


async def test_leaving_the_context_unsubscribes(clock: FakeClock) -> None:
    """After a (sync or async) with-block the subscription gets nothing more."""
    bus = EventBus(clock=clock)
    with bus.subscribe() as sync_sub:
        pass
    async with bus.subscribe() as async_sub:
        pass
    bus.publish(hit())
    for sub in (sync_sub, async_sub):
        assert sub.closed
        with pytest.raises(ChannelClosed):
            sub.receive_nowait()
    assert bus.statistics().subscribers == 0


async def test_closing_a_subscription_still_yields_what_it_holds(clock: FakeClock) -> None:
    """close() stops new events, but buffered ones are still delivered before the end."""
    bus = EventBus(clock=clock)
    sub = bus.subscribe()
    bus.publish(hit("a"))
    sub.close()
    sub.close()  # idempotent
    bus.publish(hit("b"))
    assert [event async for event in sub] == [hit("a")]


async def test_bus_close_ends_every_iteration_after_draining(clock: FakeClock) -> None:
    """EventBus.close() lets each subscriber finish what it holds, then ends its loop."""
    bus = EventBus(clock=clock)
    got: dict[str, list[Event]] = {"a": [], "b": []}

    async def consume(label: str) -> None:
        async for event in bus.subscribe(name=label):
            got[label].append(event)

    with anyio.fail_after(5):  # a loop that never ends fails instead of hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, "a")
            tg.start_soon(consume, "b")
            await settle()
            bus.publish(hit("1"))
            bus.publish(hit("2"))
            bus.close()
    assert got == {"a": [hit("1"), hit("2")], "b": [hit("1"), hit("2")]}
    assert bus.closed


async def test_after_close_publish_is_harmless_and_subscriptions_end_at_once(
    clock: FakeClock,
) -> None:
    """Publishing to a closed bus raises nothing; a new subscription is born closed."""
    bus = EventBus(clock=clock)
    bus.close()
    bus.publish(hit())
    late = bus.subscribe()
    assert late.closed
    assert [event async for event in late] == []
    assert bus.wants(CacheHit) is False


# -- statistics and validation --------------------------------------------------------------


async def test_statistics_count_published_events_per_type(clock: FakeClock) -> None:
    """statistics() counts publishes per type name, subscribers and their losses."""
    bus = EventBus(clock=clock)
    bus.publish(hit())
    sub = bus.subscribe(CacheMiss, capacity=1, name="misses")
    bus.publish(miss())
    bus.publish(miss())
    stats = bus.statistics()
    assert stats.published == {"CacheHit": 1, "CacheMiss": 2}
    assert stats.published_total == 3
    assert stats.subscribers == 1
    [sub_stats] = stats.subscriptions
    assert (sub_stats.name, sub_stats.types) == ("misses", ["CacheMiss"])
    assert (sub_stats.depth, sub_stats.delivered, sub_stats.dropped) == (1, 2, 1)
    assert sub.dropped == 1


async def test_dropped_total_survives_unsubscribing(clock: FakeClock) -> None:
    """The bus's dropped total keeps the losses of subscribers that have since left."""
    bus = EventBus(clock=clock)
    with bus.subscribe(capacity=1):
        bus.publish(hit())
        bus.publish(hit())
    assert bus.statistics().dropped == 1


@pytest.mark.parametrize(
    "bad",
    [
        TaskFinished(at=0, actor="x", task_id=1, task_class="c", queue_wait_s=0, run_s=0, ok=True),
        int,
        "CacheHit",
    ],
)
async def test_subscribe_rejects_what_is_not_an_event_type(clock: FakeClock, bad: Any) -> None:
    """Subscribing to something other than an Event subclass raises TypeError naming it."""
    bus = EventBus(clock=clock)
    with pytest.raises(TypeError, match="event_types"):
        bus.subscribe(bad)


async def test_subscribe_rejects_a_bad_capacity(clock: FakeClock) -> None:
    """A subscription capacity below 1 raises ValueError."""
    with pytest.raises(ValueError, match="capacity"):
        EventBus(clock=clock).subscribe(capacity=0)


@pytest.mark.parametrize("capacity", [0, -5, 2.0, True])
def test_bus_rejects_a_bad_subscriber_capacity(clock: FakeClock, capacity: Any) -> None:
    """A subscriber_capacity that is not an int >= 1 raises ValueError naming it."""
    with pytest.raises(ValueError, match="subscriber_capacity"):
        EventBus(clock=clock, subscriber_capacity=capacity)
