"""Channel and actor throughput against the usual alternatives, side by side in one process.

Cases (each run for several rounds, the median rate reported):

- channel: 1 producer, 1 consumer, capacity 1000. Our ``Channel`` (``await ch.send`` /
  ``async for``) against ``asyncio.Queue(1000)`` (``await q.put`` / ``await q.get``) and an anyio
  memory object stream used the plain way (``await send.send`` / ``async for``).
- actors: tell throughput (N tells to a counting actor, until all are handled) and sequential
  ask throughput of our ``Actor`` under a ``Supervisor`` on the real clock, against Pykka's
  ``ThreadingActor`` (driven from a plain thread, outside any event loop).

Run ``python -m bench.channel [--quick] [--rounds N]``. Prints a table and writes
``bench/results/channel.json``. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import pykka

from runtime.actor import Actor, ActorRef
from runtime.channel import open_channel
from runtime.supervisor import ChildSpec, Supervisor

RESULTS_PATH = Path(__file__).parent / "results" / "channel.json"
CAPACITY = 1000


@dataclass(frozen=True)
class Sizes:
    """How much work each round does."""

    messages: int  # channel throughput, per implementation
    tells: int
    asks: int
    rounds: int


FULL = Sizes(messages=1_000_000, tells=200_000, asks=20_000, rounds=5)
QUICK = Sizes(messages=100_000, tells=20_000, asks=2_000, rounds=3)


@dataclass(frozen=True)
class Case:
    """One comparison: our rate against a baseline's, and the ratio it must reach."""

    name: str
    ours: str
    baseline: str
    ours_per_s: float
    baseline_per_s: float
    target_ratio: float
    ours_rounds_per_s: list[float]
    baseline_rounds_per_s: list[float]

    @property
    def ratio(self) -> float:
        return self.ours_per_s / self.baseline_per_s

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target_ratio


# -- channel throughput ------------------------------------------------------------------------


async def channel_ours(n: int) -> float:
    """Seconds to pass ``n`` messages through our channel, one producer and one consumer."""
    ch = open_channel(CAPACITY)
    received = 0

    async def produce() -> None:
        for i in range(n):
            await ch.send(i)
        ch.close()

    async def consume() -> None:
        nonlocal received
        async for _ in ch:
            received += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        tg.start_soon(produce)
    elapsed = time.perf_counter() - start
    assert received == n, (received, n)
    return elapsed


async def channel_asyncio_queue(n: int) -> float:
    """Seconds to pass ``n`` messages through ``asyncio.Queue(1000)``; ``None`` ends the stream."""
    queue: asyncio.Queue[int | None] = asyncio.Queue(CAPACITY)
    received = 0

    async def produce() -> None:
        for i in range(n):
            await queue.put(i)
        await queue.put(None)

    async def consume() -> None:
        nonlocal received
        while await queue.get() is not None:
            received += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        tg.start_soon(produce)
    elapsed = time.perf_counter() - start
    assert received == n, (received, n)
    return elapsed


async def channel_anyio_stream(n: int) -> float:
    """Seconds to pass ``n`` messages through an anyio memory object stream of 1000."""
    send, receive = anyio.create_memory_object_stream[int](CAPACITY)
    received = 0

    async def produce() -> None:
        async with send:
            for i in range(n):
                await send.send(i)

    async def consume() -> None:
        nonlocal received
        async with receive:
            async for _ in receive:
                received += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        tg.start_soon(produce)
    elapsed = time.perf_counter() - start
    assert received == n, (received, n)
    return elapsed


# -- our actors --------------------------------------------------------------------------------


class Counter(Actor):
    """Counts what it receives, sets ``done`` at ``expected`` and replies with the count."""

    def __init__(self, expected: int, done: anyio.Event) -> None:
        self.count = 0
        self.expected = expected
        self.done = done

    async def receive(self, message: Any) -> Any:
        self.count += 1
        if self.count == self.expected:
            self.done.set()
        return self.count


def counter_supervisor(expected: int, done: anyio.Event) -> tuple[Supervisor, ActorRef]:
    """A supervisor on the real clock (the default context) with one counting child."""
    sup = Supervisor("bench")
    spec = ChildSpec("counter", lambda: Counter(expected, done), mailbox_capacity=CAPACITY)
    return sup, sup.add(spec)


async def actor_tell_ours(n: int) -> float:
    """Seconds for ``n`` tells to a counting actor until the last one is handled."""
    done = anyio.Event()
    sup, ref = counter_supervisor(n, done)
    async with sup:  # returns once the child is up
        start = time.perf_counter()
        for i in range(n):
            await ref.tell(i)
        await done.wait()
        return time.perf_counter() - start


async def actor_ask_ours(n: int) -> float:
    """Seconds for ``n`` sequential asks to a counting actor."""
    sup, ref = counter_supervisor(-1, anyio.Event())
    async with sup:
        start = time.perf_counter()
        for i in range(n):
            await ref.ask(i)
        elapsed = time.perf_counter() - start
    assert ref.handled == n, (ref.handled, n)
    return elapsed


# -- Pykka -------------------------------------------------------------------------------------


class PykkaCounter(pykka.ThreadingActor):
    """Pykka's counterpart of ``Counter``."""

    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self.count = 0
        self.expected = expected
        self.done = done

    def on_receive(self, message: Any) -> Any:
        self.count += 1
        if self.count == self.expected:
            self.done.set()
        return self.count


def actor_tell_pykka(n: int) -> float:
    """Seconds for ``n`` Pykka tells until the last one is handled."""
    done = threading.Event()
    ref = PykkaCounter.start(n, done)
    try:
        start = time.perf_counter()
        for i in range(n):
            ref.tell(i)
        done.wait()
        return time.perf_counter() - start
    finally:
        ref.stop()


def actor_ask_pykka(n: int) -> float:
    """Seconds for ``n`` sequential blocking Pykka asks."""
    ref = PykkaCounter.start(-1, threading.Event())
    try:
        start = time.perf_counter()
        for i in range(n):
            ref.ask(i)
        return time.perf_counter() - start
    finally:
        ref.stop()


# -- running -----------------------------------------------------------------------------------

Timings = dict[str, list[float]]


async def async_round(sizes: Sizes, timings: Timings) -> None:
    """One round of every event-loop case, recording messages per second."""
    cases: list[tuple[str, Callable[[int], Awaitable[float]], int]] = [
        ("channel/ours", channel_ours, sizes.messages),
        ("channel/asyncio.Queue", channel_asyncio_queue, sizes.messages),
        ("channel/anyio stream", channel_anyio_stream, sizes.messages),
        ("tell/ours", actor_tell_ours, sizes.tells),
        ("ask/ours", actor_ask_ours, sizes.asks),
    ]
    for key, run, n in cases:
        timings.setdefault(key, []).append(n / await run(n))


def thread_round(sizes: Sizes, timings: Timings) -> None:
    """One round of the Pykka cases, in this (plain) thread."""
    timings.setdefault("tell/pykka", []).append(sizes.tells / actor_tell_pykka(sizes.tells))
    timings.setdefault("ask/pykka", []).append(sizes.asks / actor_ask_pykka(sizes.asks))


def measure(sizes: Sizes) -> Timings:
    """Every case, ``sizes.rounds`` times, interleaved so that drift hits all of them alike."""
    timings: Timings = {}
    for i in range(sizes.rounds):
        print(f"round {i + 1}/{sizes.rounds} ...", file=sys.stderr, flush=True)
        anyio.run(async_round, sizes, timings, backend="asyncio")
        thread_round(sizes, timings)
    return timings


COMPARISONS = [
    # name, ours, baseline, target ratio
    ("channel throughput", "channel/ours", "channel/asyncio.Queue", 0.7),
    ("channel throughput", "channel/ours", "channel/anyio stream", 5.0),
    ("actor tell", "tell/ours", "tell/pykka", 3.0),
    ("actor ask", "ask/ours", "ask/pykka", 10.0),
]


def compare(timings: Timings) -> list[Case]:
    return [
        Case(
            name=name,
            ours=ours,
            baseline=baseline,
            ours_per_s=statistics.median(timings[ours]),
            baseline_per_s=statistics.median(timings[baseline]),
            target_ratio=target,
            ours_rounds_per_s=timings[ours],
            baseline_rounds_per_s=timings[baseline],
        )
        for name, ours, baseline, target in COMPARISONS
    ]


def table(cases: list[Case]) -> str:
    """A Markdown table of the cases (it goes to BENCHMARKS.md as it is)."""
    lines = [
        "| case | ours | msg/s | baseline | msg/s | ratio | target | result |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.ours} | {c.ours_per_s:,.0f} | {c.baseline} | "
            f"{c.baseline_per_s:,.0f} | {c.ratio:.2f}x | >= {c.target_ratio:g}x | "
            f"{'PASS' if c.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "anyio": _version("anyio"),
        "pykka": _version("pykka"),
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def write_results(cases: list[Case], sizes: Sizes, path: Path = RESULTS_PATH) -> None:
    record = {
        "benchmark": "channel",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "sizes": asdict(sizes),
        "cases": [{**asdict(c), "ratio": round(c.ratio, 3), "pass": c.passed} for c in cases],
        "pass": all(c.passed for c in cases),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every target is met, else 1."""
    parser = argparse.ArgumentParser(prog="python -m bench.channel", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (median)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds must be >= 1, got {args.rounds}")
        sizes = Sizes(sizes.messages, sizes.tells, sizes.asks, args.rounds)
    cases = compare(measure(sizes))
    print(table(cases))
    write_results(cases, sizes, args.output)
    print(f"wrote {args.output}")
    return 0 if all(c.passed for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
