"""Cache operations against the usual alternatives, side by side in one process.

Cases (each run for several rounds, interleaved, the median rate reported):

- L1: a hit, a miss and a set through the cache's public API (``await cache.get(k)``,
  ``await cache.set(k, v)``) on an L1-only cache with TTL, time to idle, a byte limit,
  statistics and an event bus on (as under a Runtime), against ``cachetools.TTLCache`` (``get``,
  and ``[k]`` for reference) and ``cachetools.LRUCache``. Once with an ``lru`` L1 (TTLCache is
  LRU underneath) and once with the default ``tinylfu`` L1; ``get_nowait`` (no coroutine) too.
  Hits follow a Zipf-like sequence over 10,000 keys, all present.
- SQLite: 64 concurrent readers (``await cache.get``) of an SQLite-only cache against
  ``diskcache.Cache.get`` on the same data, diskcache run sequentially in one thread and in 64
  threads (the faster is the baseline), and, for reference, as an async program must run it
  (``await anyio.to_thread.run_sync(disk.get, k)`` from 64 tasks); writes of a write-behind
  SQLite tier (``await cache.set``, timed until everything is committed) against
  ``diskcache.Cache.set`` (sequential).
- Redis: sequential and 64-concurrent reads through a Redis-only cache against raw redis-py
  (``await client.get``), on a ``redis-server`` the benchmark starts (skipped without one).

Run ``python -m bench.cache_ops [--quick] [--rounds N]``. Prints a table and writes
``bench/results/cache_ops.json``. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import cachetools
import diskcache

from actors.cache import Cache
from runtime.actor import ActorContext
from runtime.clock import RealClock
from runtime.config import parse_config
from runtime.events import EventBus

RESULTS_PATH = Path(__file__).parent / "results" / "cache_ops.json"
KEYS = 10_000
READERS = 64
VALUE = {"text": "It is 21 degrees and sunny in Paris. " * 4, "tokens": 42}  # ~170 bytes


@dataclass(frozen=True)
class Sizes:
    """How much work each round does."""

    l1_ops: int  # per L1 case
    sqlite_reads: int  # in all, over the readers
    sqlite_writes: int  # at least KEYS: the reads find every key
    redis_reads: int
    rounds: int


FULL = Sizes(
    l1_ops=200_000, sqlite_reads=64_000, sqlite_writes=20_000, redis_reads=20_000, rounds=5
)
QUICK = Sizes(l1_ops=50_000, sqlite_reads=12_800, sqlite_writes=10_000, redis_reads=4_000, rounds=3)


@dataclass(frozen=True)
class Case:
    """One comparison: our rate against a baseline's, and the ratio it must reach (if any)."""

    name: str
    ours: str
    baseline: str
    ours_per_s: float
    baseline_per_s: float
    target_ratio: float | None
    ours_rounds_per_s: list[float]
    baseline_rounds_per_s: list[float]

    @property
    def ratio(self) -> float:
        return self.ours_per_s / self.baseline_per_s

    @property
    def passed(self) -> bool:
        return self.target_ratio is None or self.ratio >= self.target_ratio


Timings = dict[str, list[float]]


def zipf_keys(n: int, seed: int = 1) -> list[str]:
    """``n`` keys drawn from the 10,000 with a Zipf-like (Pareto) skew: every one present."""
    rnd = random.Random(seed)
    return [f"key{min(KEYS - 1, int(rnd.paretovariate(1.0)) - 1)}" for _ in range(n)]


def l1_config(policy: str) -> Any:
    text = f"""
cache:
  tiers:
    - {{name: l1, backend: memory, policy: {policy}, max_entries: {KEYS},
        max_bytes: 64000000, ttl_s: 3600, tti_s: 1800}}
"""
    return parse_config(text, env={})


def runtime_context() -> ActorContext:
    """A context like a Runtime's: the real clock and an event bus without subscribers."""
    clock = RealClock()
    return ActorContext(clock=clock, events=EventBus(clock=clock))


# -- L1 ----------------------------------------------------------------------------------------


async def l1_round(sizes: Sizes, timings: Timings) -> None:
    """One round of every L1 case (ops per second): the cases take turns, chunk by chunk."""
    hits = zipf_keys(sizes.l1_ops)
    misses = [f"absent{i % KEYS}" for i in range(sizes.l1_ops)]
    writes = [f"key{i % KEYS}" for i in range(sizes.l1_ops)]
    ttl: cachetools.TTLCache[str, Any] = cachetools.TTLCache(KEYS, ttl=3600)
    lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(KEYS)
    for index in range(KEYS):
        ttl[f"key{index}"] = lru[f"key{index}"] = VALUE
    reads: Runners = {
        "TTLCache.get": sync(ttl.get),
        "TTLCache[k]": sync(ttl.__getitem__),
        "LRUCache.get": sync(lru.get),
    }
    sets: Runners = {
        "TTLCache": sync(lambda k: ttl.__setitem__(k, VALUE)),
        "LRUCache": sync(lambda k: lru.__setitem__(k, VALUE)),
    }
    for policy in ("lru", "tinylfu"):
        cache = Cache(l1_config(policy), runtime_context())
        for index in range(KEYS):
            await cache.set(f"key{index}", VALUE)
        reads[f"ours {policy}"] = functools.partial(timed_async, cache.get)
        reads[f"ours {policy} get_nowait"] = sync(cache.get_nowait)
        sets[f"ours {policy}"] = functools.partial(timed_async, functools.partial(set_value, cache))
    absent = {name: run for name, run in reads.items() if name != "TTLCache[k]"}  # KeyError
    for kind, keys, runners in (
        ("hit", hits, reads),
        ("miss", misses, absent),
        ("set", writes, sets),
    ):
        for name, rate in (await take_turns(runners, keys)).items():
            timings.setdefault(f"{kind}/{name}", []).append(rate)


Runner = Callable[[list[str]], Awaitable[float]]
Runners = dict[str, Runner]
CHUNKS = 20  # turns per case and round: each sees the machine's load of the whole round
IO_CHUNKS = 4  # fewer for 64 readers: each turn starts them anew, and they must get going


async def take_turns(runners: Runners, keys: list[str], chunks: int = CHUNKS) -> dict[str, float]:
    """Each runner's rate over ``keys``, run in ``chunks`` slices, the runners taking turns
    slice by slice (a load that comes and goes weighs on all of them alike)."""
    elapsed = dict.fromkeys(runners, 0.0)
    size = max(1, len(keys) // chunks)
    for start in range(0, len(keys), size):
        part = keys[start : start + size]
        for name, run in runners.items():
            elapsed[name] += await run(part)
    return {name: len(keys) / seconds for name, seconds in elapsed.items()}


def sync(call: Callable[[str], Any]) -> Runner:
    """A runner of a synchronous call, in this thread."""

    async def run(keys: list[str]) -> float:
        return timed(call, keys)

    return run


async def set_value(cache: Cache, key: str) -> None:
    await cache.set(key, VALUE)


def timed(call: Callable[[str], Any], keys: list[str]) -> float:
    start = time.perf_counter()
    for key in keys:
        call(key)
    return time.perf_counter() - start


async def timed_async(call: Callable[[str], Awaitable[Any]], keys: list[str]) -> float:
    start = time.perf_counter()
    for key in keys:
        await call(key)
    return time.perf_counter() - start


def record(timings: Timings, key: str, ops: int, elapsed_s: float) -> None:
    timings.setdefault(key, []).append(ops / elapsed_s)


# -- SQLite ------------------------------------------------------------------------------------


def sqlite_config(path: Path, write: str) -> Any:
    text = f"""
cache:
  write_behind: {{interval_ms: 500, batch: 256, max_pending: 4096}}
  tiers: [{{name: l3, backend: sqlite, path: "{path}", write: {write}}}]
"""
    return parse_config(text, env={})


async def sqlite_round(sizes: Sizes, timings: Timings, directory: Path, round_: int) -> None:
    """Writes (ours write-behind, diskcache) into fresh stores, then reads of what they hold,
    ours and diskcache taking turns chunk by chunk."""
    keys = [f"key{i % KEYS}" for i in range(sizes.sqlite_writes)]
    reads = zipf_keys(sizes.sqlite_reads, seed=round_)
    disk = diskcache.Cache(str(directory / f"diskcache-{round_}"))
    cache = Cache(sqlite_config(directory / f"ours-{round_}.db", "behind"), runtime_context())
    try:
        async with cache.running():

            async def ours_writes(part: list[str]) -> float:
                start = time.perf_counter()
                for key in part:
                    await cache.set(key, VALUE)
                await cache.flush()  # timed until committed
                return time.perf_counter() - start

            writers = {
                "ours behind": ours_writes,
                "diskcache.set": sync(lambda k: disk.set(k, VALUE)),
            }
            for name, rate in (await take_turns(writers, keys, IO_CHUNKS)).items():
                timings.setdefault(f"write/{name}", []).append(rate)

            async def disk_get_in_thread(key: str) -> Any:
                return await anyio.to_thread.run_sync(disk.get, key)

            readers = {
                f"ours {READERS} readers": functools.partial(concurrent_reads, cache.get),
                "diskcache.get 1 thread": sync(disk.get),
                # What an async program may do (a blocking get must not run on the loop):
                f"diskcache.get to_thread {READERS} tasks": functools.partial(
                    concurrent_reads, disk_get_in_thread
                ),
            }
            for name, rate in (await take_turns(readers, reads, IO_CHUNKS)).items():
                timings.setdefault(f"read/{name}", []).append(rate)
            assert cache.statistics().tiers[0].misses == 0, "every key was written"
        elapsed = await anyio.to_thread.run_sync(diskcache_threads, disk, reads)
        record(timings, f"read/diskcache.get {READERS} threads", len(reads), elapsed)
    finally:
        disk.close()


async def concurrent_reads(get: Callable[[str], Awaitable[Any]], keys: list[str]) -> float:
    """Seconds for ``READERS`` tasks to read ``keys`` (each its share, in turn)."""

    async def reader(index: int) -> None:
        for key in keys[index::READERS]:
            await get(key)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index in range(READERS):
            tg.start_soon(reader, index)
    return time.perf_counter() - start


def diskcache_threads(disk: diskcache.Cache, keys: list[str]) -> float:
    """Seconds for ``READERS`` threads to read ``keys`` from diskcache (each its share)."""
    barrier = threading.Barrier(READERS + 1)

    def reader(index: int) -> None:
        barrier.wait()
        for key in keys[index::READERS]:
            disk.get(key)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# -- Redis -------------------------------------------------------------------------------------


@contextmanager
def redis_server(directory: Path) -> Iterator[str | None]:
    """A redis-server on a free loopback port (its URL), or ``None`` when it is not installed."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(directory)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def redis_round(sizes: Sizes, timings: Timings, url: str, round_: int) -> None:
    """Reads through a Redis-only cache against raw redis-py, sequential and concurrent,
    taking turns chunk by chunk."""
    from redis.asyncio import Redis

    text = f"cache:\n  tiers: [{{name: shared, backend: redis, url: '{url}'}}]\n"
    cache = Cache(parse_config(text, env={}), runtime_context())
    reads = zipf_keys(sizes.redis_reads, seed=round_)
    client = Redis.from_url(url)

    def raw(part: list[str]) -> list[str]:
        return [f"jarvis:cache:response:{key}" for key in part]

    async def raw_sequential(part: list[str]) -> float:
        return await timed_async(client.get, raw(part))

    async def raw_concurrent(part: list[str]) -> float:
        return await concurrent_reads(client.get, raw(part))

    runners: Runners = {
        "ours sequential": functools.partial(timed_async, cache.get),
        "redis-py sequential": raw_sequential,
        f"ours {READERS} readers": functools.partial(concurrent_reads, cache.get),
        f"redis-py {READERS} readers": raw_concurrent,
    }
    async with cache.running():
        for index in range(KEYS):
            await cache.set(f"key{index}", VALUE)
        for name, rate in (await take_turns(runners, reads, IO_CHUNKS)).items():
            timings.setdefault(f"redis/{name}", []).append(rate)
        assert cache.statistics().tiers[0].misses == 0, "every key was written"
    await client.aclose()


# -- running -----------------------------------------------------------------------------------


def measure(sizes: Sizes) -> tuple[Timings, bool]:
    """Every case, ``sizes.rounds`` times, interleaved; whether Redis could be measured."""
    timings: Timings = {}
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        directory = Path(tmp)
        with redis_server(directory) as url:
            for index in range(sizes.rounds):
                print(f"round {index + 1}/{sizes.rounds} ...", file=sys.stderr, flush=True)
                anyio.run(l1_round, sizes, timings, backend="asyncio")
                anyio.run(sqlite_round, sizes, timings, directory, index, backend="asyncio")
                if url is not None:
                    anyio.run(redis_round, sizes, timings, url, index, backend="asyncio")
    return timings, url is not None


COMPARISONS: list[tuple[str, str, str, float | None]] = [
    # name, ours, baseline, target ratio (ours / baseline, in operations per second)
    ("L1 hit (lru L1)", "hit/ours lru", "hit/TTLCache.get", 1.0),
    ("L1 hit (tinylfu L1)", "hit/ours tinylfu", "hit/TTLCache.get", 1.0),
    ("L1 hit, get_nowait (lru)", "hit/ours lru get_nowait", "hit/TTLCache.get", None),
    ("L1 hit, get_nowait (tinylfu)", "hit/ours tinylfu get_nowait", "hit/TTLCache.get", None),
    ("L1 hit (lru L1)", "hit/ours lru", "hit/TTLCache[k]", None),
    ("L1 hit (lru L1)", "hit/ours lru", "hit/LRUCache.get", None),
    ("L1 miss (lru L1)", "miss/ours lru", "miss/TTLCache.get", None),
    ("L1 miss (tinylfu L1)", "miss/ours tinylfu", "miss/TTLCache.get", None),
    ("L1 set (lru L1)", "set/ours lru", "set/TTLCache", None),
    ("L1 set (tinylfu L1)", "set/ours tinylfu", "set/TTLCache", None),
    ("L1 set (lru L1)", "set/ours lru", "set/LRUCache", None),
    ("SQLite reads", f"read/ours {READERS} readers", "read/diskcache.get best", 1.0),
    (
        "SQLite reads",
        f"read/ours {READERS} readers",
        f"read/diskcache.get to_thread {READERS} tasks",
        None,
    ),
    ("SQLite writes", "write/ours behind", "write/diskcache.set", 2.0),
    ("Redis reads", "redis/ours sequential", "redis/redis-py sequential", None),
    ("Redis reads", f"redis/ours {READERS} readers", f"redis/redis-py {READERS} readers", None),
]


def compare(timings: Timings) -> list[Case]:
    one, many = "read/diskcache.get 1 thread", f"read/diskcache.get {READERS} threads"
    if one in timings and many in timings:
        best = max((one, many), key=lambda k: statistics.median(timings[k]))
        timings["read/diskcache.get best"] = timings[best]
        print(f"diskcache reads: the faster is {best!r}", file=sys.stderr)
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
        if ours in timings and baseline in timings
    ]


def table(cases: list[Case]) -> str:
    """A Markdown table of the cases (it goes to BENCHMARKS.md as it is)."""
    lines = [
        "| case | ours | ops/s | µs/op | baseline | ops/s | µs/op | ratio | target | result |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        target = "-" if c.target_ratio is None else f">= {c.target_ratio:g}x"
        result = "-" if c.target_ratio is None else ("PASS" if c.passed else "FAIL")
        lines.append(
            f"| {c.name} | {c.ours} | {c.ours_per_s:,.0f} | {1e6 / c.ours_per_s:.2f} | "
            f"{c.baseline} | {c.baseline_per_s:,.0f} | {1e6 / c.baseline_per_s:.2f} | "
            f"{c.ratio:.2f}x | {target} | {result} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        **{dist: version(dist) for dist in ("cachetools", "diskcache", "redis", "aiosqlite")},
    }


def write_results(
    cases: list[Case], timings: Timings, sizes: Sizes, redis: bool, path: Path
) -> None:
    record = {
        "benchmark": "cache_ops",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "sizes": asdict(sizes),
        "redis_measured": redis,
        "cases": [{**asdict(c), "ratio": round(c.ratio, 3), "pass": c.passed} for c in cases],
        "medians_per_s": {key: round(statistics.median(v)) for key, v in sorted(timings.items())},
        "pass": all(c.passed for c in cases),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every target is met, else 1."""
    parser = argparse.ArgumentParser(prog="python -m bench.cache_ops", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a quarter of the work, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (median)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds must be >= 1, got {args.rounds}")
        sizes = Sizes(sizes.l1_ops, sizes.sqlite_reads, sizes.sqlite_writes, sizes.redis_reads,
                      args.rounds)  # fmt: skip
    timings, redis = measure(sizes)
    cases = compare(timings)
    print(table(cases))
    if not redis:
        print("redis-server not found: the Redis cases were not run", file=sys.stderr)
    write_results(cases, timings, sizes, redis, args.output)
    print(f"wrote {args.output}")
    return 0 if all(c.passed for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
