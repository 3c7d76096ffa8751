"""Single flight: concurrent computations of one key run once, and every caller gets the result.

The first caller of a key runs the work; callers arriving meanwhile wait for its outcome, the
value or the error it raised. A waiter that is cancelled stops waiting and disturbs no one. If
the runner is cancelled, its work is abandoned: one of the waiters runs it anew.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import anyio

__all__ = ["Flights"]


class _Flight:
    __slots__ = ("abandoned", "done", "error", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.abandoned = False


class Flights:
    """The computations under way, by key."""

    def __init__(self) -> None:
        self._running: dict[Hashable, _Flight] = {}
        self.joined = 0  # callers that waited for another caller's computation

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._running

    async def run(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        """``await work()`` unless it is under way for ``key``: then wait for its outcome.

        Raises what ``work`` raised (for every caller that waited on it).
        """
        while True:
            flight = self._running.get(key)
            if flight is None:
                return await self._lead(key, work)
            self.joined += 1
            await flight.done.wait()
            if flight.abandoned:
                continue  # the runner was cancelled: run it ourselves, or join the next runner
            if flight.error is not None:
                raise flight.error
            return flight.value

    async def _lead(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        flight = self._running[key] = _Flight()
        try:
            flight.value = await work()
        except anyio.get_cancelled_exc_class():
            flight.abandoned = True
            raise
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            del self._running[key]
            flight.done.set()
        return flight.value
