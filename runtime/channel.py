"""Bounded channels with a policy for a full buffer, priority lanes and statistics.

A send that finds room and a receive that finds an item complete without yielding to the event
loop: on the hot path a channel costs a deque operation and two counters. Only a full channel
makes a ``block`` sender wait, and only an empty one makes a receiver wait.

Priorities: a message may carry an ``int`` priority, lower is more urgent (the scheduler's
``priority: 1`` beats ``priority: 9``). Receivers take the most urgent message first, FIFO within
a priority. Messages sent without one get ``DEFAULT_PRIORITY``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, get_args

import anyio
import msgspec

from .exceptions import ChannelClosed, ChannelFull

__all__ = ["DEFAULT_PRIORITY", "Channel", "ChannelStatistics", "Policy", "open_channel"]

T = TypeVar("T")
Policy = Literal["block", "drop_oldest", "drop_newest", "reject"]
POLICIES: tuple[str, ...] = get_args(Policy)
DEFAULT_PRIORITY = 5
_Waiter = asyncio.Future[None]


class ChannelStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one channel."""

    name: str | None
    policy: str
    capacity: int
    depth: int
    high_water: int
    sent: int
    received: int
    dropped: int
    waiting_senders: int
    waiting_receivers: int
    closed: bool


class Channel(Generic[T]):
    """A bounded multi-producer, multi-consumer channel. Create one with ``open_channel``."""

    __slots__ = (
        "_closed",
        "_default",
        "_dropped",
        "_high_water",
        "_lanes",
        "_on_drop",
        "_other",
        "_received",
        "_recv_waiters",
        "_send_waiters",
        "_sent",
        "_size",
        "capacity",
        "name",
        "policy",
    )

    def __init__(
        self,
        capacity: int,
        policy: Policy = "block",
        *,
        name: str | None = None,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        self.capacity = capacity
        self.policy: Policy = policy
        self.name = name
        self._on_drop = on_drop
        # The default lane is a plain deque; other lanes exist only once used. ``_other`` counts
        # the messages outside the default lane, so the common case pops without a scan.
        self._default: deque[T] = deque()
        self._lanes: dict[int, deque[T]] = {DEFAULT_PRIORITY: self._default}
        self._other = 0
        self._size = 0
        self._closed = False
        self._send_waiters: deque[_Waiter] = deque()
        self._recv_waiters: deque[_Waiter] = deque()
        self._sent = 0
        self._received = 0
        self._dropped = 0
        self._high_water = 0

    # -- sending -----------------------------------------------------------------------------

    def send_nowait(self, item: T, *, priority: int = DEFAULT_PRIORITY) -> None:
        """Put ``item`` in the channel now.

        Raises ``ChannelClosed`` after ``close()``; ``ChannelFull`` when full under ``block``
        or ``reject``. Under ``drop_oldest`` and ``drop_newest`` a full channel drops a message
        (counted, handed to ``on_drop``) instead.
        """
        if self._closed:
            raise ChannelClosed(f"{self._label()} is closed")
        if self._size < self.capacity:
            self._push(item, priority)
            return
        policy = self.policy
        if policy == "drop_newest":
            self._sent += 1
            self._drop(item)
        elif policy == "drop_oldest":
            self._drop(self._pop_oldest_least_urgent())
            self._push(item, priority)
        else:
            raise ChannelFull(self.capacity, name=self.name)

    async def send(self, item: T, *, priority: int = DEFAULT_PRIORITY) -> None:
        """Put ``item`` in the channel, waiting for room under the ``block`` policy.

        Returns at once, without yielding, when there is room. Raises ``ChannelClosed`` if the
        channel is (or gets) closed, ``ChannelFull`` under ``reject``.
        """
        size = self._size
        if size < self.capacity and priority == DEFAULT_PRIORITY and not self._closed:
            # Hot path, inlined: room in the default lane.
            self._default.append(item)
            self._size = size = size + 1
            self._sent += 1
            if size > self._high_water:
                self._high_water = size
            if self._recv_waiters:
                self._wake_one(self._recv_waiters)
            return
        if self._closed or size < self.capacity or self.policy != "block":
            self.send_nowait(item, priority=priority)
            return
        while True:
            await self._wait(self._send_waiters)
            if self._closed:
                raise ChannelClosed(f"{self._label()} was closed while sending")
            if self._size < self.capacity:
                self._push(item, priority)
                return

    def _push(self, item: T, priority: int) -> None:
        if priority == DEFAULT_PRIORITY:
            self._default.append(item)
        else:
            lane = self._lanes.get(priority)
            if lane is None:
                lane = self._lanes[priority] = deque()
                self._lanes = dict(sorted(self._lanes.items()))
            lane.append(item)
            self._other += 1
        self._size += 1
        self._sent += 1
        if self._size > self._high_water:
            self._high_water = self._size
        if self._recv_waiters:
            self._wake_one(self._recv_waiters)

    def _pop_oldest_least_urgent(self) -> T:
        for priority in reversed(self._lanes):
            lane = self._lanes[priority]
            if lane:
                if priority != DEFAULT_PRIORITY:
                    self._other -= 1
                self._size -= 1
                return lane.popleft()
        raise AssertionError("unreachable: a full channel has a non-empty lane")

    def _drop(self, item: T) -> None:
        self._dropped += 1
        if self._on_drop is not None:
            self._on_drop(item)

    # -- receiving ---------------------------------------------------------------------------

    def receive_nowait(self) -> T:
        """Take the most urgent, oldest message now.

        Raises ``anyio.WouldBlock`` when empty, ``ChannelClosed`` when empty and closed.
        """
        if self._size == 0:
            if self._closed:
                raise ChannelClosed(f"{self._label()} is closed and empty")
            raise anyio.WouldBlock
        item = self._default.popleft() if self._other == 0 else self._pop_most_urgent()
        self._size -= 1
        self._received += 1
        if self._send_waiters:
            self._wake_one(self._send_waiters)
        return item

    def _pop_most_urgent(self) -> T:
        for priority, lane in self._lanes.items():
            if lane:
                if priority != DEFAULT_PRIORITY:
                    self._other -= 1
                return lane.popleft()
        raise AssertionError("unreachable: _size > 0 with every lane empty")

    async def receive(self) -> T:
        """Take the most urgent, oldest message, waiting while the channel is empty.

        Raises ``ChannelClosed`` once the channel is closed and empty.
        """
        while self._size == 0:
            if self._closed:
                raise ChannelClosed(f"{self._label()} is closed and empty")
            await self._wait(self._recv_waiters)
        if self._other:
            return self.receive_nowait()
        # Hot path, inlined: only the default lane holds messages.
        self._size -= 1
        self._received += 1
        if self._send_waiters:
            self._wake_one(self._send_waiters)
        return self._default.popleft()

    def __aiter__(self) -> Channel[T]:
        return self

    async def __anext__(self) -> T:
        if self._size and not self._other:
            self._size -= 1
            self._received += 1
            if self._send_waiters:
                self._wake_one(self._send_waiters)
            return self._default.popleft()
        try:
            return await self.receive()
        except ChannelClosed:
            raise StopAsyncIteration from None

    async def wait_receivable(self) -> None:
        """Wait until a message is buffered, the channel closes, or ``wake_receivers()`` is called.

        Returns at once, without yielding, if a message is already buffered. For a consumer that
        must also react to something other than messages (an actor told to stop).
        """
        if self._size == 0 and not self._closed:
            await self._wait(self._recv_waiters)

    def wake_receivers(self) -> None:
        """Wake every waiting receiver; ``receive`` goes back to waiting if nothing is there."""
        while self._recv_waiters:
            self._wake_one(self._recv_waiters)

    # -- waiting -----------------------------------------------------------------------------

    async def _wait(self, waiters: deque[_Waiter]) -> None:
        # A bare loop future, not an event object: the waiting path of a ping-pong (an actor's
        # ask) runs this once per message.
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # We were woken and cancelled at once: pass the wake-up on, or it is lost.
                self._wake_one(waiters)
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
            raise

    def _label(self) -> str:
        return f"channel {self.name!r}" if self.name else "channel"

    @staticmethod
    def _wake_one(waiters: deque[_Waiter]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # skip a waiter cancelled but not yet removed
                waiter.set_result(None)
                return

    # -- lifecycle and introspection ---------------------------------------------------------

    def close(self) -> None:
        """No more sends. Receivers still get what is buffered, then ``ChannelClosed``."""
        if self._closed:
            return
        self._closed = True
        for waiters in (self._send_waiters, self._recv_waiters):
            while waiters:
                self._wake_one(waiters)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._size

    def drain_nowait(self) -> list[T]:
        """Take everything buffered, most urgent first, without waiting."""
        items: list[T] = []
        while self._size:
            items.append(self.receive_nowait())
        return items

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            name=self.name,
            policy=self.policy,
            capacity=self.capacity,
            depth=self._size,
            high_water=self._high_water,
            sent=self._sent,
            received=self._received,
            dropped=self._dropped,
            waiting_senders=len(self._send_waiters),
            waiting_receivers=len(self._recv_waiters),
            closed=self._closed,
        )

    def __repr__(self) -> str:
        return (
            f"<Channel {self.name or hex(id(self))} {self.policy} "
            f"{self._size}/{self.capacity}{' closed' if self._closed else ''}>"
        )


def open_channel(
    capacity: int,
    policy: Policy = "block",
    *,
    name: str | None = None,
    on_drop: Callable[[Any], None] | None = None,
) -> Channel[Any]:
    """Open a bounded channel of ``capacity`` messages with the given full-buffer ``policy``.

    ``on_drop`` receives every message a ``drop_*`` policy discards (e.g. to record it as a dead
    letter). Raises ``ValueError`` for a capacity below 1 or an unknown policy.
    """
    return Channel(capacity, policy, name=name, on_drop=on_drop)
