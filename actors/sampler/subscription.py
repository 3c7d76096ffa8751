"""A subscriber's view of the samples: a bounded channel that drops its oldest when full.

A slow subscriber loses old samples (counted in ``dropped``) and never slows the Sampler.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.channel import Channel

from .sample import Sample

__all__ = ["SampleSubscription"]


class SampleSubscription:
    """Every Sample taken from subscribe until close, newest ``capacity`` kept when behind.

    Iterate with ``async for``; use as a (sync or async) context manager to unsubscribe on
    exit. Iteration ends when the subscription or the Sampler is closed. Raises ``ValueError``
    for a capacity below 1.
    """

    __slots__ = ("_channel", "_dropped", "_on_close")

    def __init__(self, capacity: int, *, on_close: Callable[[SampleSubscription], None]) -> None:
        self._dropped = 0
        self._on_close = on_close
        self._channel: Channel[Sample] = Channel(
            capacity, "drop_oldest", name="sampler.subscriber", on_drop=self._lost
        )

    def _lost(self, _sample: Sample) -> None:
        self._dropped += 1

    def _deliver(self, sample: Sample) -> None:
        if not self._channel.closed:
            self._channel.send_nowait(sample)

    @property
    def dropped(self) -> int:
        """How many samples this subscriber lost because it fell behind."""
        return self._dropped

    @property
    def capacity(self) -> int:
        return self._channel.capacity

    @property
    def closed(self) -> bool:
        return self._channel.closed

    def __len__(self) -> int:
        return len(self._channel)

    def close(self) -> None:
        """Unsubscribe: no new samples; iteration ends after what is already buffered."""
        self._on_close(self)
        self._channel.close()

    def receive_nowait(self) -> Sample:
        """The oldest buffered sample. Raises ``anyio.WouldBlock`` if none, ``ChannelClosed``
        once closed and drained."""
        return self._channel.receive_nowait()

    async def receive(self) -> Sample:
        """The next sample, waiting for one. Raises ``ChannelClosed`` once closed and drained."""
        return await self._channel.receive()

    def __aiter__(self) -> SampleSubscription:
        return self

    async def __anext__(self) -> Sample:
        return await self._channel.__anext__()

    def __enter__(self) -> SampleSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> SampleSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SampleSubscription {len(self)}/{self.capacity} dropped={self._dropped}>"
