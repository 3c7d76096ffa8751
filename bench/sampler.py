"""The Sampler's schedule and cost, side by side with the naive loop, in one process.

- scheduling error: our Sampler (drift-free schedule, real collector in a worker thread) and
  a naive ``while True: collect(); await sleep(interval)`` loop doing the same collection run
  concurrently on one event loop, at 10 Hz for 60 s. Each tick's lateness is measured against
  its ideal due time ``start + i * interval``; p50, p99 and max are reported for both.
- sampler CPU: the process CPU time (every thread) used over a window with the Sampler running
  at 1 Hz (history on, in a temporary SQLite file), minus an idle window of the same length,
  as percent of one core.

Run ``python -m bench.sampler [--quick]`` (``--quick``: 10 s windows). Prints a table and
writes ``bench/results/sampler.json``. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from actors.sampler import Sampler
from actors.sampler.collector import Collector
from actors.sampler.schedule import percentile
from runtime.actor import ActorContext
from runtime.config import SamplerSection

RESULTS_PATH = Path(__file__).parent / "results" / "sampler.json"
SCHEDULING_TARGET_P99_MS = 2.0
SEED_BOUND_MS = 5.0
CPU_TARGET_PERCENT = 0.5


@dataclass(frozen=True)
class Row:
    """One line of the table: a measurement, its baseline if any, and its target
    (``passed`` is ``None`` for a line shown for information, with no target)."""

    measure: str
    ours: str
    value: float
    unit: str
    baseline: str
    baseline_value: float | None
    target: str
    passed: bool | None


@dataclass(frozen=True)
class Scheduling:
    """Lateness of each scheduler's ticks, in ms."""

    interval_s: float
    duration_s: float
    ours_ticks: int
    ours_skipped: int
    ours_p50_ms: float
    ours_p99_ms: float
    ours_max_ms: float
    naive_ticks: int
    naive_p50_ms: float
    naive_p99_ms: float
    naive_max_ms: float

    def rows(self) -> list[Row]:
        baseline = "naive sleep(interval) loop"
        return [
            Row("scheduling error p50, 10 Hz", "drift-free Sampler", self.ours_p50_ms, "ms",
                baseline, self.naive_p50_ms, "-", None),
            Row("scheduling error p99, 10 Hz", "drift-free Sampler", self.ours_p99_ms, "ms",
                baseline, self.naive_p99_ms,
                f"<= {SCHEDULING_TARGET_P99_MS:g} ms (seed: < {SEED_BOUND_MS:g} ms)",
                self.ours_p99_ms <= SCHEDULING_TARGET_P99_MS),
        ]  # fmt: skip


@dataclass(frozen=True)
class CpuCost:
    """Process CPU time over equal windows with and without the Sampler."""

    interval_s: float
    window_s: float
    samples: int
    idle_cpu_s: float
    sampler_cpu_s: float
    collect_p50_ms: float

    @property
    def percent_of_core(self) -> float:
        return max(0.0, self.sampler_cpu_s - self.idle_cpu_s) / self.window_s * 100

    @property
    def cpu_per_sample_ms(self) -> float:
        spent = max(0.0, self.sampler_cpu_s - self.idle_cpu_s)
        return spent / self.samples * 1000 if self.samples else 0.0

    def rows(self) -> list[Row]:
        return [
            Row("sampler CPU at 1 Hz (history on)", "Sampler", self.percent_of_core,
                "% of one core", "idle process", self.idle_cpu_s / self.window_s * 100,
                f"<= {CPU_TARGET_PERCENT:g} %", self.percent_of_core <= CPU_TARGET_PERCENT),
        ]  # fmt: skip


# -- scheduling error --------------------------------------------------------------------------


async def naive_loop(interval_s: float, duration_s: float) -> list[float]:
    """Lateness (s) of each tick of ``collect(); sleep(interval)`` against start + i * interval."""
    collector = Collector()
    await anyio.to_thread.run_sync(collector.prime, time.monotonic())
    lateness: list[float] = []
    start = time.monotonic()
    await anyio.sleep(interval_s)
    for i in range(1, round(duration_s / interval_s) + 1):
        now = time.monotonic()
        lateness.append(now - (start + i * interval_s))
        collect = functools.partial(collector.collect, now, time.time(), {})
        await anyio.to_thread.run_sync(collect)
        await anyio.sleep(interval_s)
    return lateness


async def measure_scheduling(duration_s: float = 60.0, interval_s: float = 0.1) -> Scheduling:
    """Run the Sampler and the naive loop together for ``duration_s``; compare their lateness."""
    sampler = Sampler(
        SamplerSection(interval_ms=round(interval_s * 1000), history_path=None), ActorContext()
    )
    async with sampler.running():
        naive = await naive_loop(interval_s, duration_s)
        ours = sampler.statistics()
    return Scheduling(
        interval_s=interval_s,
        duration_s=duration_s,
        ours_ticks=ours.samples,
        ours_skipped=ours.skipped,
        ours_p50_ms=ours.lateness_p50_ms,
        ours_p99_ms=ours.lateness_p99_ms,
        ours_max_ms=ours.lateness_max_ms,
        naive_ticks=len(naive),
        naive_p50_ms=percentile(naive, 0.5) * 1000,
        naive_p99_ms=percentile(naive, 0.99) * 1000,
        naive_max_ms=max(naive) * 1000,
    )


# -- CPU cost ----------------------------------------------------------------------------------


async def cpu_seconds_over(window_s: float) -> float:
    """Process CPU time (all threads) used while this task sleeps ``window_s``."""
    before = time.process_time()
    await anyio.sleep(window_s)
    return time.process_time() - before


async def measure_cpu(window_s: float = 30.0, interval_s: float = 1.0) -> CpuCost:
    """CPU time over ``window_s`` idle, then over ``window_s`` with the Sampler at
    ``interval_s`` (measured from its first sample, after priming)."""
    idle_cpu_s = await cpu_seconds_over(window_s)
    with tempfile.TemporaryDirectory() as scratch:
        section = SamplerSection(
            interval_ms=round(interval_s * 1000), history_path=f"{scratch}/samples.db"
        )
        sampler = Sampler(section, ActorContext())
        async with sampler.running():
            with sampler.subscribe() as first:
                await first.receive()
            before = sampler.statistics().samples
            sampler_cpu_s = await cpu_seconds_over(window_s)
            stats = sampler.statistics()
    return CpuCost(
        interval_s=interval_s,
        window_s=window_s,
        samples=stats.samples - before,
        idle_cpu_s=idle_cpu_s,
        sampler_cpu_s=sampler_cpu_s,
        collect_p50_ms=stats.collect_p50_ms,
    )


# -- report ------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows (it goes to BENCHMARKS.md as it is)."""
    lines = [
        "| measure | ours | value | baseline | value | target | result |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for r in rows:
        base = "-" if r.baseline_value is None else f"{r.baseline_value:,.3f} {r.unit}"
        lines.append(
            f"| {r.measure} | {r.ours} | {r.value:,.3f} {r.unit} | {r.baseline} | {base} | "
            f"{r.target} | {_verdict(r.passed)} |"
        )
    return "\n".join(lines)


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else "PASS" if passed else "FAIL"


def passed(rows: list[Row]) -> bool:
    """Whether every row with a target met it."""
    return all(r.passed is not False for r in rows)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "anyio": version("anyio"),
        "psutil": version("psutil"),
    }


def write_results(
    scheduling: Scheduling,
    cpu: CpuCost,
    rows: list[Row],
    at_start: dict[str, Any],
    path: Path = RESULTS_PATH,
) -> None:
    """Write the record; ``at_start`` is ``machine()`` before the run (its load average)."""
    record = {
        "benchmark": "sampler",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": at_start | {"loadavg_at_end": os.getloadavg()},
        "scheduling": asdict(scheduling),
        "cpu": {
            **asdict(cpu),
            "percent_of_core": cpu.percent_of_core,
            "cpu_per_sample_ms": cpu.cpu_per_sample_ms,
        },
        "rows": [asdict(r) for r in rows],
        "pass": passed(rows),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


async def run(duration_s: float, window_s: float) -> tuple[Scheduling, CpuCost]:
    print(f"scheduling: both loops for {duration_s:g} s at 10 Hz ...", file=sys.stderr)
    scheduling = await measure_scheduling(duration_s)
    print(f"cpu: {window_s:g} s idle, then {window_s:g} s at 1 Hz ...", file=sys.stderr)
    cpu = await measure_cpu(window_s)
    return scheduling, cpu


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every target is met, else 1."""
    parser = argparse.ArgumentParser(prog="python -m bench.sampler", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s windows instead of 60/30 s")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    args = parser.parse_args(argv)
    duration_s, window_s = (10.0, 10.0) if args.quick else (60.0, 30.0)
    at_start = machine()
    scheduling, cpu = anyio.run(run, duration_s, window_s, backend="asyncio")
    rows = scheduling.rows() + cpu.rows()
    print(table(rows))
    print(
        f"ticks: ours {scheduling.ours_ticks} ({scheduling.ours_skipped} skipped), naive "
        f"{scheduling.naive_ticks}; max lateness ours {scheduling.ours_max_ms:.3f} ms, naive "
        f"{scheduling.naive_max_ms:,.1f} ms; CPU per sample {cpu.cpu_per_sample_ms:.3f} ms, "
        f"collection p50 {cpu.collect_p50_ms:.3f} ms (wall)"
    )
    write_results(scheduling, cpu, rows, at_start, args.output)
    print(f"wrote {args.output}")
    return 0 if passed(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
