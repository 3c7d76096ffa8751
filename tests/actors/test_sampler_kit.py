"""Helpers for the Sampler tests (no tests here): a scripted collector, offloads, a runner."""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from actors.sampler import Sample, Sampler
from actors.sampler.collector import Reading
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import Config, SamplerSection
from runtime.metrics import MetricsRegistry
from runtime.retry import RetryPolicy

T = TypeVar("T")


class FakeCollector:
    """Records when it primes and collects; returns numbered samples stamped with the clock.

    ``vanish`` / ``forbid`` list ``(pid, plugin)`` pairs reported by the next collection;
    ``fail_next`` makes the next collection raise ``OSError``.
    """

    disk_path = "/"
    cgroup = None

    def __init__(self) -> None:
        self.primed: list[float] = []
        self.taken: list[float] = []
        self.samples: list[Sample] = []
        self.watched: list[dict[int, str]] = []
        self.vanish: list[tuple[int, str]] = []
        self.forbid: list[tuple[int, str]] = []
        self.fail_next = False
        self.plugins: dict[str, Any] = {}

    def prime(self, now_s: float) -> None:
        self.primed.append(now_s)

    def collect(self, now_s: float, wall_s: float, watched: dict[int, str]) -> Reading:
        if self.fail_next:
            self.fail_next = False
            raise OSError("cannot read /proc/stat")
        self.taken.append(now_s)
        self.watched.append(watched)
        sample = Sample(
            timestamp=wall_s,
            cpu_percent=float(len(self.taken)),
            memory_percent=50.0,
            process_rss_bytes=1000 * len(self.taken),
            cpu_percent_per_core=(10.0, 20.0),
            plugins=dict(self.plugins),
        )
        self.samples.append(sample)
        reading = Reading(sample, self.vanish, self.forbid)
        self.vanish, self.forbid = [], []
        return reading


async def inline(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the loop: deterministic under the fake clock (no thread to wait for)."""
    return fn()


class SlowOffload:
    """Runs inline, but the n-th collection (1-based) first takes ``delays[n]`` fake seconds."""

    def __init__(self, clock: FakeClock, delays: dict[int, float]) -> None:
        self.clock = clock
        self.delays = delays
        self.collections = 0

    async def __call__(self, fn: Callable[[], T]) -> T:
        if isinstance(fn, functools.partial) and fn.func.__name__ == "collect":
            self.collections += 1
            delay_s = self.delays.get(self.collections, 0.0)
            if delay_s:
                await self.clock.sleep(delay_s)
        return fn()


def section(**changes: Any) -> SamplerSection:
    """The default sampler section, history off, with ``changes``."""
    return msgspec.structs.replace(SamplerSection(history_path=None), **changes)


def config_with(**changes: Any) -> Config:
    """The default Config whose sampler section is ``section(**changes)``."""
    return msgspec.structs.replace(Config(), sampler=section(**changes))


def context(clock: FakeClock) -> ActorContext:
    """A context on the fake clock with a registry and no handler retries (a failure crashes)."""
    return ActorContext(
        clock=clock,
        metrics=MetricsRegistry(clock=clock),
        retry=RetryPolicy(retries=0),
        rng=random.Random(7),
    )


def make_sampler(
    clock: FakeClock,
    collector: Any,
    *,
    offload: Any = inline,
    history_path: Path | None = None,
    **changes: Any,
) -> Sampler:
    """A Sampler on the fake clock that uses ``collector`` for every actor instance."""
    path = str(history_path) if history_path is not None else None
    return Sampler(
        section(history_path=path, **changes),
        context(clock),
        collector=lambda _config: collector,
        offload=offload,
    )


@asynccontextmanager
async def running_sampler(
    clock: FakeClock, collector: Any, **kwargs: Any
) -> AsyncIterator[Sampler]:
    """``make_sampler(...)`` running under its own supervisor for the body."""
    sampler = make_sampler(clock, collector, **kwargs)
    async with sampler.running():
        yield sampler
