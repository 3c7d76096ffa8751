"""Channels: full-buffer policies, the no-yield fast path, priority lanes, statistics, close."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runtime.channel import DEFAULT_PRIORITY, Channel, open_channel
from runtime.clock import settle
from runtime.exceptions import ChannelClosed, ChannelFull


def full(capacity: int, policy: Any = "block", **kwargs: Any) -> Channel[Any]:
    """A channel of ``capacity`` already holding 0, 1, ... capacity-1."""
    ch = open_channel(capacity, policy, **kwargs)
    for i in range(capacity):
        ch.send_nowait(i)
    return ch


class Sender:
    """A task that sends one message and records how the send ended."""

    def __init__(self, ch: Channel[Any], item: Any, *, priority: int = DEFAULT_PRIORITY) -> None:
        self.ch, self.item, self.priority = ch, item, priority
        self.scope = anyio.CancelScope()
        self.done = False
        self.error: BaseException | None = None

    async def __call__(self) -> None:
        with self.scope:
            try:
                await self.ch.send(self.item, priority=self.priority)
                self.done = True
            except ChannelClosed as exc:
                self.error = exc


class Receiver:
    """A task that receives one message and records what it got or how it failed."""

    def __init__(self, ch: Channel[Any]) -> None:
        self.ch = ch
        self.scope = anyio.CancelScope()
        self.got: list[Any] = []
        self.error: BaseException | None = None

    async def __call__(self) -> None:
        with self.scope:
            try:
                self.got.append(await self.ch.receive())
            except ChannelClosed as exc:
                self.error = exc


# -- policies when full ---------------------------------------------------------------------


async def test_block_sender_waits_until_a_receiver_makes_room() -> None:
    """Under block, a send to a full channel waits and completes once a receive makes room."""
    ch = full(1)
    sender = Sender(ch, "late")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        assert not sender.done
        assert ch.statistics().waiting_senders == 1
        assert ch.receive_nowait() == 0
        await settle()
        assert sender.done
    assert ch.drain_nowait() == ["late"]
    assert ch.statistics().waiting_senders == 0


async def test_woken_sender_rechecks_room_and_never_overfills() -> None:
    """A woken block sender whose room was taken by another send waits again: depth <= capacity."""
    ch = full(1)
    sender = Sender(ch, "waiting")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        ch.receive_nowait()  # wakes the sender...
        ch.send_nowait("barged")  # ...but this takes the room before it runs
        await settle()
        assert not sender.done
        assert (len(ch), ch.statistics().waiting_senders) == (1, 1)
        assert ch.receive_nowait() == "barged"
        await settle()
        assert sender.done
    assert ch.drain_nowait() == ["waiting"]


async def test_blocked_sender_with_a_priority_lands_in_its_lane() -> None:
    """A block sender that had to wait still delivers its message in its priority's order."""
    ch = full(2)
    sender = Sender(ch, "urgent", priority=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await settle()
        assert ch.receive_nowait() == 0
        await settle()
    assert ch.drain_nowait() == ["urgent", 1]


async def test_send_nowait_on_a_full_block_channel_raises_channel_full() -> None:
    """send_nowait never waits: a full block channel raises ChannelFull naming the capacity."""
    ch = full(2, name="jobs")
    with pytest.raises(ChannelFull, match=r"channel 'jobs' is full \(capacity 2\)") as info:
        ch.send_nowait("x")
    assert info.value.capacity == 2
    assert isinstance(info.value, TimeoutError)
    assert ch.statistics().dropped == 0 and ch.drain_nowait() == [0, 1]


async def test_reject_raises_channel_full_at_once() -> None:
    """Under reject, a send to a full channel raises ChannelFull without waiting or dropping."""
    ch = full(2, "reject")
    with anyio.CancelScope() as scope:
        scope.cancel()  # a send that waited would be cancelled instead of raising
        with pytest.raises(ChannelFull, match="capacity 2"):
            await ch.send("x")
    with pytest.raises(ChannelFull):
        ch.send_nowait("y")
    stats = ch.statistics()
    assert (stats.sent, stats.dropped, stats.depth) == (2, 0, 2)


async def test_drop_newest_discards_the_incoming_message() -> None:
    """Under drop_newest a full channel drops the message being sent and hands it to on_drop."""
    dropped: list[Any] = []
    ch = full(2, "drop_newest", on_drop=dropped.append)
    await ch.send("x")
    ch.send_nowait("y")
    assert dropped == ["x", "y"]
    assert ch.drain_nowait() == [0, 1]
    stats = ch.statistics()
    assert (stats.sent, stats.dropped) == (4, 2)


async def test_drop_oldest_discards_the_oldest_of_the_least_urgent_lane() -> None:
    """Under drop_oldest the oldest message of the least urgent lane makes room for the new one."""
    dropped: list[Any] = []
    ch = open_channel(3, "drop_oldest", on_drop=dropped.append)
    ch.send_nowait("urgent", priority=1)
    ch.send_nowait("d1")
    ch.send_nowait("d2")
    await ch.send("d3")
    assert dropped == ["d1"]
    ch.send_nowait("lazy", priority=9)  # lane 9 is now the least urgent: it holds the victim
    ch.send_nowait("urgent2", priority=1)
    assert dropped == ["d1", "d2", "lazy"]
    assert ch.drain_nowait() == ["urgent", "urgent2", "d3"]
    assert ch.statistics().dropped == 3


async def test_drop_policies_without_on_drop_only_count() -> None:
    """Without an on_drop callback a drop is still counted."""
    for policy in ("drop_oldest", "drop_newest"):
        ch = full(1, policy)
        ch.send_nowait("x")
        assert ch.statistics().dropped == 1
        assert len(ch) == 1


# -- empty channel ---------------------------------------------------------------------------


async def test_receive_nowait_on_empty_raises_would_block() -> None:
    """receive_nowait on an empty, open channel raises anyio.WouldBlock."""
    ch = open_channel(1)
    with pytest.raises(anyio.WouldBlock):
        ch.receive_nowait()


async def test_waiting_receiver_gets_the_next_message() -> None:
    """A receive on an empty channel waits and returns the next message sent."""
    ch = open_channel(1)
    receiver = Receiver(ch)
    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await settle()
        assert ch.statistics().waiting_receivers == 1
        await ch.send("hello")
        await settle()
    assert receiver.got == ["hello"]
    assert ch.statistics().waiting_receivers == 0


# -- the fast path does not yield ------------------------------------------------------------


async def test_send_and_receive_with_room_and_items_do_not_checkpoint() -> None:
    """With room and items, send/receive/async-for complete inside an already-cancelled scope."""
    ch = open_channel(8)
    with anyio.CancelScope() as scope:
        scope.cancel()  # any await that reaches the event loop now raises Cancelled
        await ch.send("a")
        await ch.send("urgent", priority=1)
        await ch.send("b")
        assert await ch.receive() == "urgent"  # the priority-lane path
        assert await ch.receive() == "a"  # the default-lane path
        assert await ch.__anext__() == "b"  # the async-for path
        await ch.send("c")
        async for item in ch:
            assert item == "c"
            break
    assert not scope.cancelled_caught


async def test_a_checkpoint_in_a_cancelled_scope_is_cancelled() -> None:
    """The control for the fast-path test: a real checkpoint there is cancelled."""
    ch = open_channel(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ch.receive()  # empty: this one must wait
    assert scope.cancelled_caught
    assert ch.statistics().waiting_receivers == 0


async def test_fast_path_lets_no_other_task_run() -> None:
    """A thousand sends and receives with room run without any other task getting a turn."""
    ch = open_channel(1000)
    turns: list[int] = []

    async def bystander() -> None:
        while True:
            turns.append(1)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(bystander)
        await anyio.lowlevel.checkpoint()
        before = len(turns)
        for i in range(1000):
            await ch.send(i)
        received = [await ch.receive() for _ in range(1000)]
        assert len(turns) == before
        tg.cancel_scope.cancel()
    assert received == list(range(1000))


# -- priority lanes ---------------------------------------------------------------------------


async def test_urgent_lanes_first_and_fifo_within_a_priority() -> None:
    """Lower priority numbers come out first, FIFO within each, the default lane in its place."""
    ch = open_channel(10)
    sent = [("a", None), ("b", 1), ("c", 9), ("d", 1), ("e", None), ("f", 3), ("g", 9)]
    for item, priority in sent:
        if priority is None:
            await ch.send(item)
        else:
            await ch.send(item, priority=priority)
    assert [ch.receive_nowait(), await ch.receive(), await ch.__anext__()] == ["b", "d", "f"]
    ch.close()
    assert [item async for item in ch] == ["a", "e", "c", "g"]


async def test_lanes_keep_working_after_emptying() -> None:
    """A lane that emptied takes messages again, and the default lane's fast path resumes."""
    ch = open_channel(4)
    ch.send_nowait("x", priority=2)
    assert ch.receive_nowait() == "x"
    ch.send_nowait("d")
    ch.send_nowait("y", priority=2)
    ch.send_nowait("z", priority=7)
    assert ch.drain_nowait() == ["y", "d", "z"]
    ch.send_nowait("plain")
    assert await ch.receive() == "plain"


async def test_drain_nowait_returns_most_urgent_first_and_leaves_it_open() -> None:
    """drain_nowait empties the channel, most urgent first, and the channel stays open."""
    ch = open_channel(5)
    assert ch.drain_nowait() == []
    for item, priority in [("low", 9), ("mid", 5), ("high", 0), ("mid2", 5)]:
        ch.send_nowait(item, priority=priority)
    assert ch.drain_nowait() == ["high", "mid", "mid2", "low"]
    assert len(ch) == 0 and not ch.closed
    assert ch.statistics().received == 4


# -- statistics -------------------------------------------------------------------------------


async def test_statistics_report_every_counter() -> None:
    """statistics() gives name, policy, capacity, depth, high water, counts and waiters."""
    ch = open_channel(2, "drop_newest", name="stats")
    for i in range(3):
        ch.send_nowait(i)
    ch.receive_nowait()
    stats = ch.statistics()
    assert (stats.name, stats.policy, stats.capacity) == ("stats", "drop_newest", 2)
    assert (stats.depth, stats.high_water) == (1, 2)
    assert (stats.sent, stats.received, stats.dropped) == (3, 1, 1)
    assert (stats.waiting_senders, stats.waiting_receivers, stats.closed) == (0, 0, False)
    ch.close()
    assert ch.statistics().closed


async def test_statistics_count_waiting_senders_and_receivers() -> None:
    """Blocked senders and receivers show up in statistics while they wait, and leave after."""
    empty, busy = open_channel(1), full(1)
    receivers = [Receiver(empty) for _ in range(2)]
    senders = [Sender(busy, i) for i in range(3)]
    async with anyio.create_task_group() as tg:
        for receiver in receivers:
            tg.start_soon(receiver)
        for sender in senders:
            tg.start_soon(sender)
        await settle()
        assert empty.statistics().waiting_receivers == 2
        assert busy.statistics().waiting_senders == 3
        tg.cancel_scope.cancel()
    assert empty.statistics().waiting_receivers == 0
    assert busy.statistics().waiting_senders == 0


async def test_high_water_is_the_peak_depth() -> None:
    """high_water remembers the deepest the channel has been, not its current depth."""
    ch = open_channel(10)
    for i in range(7):
        await ch.send(i)
    ch.drain_nowait()
    await ch.send("x", priority=1)
    stats = ch.statistics()
    assert (stats.depth, stats.high_water) == (1, 7)


async def test_statistics_are_a_frozen_snapshot() -> None:
    """A statistics record does not change when the channel does, and cannot be edited."""
    ch = open_channel(3)
    before = ch.statistics()
    ch.send_nowait("x")
    assert before.depth == 0 and ch.statistics().depth == 1
    with pytest.raises(AttributeError):
        before.depth = 5  # type: ignore[misc]


# -- close ------------------------------------------------------------------------------------


async def test_send_after_close_raises_channel_closed() -> None:
    """After close(), send and send_nowait raise ChannelClosed, even with room."""
    ch = open_channel(5, name="jobs")
    ch.close()
    with pytest.raises(ChannelClosed, match="channel 'jobs' is closed"):
        await ch.send("x")
    with pytest.raises(ChannelClosed):
        ch.send_nowait("x", priority=1)
    assert ch.statistics().sent == 0


async def test_receivers_get_what_is_buffered_then_channel_closed() -> None:
    """A closed channel still yields its buffered messages, then receive raises ChannelClosed."""
    ch = open_channel(5, name="jobs")
    for item in ("a", "b", "c"):
        await ch.send(item)
    ch.close()
    assert ch.receive_nowait() == "a"
    assert await ch.receive() == "b"
    assert ch.drain_nowait() == ["c"]
    with pytest.raises(ChannelClosed, match="channel 'jobs' is closed and empty"):
        await ch.receive()
    with pytest.raises(ChannelClosed, match="channel 'jobs' is closed and empty"):
        ch.receive_nowait()


async def test_async_for_ends_after_close_and_the_buffer() -> None:
    """async for yields everything sent, then ends when the channel is closed and empty."""
    ch = open_channel(3)
    seen: list[Any] = []

    async def consume() -> None:
        async for item in ch:
            seen.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(10):
            await ch.send(i)
        ch.close()
    assert seen == list(range(10))


async def test_close_wakes_waiting_receivers_with_channel_closed() -> None:
    """Receivers waiting on an empty channel are woken by close() and raise ChannelClosed."""
    ch = open_channel(1)
    receivers = [Receiver(ch) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for receiver in receivers:
            tg.start_soon(receiver)
        await settle()
        ch.close()
    assert all(isinstance(r.error, ChannelClosed) and r.got == [] for r in receivers)


async def test_close_wakes_waiting_senders_with_channel_closed() -> None:
    """Senders waiting on a full block channel are woken by close() and raise ChannelClosed."""
    ch = full(1, name="jobs")
    senders = [Sender(ch, i) for i in range(2)]
    async with anyio.create_task_group() as tg:
        for sender in senders:
            tg.start_soon(sender)
        await settle()
        ch.close()
    for sender in senders:
        assert not sender.done
        assert isinstance(sender.error, ChannelClosed)
        assert "channel 'jobs' was closed while sending" in str(sender.error)
    assert ch.drain_nowait() == [0]


async def test_close_is_idempotent_and_shown_in_repr() -> None:
    """Closing twice is harmless; closed and repr say the channel is closed."""
    ch = open_channel(4, "reject", name="q")
    ch.send_nowait(1)
    assert repr(ch) == "<Channel q reject 1/4>"
    ch.close()
    ch.close()
    assert ch.closed
    assert repr(ch) == "<Channel q reject 1/4 closed>"


# -- cancellation -----------------------------------------------------------------------------


async def test_cancelled_waiting_receiver_passes_its_wake_up_on() -> None:
    """A receiver cancelled just as a message woke it hands the wake-up on: nothing is lost."""
    ch = open_channel(4)
    first, second = Receiver(ch), Receiver(ch)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await settle()
        tg.start_soon(second)
        await settle()
        first.scope.cancel()  # cancelled...
        ch.send_nowait("msg")  # ...and woken before it runs again
        await settle()
        assert second.got == ["msg"]
    assert first.got == [] and first.scope.cancelled_caught
    assert len(ch) == 0


async def test_cancelled_waiting_sender_passes_its_wake_up_on() -> None:
    """A sender cancelled just as room appeared hands the wake-up to the next waiting sender."""
    ch = full(1)
    first, second = Sender(ch, "first"), Sender(ch, "second")
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await settle()
        tg.start_soon(second)
        await settle()
        first.scope.cancel()
        assert ch.receive_nowait() == 0
        await settle()
        assert second.done
    assert not first.done
    assert ch.drain_nowait() == ["second"]


async def test_cancelled_waiter_that_was_not_woken_leaves_the_queue() -> None:
    """A cancelled waiter is removed from the waiters, so a later message is not sent its way."""
    ch = open_channel(1)
    first, second = Receiver(ch), Receiver(ch)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
        await settle()
        first.scope.cancel()
        await settle()
        assert ch.statistics().waiting_receivers == 1
        ch.send_nowait("msg")
        await settle()
    assert (first.got, second.got) == ([], ["msg"])


# -- many producers and consumers -------------------------------------------------------------


async def test_many_producers_and_consumers_deliver_each_message_exactly_once() -> None:
    """Four producers and three consumers over a tiny block channel: every message, once."""
    ch = open_channel(3)
    consumed: list[list[tuple[int, int]]] = [[] for _ in range(3)]

    async def produce(producer: int) -> None:
        for seq in range(250):
            await ch.send((producer, seq))

    async def consume(out: list[tuple[int, int]]) -> None:
        async for item in ch:
            out.append(item)
            if len(out) % 7 == 0:
                await anyio.lowlevel.checkpoint()  # let the others interleave

    async with anyio.create_task_group() as consumers:
        for out in consumed:
            consumers.start_soon(consume, out)
        async with anyio.create_task_group() as producers:
            for producer in range(4):
                producers.start_soon(produce, producer)
        ch.close()
    everything = sorted(item for out in consumed for item in out)
    assert everything == [(p, s) for p in range(4) for s in range(250)]
    for out in consumed:  # each producer's messages arrive in order
        for producer in range(4):
            seqs = [s for p, s in out if p == producer]
            assert seqs == sorted(seqs)
    stats = ch.statistics()
    assert (stats.sent, stats.received, stats.dropped, stats.high_water) == (1000, 1000, 0, 3)


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5, "3", None])
def test_bad_capacity_raises_value_error(capacity: Any) -> None:
    """A capacity that is not an int >= 1 raises ValueError naming the value."""
    with pytest.raises(ValueError, match=rf"capacity must be an int >= 1, got {capacity!r}"):
        open_channel(capacity)


def test_bad_policy_raises_value_error_listing_the_policies() -> None:
    """An unknown policy raises ValueError listing the valid ones and the bad value."""
    with pytest.raises(
        ValueError,
        match=r"policy must be one of block, drop_oldest, drop_newest, reject; got 'fifo'",
    ):
        open_channel(4, "fifo")  # type: ignore[arg-type]


async def test_unnamed_channel_messages_read_cleanly() -> None:
    """An unnamed channel's errors say "channel is closed", with no gap for a missing name."""
    ch = open_channel(1)
    ch.close()
    with pytest.raises(ChannelClosed, match=r"^channel is closed$"):
        ch.send_nowait(1)
    with pytest.raises(ChannelClosed, match=r"^channel is closed and empty$"):
        await ch.receive()


async def test_wake_receivers_lets_a_waiter_return_without_a_message() -> None:
    """wait_receivable returns on wake_receivers; receive goes back to waiting instead."""
    ch = open_channel(1)
    woke: list[str] = []

    async def waiter() -> None:
        await ch.wait_receivable()
        woke.append("waiter")

    async def receiver() -> None:
        woke.append(await ch.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(receiver)
        await settle()
        ch.wake_receivers()
        await settle()
        assert woke == ["waiter"]
        ch.send_nowait("item")
        await settle()
    assert woke == ["waiter", "item"]
