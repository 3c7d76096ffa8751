"""Blocking calls grouped by where they happened: how often, how long, computing or waiting.

The watchdog reports each block; the bottleneck report wants the places that cost the loop the
most. A place (function, file, line) accumulates its count, total and longest block and the
mean CPU use of its blocks, so the report can say "move it to a thread" (it waited) or "to a
process" (it computed: in a thread it would still hold the GIL).
"""

from __future__ import annotations

from collections import deque

import msgspec

from .lag import BlockingCall
from .stacks import StackFrame

__all__ = ["BlockingSite", "BlockingSites"]

Site = tuple[str, str, int]


class BlockingSite(msgspec.Struct, frozen=True, kw_only=True):
    """One place that blocked the loop: ``count`` blocks, ``total_ms`` in all, the longest
    ``max_ms``. ``computing``: most of its blocks computed rather than waited (``None``:
    unknown); ``cpu_percent``: the mean CPU use of the blocks where it was measured;
    ``stack`` is the latest block's."""

    function: str
    file: str
    line: int
    count: int
    total_ms: float
    max_ms: float
    computing: bool | None
    cpu_percent: float | None
    last_at: float
    stack: list[StackFrame]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class _Tally:
    __slots__ = ("computed", "count", "cpu_n", "cpu_sum", "last", "max_ms", "total_ms", "waited")

    def __init__(self, call: BlockingCall) -> None:
        self.count = self.cpu_n = self.computed = self.waited = 0
        self.total_ms = self.max_ms = self.cpu_sum = 0.0
        self.last = call

    def add(self, call: BlockingCall) -> None:
        self.count += 1
        self.total_ms += call.blocked_ms
        self.max_ms = max(self.max_ms, call.blocked_ms)
        if call.cpu_percent is not None:
            self.cpu_sum += call.cpu_percent
            self.cpu_n += 1
        if call.computing is not None:
            self.computed += call.computing
            self.waited += not call.computing
        self.last = call

    def site(self) -> BlockingSite:
        last = self.last
        return BlockingSite(
            function=last.function,
            file=last.file,
            line=last.line,
            count=self.count,
            total_ms=self.total_ms,
            max_ms=self.max_ms,
            computing=self.computed > self.waited if self.computed or self.waited else None,
            cpu_percent=self.cpu_sum / self.cpu_n if self.cpu_n else None,
            last_at=last.at,
            stack=last.stack,
        )


class BlockingSites:
    """Blocking calls by place, at most ``max_sites`` places (the one that cost least is
    forgotten first), and the ``recent`` latest calls. Raises ``ValueError`` for sizes < 1."""

    def __init__(self, *, max_sites: int = 256, recent: int = 50) -> None:
        if max_sites < 1 or recent < 1:
            raise ValueError(f"max_sites and recent must be >= 1, got {max_sites}, {recent}")
        self.max_sites = max_sites
        self.total = 0
        self.recent: deque[BlockingCall] = deque(maxlen=recent)
        self._tallies: dict[Site, _Tally] = {}

    def add(self, call: BlockingCall) -> None:
        """Count one blocking call at its place."""
        key = (call.function, call.file, call.line)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= self.max_sites:
                cheapest = min(self._tallies, key=lambda k: self._tallies[k].total_ms)
                del self._tallies[cheapest]
            tally = self._tallies[key] = _Tally(call)
        tally.add(call)
        self.total += 1
        self.recent.append(call)

    def top(self, n: int | None = None) -> list[BlockingSite]:
        """The places that cost the loop the most blocked time, worst first (all for None)."""
        ranked = sorted(self._tallies.values(), key=lambda t: (-t.total_ms, -t.max_ms))
        return [t.site() for t in ranked[:n]]

    def __len__(self) -> int:
        return len(self._tallies)
