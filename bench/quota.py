"""What plugin quotas cost a submitted task, and what they buy the voice turns.

Three measurements:

- **hooks**: what the enforcer's three hooks (admission, start, finish) cost one plugin task,
  called directly on a stub task in a tight loop (the best of several repeats: the least
  disturbed by whatever else the machine runs), per quota.
- **overhead**: ``await scheduler.submit(noop, task_class="command", plugin=...)`` of a
  coroutine that does nothing, in a tight loop, with no enforcer, with the enforcer and a
  task that names no plugin, and with a plugin under each of the quotas the scheduler's hooks
  enforce (time, rate, concurrency, all three; limits high enough that no call waits: this
  is the cost of checking, not of waiting). Rounds are interleaved in a rotating order; a
  variant's overhead is the median of its differences with no enforcer within each round (so
  drift cancels out), and the difference of the best rounds. Costs are CPU time of this
  process (the loop is all it runs), less skewed by other processes than wall time.
- **voice under a runaway plugin**: voice turns (a coroutine awaiting 20 ms in 4 steps of
  5 ms, with 0.2 ms of Python work before each step) arrive every 30 ms on a drift-free
  schedule through ``submit(turn, task_class="voice")``, while a runaway plugin keeps one
  call per core spinning the CPU (calls of 0.5 s, back to back) in the urgent worker pool (a
  plugin class with a deadline: neither niced nor paused by the scheduler). Three systems:
  **idle** (no runaway), **no enforcement** (the runaway unlimited), **enforced**
  (``cpu_percent: 10``: the plugin held under 10% of the machine by the duty cycle), run in
  short rounds of rotating order so that each meets the same mix of whatever else the machine
  runs, each system's turns pooled over its rounds. Reported: the voice delay (end to end
  minus the 20 ms a turn awaits by design) p50/p95/p99/max, the turns that missed their 1 s
  deadline, the runaway's CPU share of the machine (median over the rounds), and the cores
  other programs kept busy meanwhile (the machine's busy time less this process tree's, the
  mean over the rounds: on a shared machine the voice latency follows it).

Run ``python -m bench.quota [--quick]``. Prints the tables and writes
``bench/results/quota.json``. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil

from actors.quota import QuotaEnforcer
from actors.quota.gate import Gate
from actors.quota.notify import Notifier
from actors.quota.plugins import Plugin
from actors.scheduler import Scheduler
from runtime.actor import ActorContext
from runtime.clock import RealClock
from runtime.config import Config, PluginQuota, QuotaSection, SchedulerSection, TaskClassConfig
from runtime.exceptions import QuotaExceeded

RESULTS_PATH = Path(__file__).parent / "results" / "quota.json"
CORES = os.cpu_count() or 1
OVERHEAD_TARGET_US = 10.0
VOICE_PERIOD_S = 0.030
VOICE_STEPS = 4
VOICE_STEP_S = 0.005
VOICE_AWAIT_S = VOICE_STEPS * VOICE_STEP_S
VOICE_WORK_S = 0.0002
VOICE_DEADLINE_S = 1.0
RUNAWAY_CPU_PERCENT = 10.0
RUNAWAY_CALL_S = 0.5
RUNS = ("idle", "no enforcement", "enforced")


@dataclass(frozen=True)
class Sizes:
    submits: int  # per overhead round and variant
    rounds: int  # overhead rounds
    voice_rounds: int
    voice_s: float  # measured window of each voice run
    warmup_s: float


FULL = Sizes(submits=20_000, rounds=9, voice_rounds=6, voice_s=4.0, warmup_s=1.0)
QUICK = Sizes(submits=5_000, rounds=5, voice_rounds=1, voice_s=3.0, warmup_s=1.0)


# -- work that runs in worker processes (module level, so a spawned worker can load it) -------


def spin_for(seconds: float) -> int:
    """Spin the CPU for ``seconds`` of wall time: a runaway plugin call."""
    rounds = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rounds += 1
    return rounds


# -- setup -------------------------------------------------------------------------------------


def scheduler_section(*, processes: bool) -> SchedulerSection:
    """Voice and command classes, and (``processes``) a plugin class in the urgent pool."""
    classes = {
        "voice": TaskClassConfig(priority=1, deadline_ms=1000, max_concurrency=64, reserved=8),
        "command": TaskClassConfig(priority=2, deadline_ms=2000, max_concurrency=64),
    }
    if processes:
        classes["plugin"] = TaskClassConfig(
            priority=3, deadline_ms=60_000, max_concurrency=CORES, executor="process"
        )
    return SchedulerSection(
        classes=classes, process_workers=CORES, thread_workers=4, loop_workers=256
    )


@asynccontextmanager
async def running(
    quota: QuotaSection | None, *, processes: bool = True
) -> AsyncIterator[tuple[Scheduler, QuotaEnforcer | None]]:
    """A scheduler (and an enforcer, when ``quota`` is given) running on the real clock."""
    context = ActorContext()
    scheduler = Scheduler(scheduler_section(processes=processes), context, cpu_probe=None)
    enforcer = None
    if quota is not None:
        config = msgspec.structs.replace(Config(), quotas=quota)
        enforcer = QuotaEnforcer(config, context, scheduler)
    async with scheduler.running():
        if enforcer is None:
            yield scheduler, None
        else:
            async with enforcer.running():
                yield scheduler, enforcer


# -- overhead ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    enforcer: bool
    plugin: dict[str, Any] | None  # register() arguments; None: the task names no plugin


ALL_THREE = {"timeout_s": 60.0, "rate": 1e9, "burst": 1000, "max_concurrency": 1000}
VARIANTS = [
    Variant("no enforcer", False, None),
    Variant("enforcer, no plugin", True, None),
    Variant("time", True, {"timeout_s": 60.0}),
    Variant("rate", True, {"rate": 1e9, "burst": 1000}),
    Variant("concurrency", True, {"max_concurrency": 1000}),
    Variant("time+rate+concurrency", True, ALL_THREE),
]


async def noop() -> None:
    pass


async def submit_cost_us(variant: Variant, submits: int) -> float:
    """CPU microseconds per submit of a coroutine that does nothing, under ``variant``."""
    quota = QuotaSection() if variant.enforcer else None
    async with running(quota, processes=False) as (scheduler, enforcer):
        plugin = None
        if variant.plugin is not None and enforcer is not None:
            enforcer.register("bench", **variant.plugin)
            plugin = "bench"
        for _ in range(200):  # warm up the code paths
            await scheduler.submit(noop, task_class="command", plugin=plugin)
        gc.collect()
        began = time.process_time_ns()
        for _ in range(submits):
            await scheduler.submit(noop, task_class="command", plugin=plugin)
        return (time.process_time_ns() - began) / submits / 1000


def measure_overhead(sizes: Sizes) -> dict[str, dict[str, float]]:
    """Each variant's cost per submit over interleaved rounds, and its overhead: the median of
    its differences with no enforcer *in the same round* (slow drift cancels out), and the
    difference of the best rounds (interference only ever adds time)."""
    costs: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
    for round_index in range(sizes.rounds):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            costs[variant.name].append(asyncio.run(submit_cost_us(variant, sizes.submits)))
    base = costs[VARIANTS[0].name]
    out: dict[str, dict[str, float]] = {}
    for name, samples in costs.items():
        paired = [cost - base_cost for cost, base_cost in zip(samples, base, strict=True)]
        q1, _, q3 = statistics.quantiles(paired, n=4)
        out[name] = {
            "submit_us": statistics.median(samples),
            "overhead_us": statistics.median(paired),
            "overhead_q1_us": q1,
            "overhead_q3_us": q3,
            "best_submit_us": min(samples),
            "best_overhead_us": min(samples) - min(base),
        }
    return out


# -- the hooks alone ---------------------------------------------------------------------------


class StubTask:
    """What the hooks read of a scheduler task."""

    __slots__ = ("deadline_at", "error", "id", "plugin", "run_in", "started_at", "state",
                 "task_class")  # fmt: skip

    def __init__(self, task_id: int) -> None:
        self.id, self.plugin, self.task_class, self.run_in = task_id, "bench", "command", "loop"
        self.state, self.deadline_at, self.started_at, self.error = "running", None, 0.0, None


class StubHooks:
    def __init__(self) -> None:
        self.admission: list[Any] = []
        self.start: list[Any] = []
        self.finish: list[Any] = []


class StubScheduler:
    def __init__(self) -> None:
        self.hooks = StubHooks()


async def hook_cost_us(limits: dict[str, Any] | None, tasks: int, repeats: int) -> float:
    """The best over ``repeats`` of the microseconds admission + start + finish take."""
    clock = RealClock()
    notifier = Notifier(clock=clock, bus=None, log_interval_s=1.0)
    gate = Gate(StubScheduler(), clock=clock, notifier=notifier,  # type: ignore[arg-type]
                on_start=lambda call: None, on_finish=lambda call: None)  # fmt: skip
    gate.plugins["bench"] = Plugin("bench", PluginQuota(**(limits or {})), source="api", cpus=CORES)
    best = math.inf
    for repeat in range(repeats):
        batch = [StubTask(repeat * tasks + i) for i in range(tasks)]
        if limits is None:
            for task in batch:
                task.plugin = None  # type: ignore[assignment]
        gc.collect()
        began = time.perf_counter()
        for task in batch:
            gate.admit(task)
            gate.start(task)
            gate.finish(task)
        best = min(best, (time.perf_counter() - began) / tasks * 1e6)
    return best


def measure_hooks(sizes: Sizes) -> dict[str, float]:
    """Hook cost per task for a task without a plugin and for each quota."""
    variants: dict[str, dict[str, Any] | None] = {"no plugin": None, "no limit": {}}
    variants.update({v.name: v.plugin for v in VARIANTS if v.plugin is not None})
    return {name: asyncio.run(hook_cost_us(limits, sizes.submits, 7))
            for name, limits in variants.items()}  # fmt: skip


# -- voice turns under a runaway plugin --------------------------------------------------------


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def calibrate(seconds: float) -> int:
    """Iterations of ``spin`` that take about ``seconds`` here."""
    iterations = 1000
    while True:
        began = time.perf_counter()
        spin(iterations)
        took = time.perf_counter() - began
        if took > 0.01:
            return max(1, round(iterations * seconds / took))
        iterations *= 2


@dataclass
class VoiceRun:
    name: str
    delays_s: list[float] = field(default_factory=list)
    offered: int = 0
    missed: int = 0
    runaway_calls: int = 0
    runaway_share_percent: float = 0.0
    other_cores: float = 0.0  # CPU other programs used meanwhile, in cores
    throttled: int = 0


async def voice_turn(iterations: int) -> None:
    for _ in range(VOICE_STEPS):
        spin(iterations)
        await anyio.sleep(VOICE_STEP_S)


async def runaway(scheduler: Scheduler, run: VoiceRun) -> None:
    """Keep one call per core of the runaway plugin spinning, for ever."""

    async def one_lane() -> None:
        while True:
            with contextlib.suppress(QuotaExceeded):
                await scheduler.submit(
                    spin_for, RUNAWAY_CALL_S, task_class="plugin", plugin="runaway"
                )
            run.runaway_calls += 1

    async with anyio.create_task_group() as tg:
        for _ in range(CORES):
            tg.start_soon(one_lane)


async def offer_voice(
    scheduler: Scheduler, run: VoiceRun, iterations: int, sizes: Sizes, start: float
) -> None:
    """Voice turns every VOICE_PERIOD_S from ``start``, drift-free; the ones arriving in the
    window (after the warm-up) count."""
    window_from = start + sizes.warmup_s
    window_to = window_from + sizes.voice_s

    async def one(due: float) -> None:
        counted = window_from <= due < window_to
        try:
            await scheduler.submit(voice_turn, iterations, task_class="voice")
            delay_s = time.monotonic() - due - VOICE_AWAIT_S
        except Exception:
            delay_s = math.inf
        if counted:
            run.offered += 1
            run.delays_s.append(delay_s)
            run.missed += delay_s + VOICE_AWAIT_S > VOICE_DEADLINE_S

    async with anyio.create_task_group() as tg:
        i = 0
        while (due := start + i * VOICE_PERIOD_S) < window_to:
            await anyio.sleep(max(0.0, due - time.monotonic()))
            tg.start_soon(one, due)
            i += 1


def worker_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, all programs)."""
    times = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is within user
    return float(sum(getattr(times, name, 0.0) for name in fields))


def our_cpu_s(workers: list[int]) -> float:
    me = psutil.Process().cpu_times()
    return me.user + me.system + worker_cpu_s(workers)


async def measure_share(run: VoiceRun, workers: list[int], at: float, window_s: float) -> None:
    """Over the measured window: the workers' CPU share of the machine, and the cores other
    programs kept busy (the machine's busy time less this process tree's)."""
    await anyio.sleep(max(0.0, at - time.monotonic()))
    began, workers_s, ours_s, busy_s = (time.monotonic(), worker_cpu_s(workers),
                                        our_cpu_s(workers), machine_busy_s())  # fmt: skip
    await anyio.sleep(window_s)
    wall_s = time.monotonic() - began
    run.runaway_share_percent = (worker_cpu_s(workers) - workers_s) / wall_s / CORES * 100
    others_s = (machine_busy_s() - busy_s) - (our_cpu_s(workers) - ours_s)
    run.other_cores = max(0.0, others_s / wall_s)


async def voice_run(name: str, sizes: Sizes, iterations: int) -> VoiceRun:
    """One run: ``idle`` (no runaway), ``no enforcement`` or ``enforced``."""
    run = VoiceRun(name)
    quota = QuotaSection() if name == "enforced" else None
    async with running(quota) as (scheduler, enforcer):
        if enforcer is not None:
            enforcer.register("runaway", cpu_percent=RUNAWAY_CPU_PERCENT)
        workers = [p.pid for p in psutil.Process().children()]
        start = time.monotonic() + 0.05
        async with anyio.create_task_group() as tg:
            if name != "idle":
                tg.start_soon(runaway, scheduler, run)
            async with anyio.create_task_group() as measured:
                window_from = start + sizes.warmup_s
                measured.start_soon(measure_share, run, workers, window_from, sizes.voice_s)
                measured.start_soon(offer_voice, scheduler, run, iterations, sizes, start)
            tg.cancel_scope.cancel()
        if enforcer is not None:
            run.throttled = enforcer.statistics().plugins["runaway"].throttled
    return run


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def summarize(runs: list[VoiceRun]) -> dict[str, Any]:
    """One system's rounds pooled: percentiles over all its turns; shares as medians."""
    delays = sorted(d for run in runs for d in run.delays_s)
    finite = [d for d in delays if math.isfinite(d)] or [0.0]
    return {
        "name": runs[0].name,
        "turns": sum(run.offered for run in runs),
        "missed": sum(run.missed for run in runs),
        "delay_p50_ms": percentile(delays, 50) * 1000,
        "delay_p95_ms": percentile(delays, 95) * 1000,
        "delay_p99_ms": percentile(delays, 99) * 1000,
        "delay_p99_ms_rounds": [percentile(sorted(run.delays_s), 99) * 1000 for run in runs],
        "delay_max_ms": max(finite) * 1000,
        "runaway_share_percent": statistics.median(run.runaway_share_percent for run in runs),
        "other_cores": statistics.mean(run.other_cores for run in runs),
        "runaway_calls": sum(run.runaway_calls for run in runs),
        "throttled_calls": sum(run.throttled for run in runs),
    }


def measure_voice(sizes: Sizes) -> list[dict[str, Any]]:
    """Each run ``voice_rounds`` times, interleaved in a rotating order."""
    iterations = calibrate(VOICE_WORK_S)
    runs: dict[str, list[VoiceRun]] = {name: [] for name in RUNS}
    for round_index in range(sizes.voice_rounds):
        shift = round_index % len(RUNS)
        for name in RUNS[shift:] + RUNS[:shift]:
            runs[name].append(asyncio.run(voice_run(name, sizes, iterations)))
    return [summarize(runs[name]) for name in RUNS]


# -- targets, tables, results ------------------------------------------------------------------


def target(name: str, value: str, met: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "met": met}


def check(
    overhead: dict[str, dict[str, float]], voice: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each quota costs a submit under 10 us; enforced, the runaway stays under its CPU share,
    the voice p99 is no worse than without enforcement, and no voice turn misses."""
    targets = []
    for name in ("time", "rate", "concurrency", "time+rate+concurrency"):
        value = overhead[name]["overhead_us"]
        targets.append(target(f"overhead of {name} < {OVERHEAD_TARGET_US:g} us",
                              f"{value:.2f} us", value < OVERHEAD_TARGET_US))  # fmt: skip
    runs = {run["name"]: run for run in voice}
    enforced, free = runs["enforced"], runs["no enforcement"]
    share = enforced["runaway_share_percent"]
    targets.append(target(f"enforced runaway share < its quota ({RUNAWAY_CPU_PERCENT:g}%)",
                          f"{share:.1f}%", share < RUNAWAY_CPU_PERCENT))  # fmt: skip
    p99, p99_free = enforced["delay_p99_ms"], free["delay_p99_ms"]
    targets.append(target("enforced voice p99 <= unenforced voice p99",
                          f"{p99:.2f} ms vs {p99_free:.2f} ms", p99 <= p99_free))  # fmt: skip
    missed = enforced["missed"]
    targets.append(target("no voice turn misses its deadline when enforced", str(missed),
                          missed == 0))  # fmt: skip
    return targets


def hooks_table(hooks: dict[str, float]) -> str:
    lines = [f"{'hooks of':<24}{'us per task':>12}"]
    lines += [f"{name:<24}{cost:>12.2f}" for name, cost in hooks.items()]
    return "\n".join(lines)


def overhead_table(overhead: dict[str, dict[str, float]]) -> str:
    head = ("variant", "submit us", "overhead us", "q1-q3 us", "best us", "best overhead")
    lines = ["{:<24}{:>11}{:>13}{:>16}{:>10}{:>15}".format(*head)]
    for name, row in overhead.items():
        spread = f"{row['overhead_q1_us']:.2f}-{row['overhead_q3_us']:.2f}"
        lines.append(
            f"{name:<24}{row['submit_us']:>11.2f}{row['overhead_us']:>13.2f}{spread:>16}"
            f"{row['best_submit_us']:>10.2f}{row['best_overhead_us']:>15.2f}"
        )
    return "\n".join(lines)


def voice_table(voice: list[dict[str, Any]]) -> str:
    head = ("run", "turns", "missed", "p50 ms", "p95 ms", "p99 ms", "max ms", "runaway %",
            "throttled", "others")  # fmt: skip
    lines = ["{:<16}{:>7}{:>8}{:>9}{:>9}{:>9}{:>9}{:>11}{:>11}{:>8}".format(*head)]
    for r in voice:
        lines.append(
            f"{r['name']:<16}{r['turns']:>7}{r['missed']:>8}{r['delay_p50_ms']:>9.2f}"
            f"{r['delay_p95_ms']:>9.2f}{r['delay_p99_ms']:>9.2f}{r['delay_max_ms']:>9.2f}"
            f"{r['runaway_share_percent']:>11.1f}{r['throttled_calls']:>11}"
            f"{r['other_cores']:>8.2f}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": CORES,
        "loadavg": os.getloadavg(),
        "anyio": version("anyio"),
        "psutil": version("psutil"),
    }


def write_results(record: dict[str, Any], path: Path = RESULTS_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quota", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer submits, shorter runs")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = QUICK if args.quick else FULL
    hooks = measure_hooks(sizes)
    print(hooks_table(hooks))
    print()
    overhead = measure_overhead(sizes)
    print(overhead_table(overhead), flush=True)
    voice = measure_voice(sizes)
    print()
    print(voice_table(voice))
    targets = check(overhead, voice)
    print()
    for t in targets:
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['value']}")
    record = {"benchmark": "quota", "machine": machine(), "sizes": asdict(sizes),
              "hooks_us": hooks, "overhead": overhead, "voice": voice,
              "targets": targets}  # fmt: skip
    write_results(record)
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
