"""The demo's pieces without a runtime: the table and its marks, the status line, the
workload's counting and stopping."""

from __future__ import annotations

import io
from types import SimpleNamespace

import anyio
import msgspec
import pytest

from runtime.actor import ActorStatistics
from runtime.channel import ChannelStatistics
from runtime.config import load_config
from runtime.demoreport import CacheRow, ClassRow, PluginRow, Resources, Summary, restarts
from runtime.demotable import Marks, progress_line, render_summary
from runtime.demotasks import zipf_weights
from runtime.demowork import STREAMS, CacheTally, Outcomes, Workload
from runtime.exceptions import DeadlineExceeded, Overloaded, QuotaExceeded, WorkerDied
from runtime.supervisor import SupervisorStatistics

# -- the table -------------------------------------------------------------------------------


def class_row(name: str, **changes: object) -> ClassRow:
    row = ClassRow(name=name, target_ms=500.0, measured=10, p50_ms=10.0, p95_ms=20.0,
                   p99_ms=30.0, completed=10, deadline_misses=0, refused=0, failed=0)  # fmt: skip
    return msgspec.structs.replace(row, **changes)


def summary(**changes: object) -> Summary:
    base = Summary(
        config="config.yaml", duration_s=20.0, load=1.0, seed=1,
        classes=[class_row("wake_word"), class_row("voice", p99_ms=1200.0, target_ms=1000.0),
                 class_row("background", target_ms=None, p99_ms=250.0)],
        plugins=[PluginRow(name="weather", quota="2/s burst 3", calls=8, completed=8,
                           throttled=1, refused=0, terminated=0)],
        caches=[CacheRow(namespace="response", hits=25, misses=5, hit_rate=25 / 30, repeats=25,
                         repeat_hit_rate=1.0)],
        resources=Resources(samples=20, cpu_avg_percent=8.5, cpu_peak_percent=14.0,
                            rss_peak_mb=120.0, machine_cpu_avg_percent=30.0,
                            cpu_budget_percent=20.0, memory_budget_mb=2048.0),
        alerts={"HighCpuUsage": 1}, pending=[], restarts={}, unfinished=0,
        log_file="var/log/runtime.jsonl",
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


def test_table_marks_each_result_against_its_target() -> None:
    """p99 within the deadline passes, above it fails; the cache and budget are marked."""
    text = render_summary(summary(), Marks())
    rows = {line.split()[0]: line for line in text.splitlines() if line}
    assert "✓ PASS" in rows["wake_word"] and "< 500 ms" in rows["wake_word"]
    assert "✗ FAIL" in rows["voice"] and "1200" in rows["voice"]
    assert "✓ PASS" in rows["background"] and "progress" in rows["background"]
    assert "100.0%" in rows["response"] and "✓ PASS" in rows["response"]
    assert "8.5 %" in text and "< 20 %" in text and "120 MB" in text and "< 2048 MB" in text
    assert "alerts fired: HighCpuUsage x1" in text
    assert "weather (2/s burst 3)" in text


def test_table_says_what_is_not_running() -> None:
    """No cache, no quotas, no samples: each is said, not shown as zeros."""
    text = render_summary(summary(caches=None, plugins=[], resources=None), Marks())
    assert "cache: not running" in text
    assert "plugins: quotas are not running" in text
    assert "resources: no sample yet" in text


def test_table_reports_restarts_and_unfinished_requests() -> None:
    """Restarts are summed and named; requests cut off at the end are counted."""
    text = render_summary(summary(restarts={"sampler": 2}, unfinished=3, log_file=None), Marks())
    assert "actor restarts: 2 (sampler x2)" in text
    assert "requests unfinished when the demo stopped waiting: 3" in text
    assert "logs: none" in text


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"p99_ms": 501.0}, False),
        ({"measured": 0, "completed": 0}, None),
        ({"measured": 0, "completed": 0, "refused": 4}, False),
        ({"target_ms": None, "measured": 0, "completed": 0, "refused": 2}, False),
        ({"target_ms": None, "p99_ms": 9000.0}, True),
    ],
)
def test_class_result(changes: dict[str, object], expected: bool | None) -> None:
    """Deadline classes pass on p99; background passes when it progressed; none: nothing."""
    assert class_row("x", **changes).passed is expected


def test_cache_result_is_on_repeated_requests() -> None:
    """The cache row passes above 90 % hits on repeats, and has no result without repeats."""
    row = CacheRow(namespace="embedding", hits=9, misses=1, hit_rate=0.9, repeats=10,
                   repeat_hit_rate=0.9)  # fmt: skip
    assert row.passed is False
    assert msgspec.structs.replace(row, repeat_hit_rate=0.95).passed is True
    assert msgspec.structs.replace(row, repeat_hit_rate=None).passed is None


class Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_marks_fit_the_stream() -> None:
    """Colored on a terminal, plain in a pipe, without color under NO_COLOR, ASCII for ascii."""
    assert Marks.for_stream(Terminal(), env={}).of(True) == "\033[32m✓ PASS\033[0m"
    assert Marks.for_stream(Terminal(), env={"NO_COLOR": "1"}).of(False) == "✗ FAIL"
    assert Marks.for_stream(io.StringIO(), env={}).of(None, 7) == "- n/a  "
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert Marks.for_stream(ascii_out, env={}).of(True) == "+ PASS"


def test_progress_line_shows_time_counts_p99_and_cpu() -> None:
    """The status line holds elapsed time, tasks done and p99 per class, and CPU."""
    line = progress_line(3.25, 20, {"voice": 4, "command": 2}, {"voice": 212.4}, 7.6)
    assert line == "[3.2/20 s] CPU 8% | voice 4/212 command 2/-"
    assert progress_line(0.5, 2.5, {}, {}, None) == "[0.5/2.5 s] CPU - | "


# -- the pieces of the workload ---------------------------------------------------------------


def test_cache_tally_counts_repeats_and_their_misses() -> None:
    """A key asked again is a repeat; a repeat that had to be computed is a repeat miss."""
    tally = CacheTally()
    first = tally.start("a")
    tally.end(repeat=first, computed=True)
    again = tally.start("a")
    tally.end(repeat=again, computed=False)
    evicted = tally.start("a")
    tally.end(repeat=evicted, computed=True)
    assert (first, again, evicted) == (False, True, True)
    assert (tally.lookups, tally.repeats, tally.repeat_misses) == (3, 2, 1)
    assert tally.repeat_hit_rate == 0.5
    assert CacheTally().repeat_hit_rate is None


def test_outcomes_in_flight_is_what_has_not_ended() -> None:
    """Submitted minus every way a request ends."""
    outcomes = Outcomes()
    outcomes.submitted, outcomes.completed, outcomes.refused = 5, 2, 1
    assert outcomes.in_flight == 2


def test_zipf_weights_fall_by_rank_and_refuse_bad_input() -> None:
    """Cumulative 1/rank**s weights; n < 1 and exponent <= 0 are ValueErrors."""
    assert zipf_weights(3, 1.0) == pytest.approx([1.0, 1.5, 1.5 + 1 / 3])
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        zipf_weights(0, 1.0)
    with pytest.raises(ValueError, match="exponent must be > 0, got 0"):
        zipf_weights(3, 0)


def no_cache_runtime() -> SimpleNamespace:
    """What a Workload reads of a Runtime whose cache is off (it submits nothing here)."""
    config = load_config(None)
    return SimpleNamespace(
        config=msgspec.structs.replace(
            config, cache=msgspec.structs.replace(config.cache, enabled=False)
        )
    )


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (None, "completed"),
        (DeadlineExceeded("late"), "late"),
        (Overloaded("shed"), "refused"),
        (QuotaExceeded("weather", "rate", 3, 2, 0.5), "refused"),
        (QuotaExceeded("weather", "timeout", 1.2, 1, None), "failed"),
        (WorkerDied(1234, -9, "running a call"), "failed"),
    ],
)
async def test_each_request_ending_is_counted(error: Exception | None, counted: str) -> None:
    """A request's result or error lands in exactly one of the outcome counters."""
    workload = Workload(no_cache_runtime(), load=1)  # type: ignore[arg-type]

    async def request() -> None:
        if error is not None:
            raise error

    await workload._one(STREAMS[1], request)
    outcome = workload.outcomes["voice"]
    counts = {k: getattr(outcome, k) for k in ("completed", "late", "refused", "failed")}
    assert counts == {k: int(k == counted) for k in counts}
    assert (outcome.submitted, outcome.in_flight) == (1, 0)


class HeldRuntime(SimpleNamespace):
    """A runtime whose submit holds every request until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(config=no_cache_runtime().config)
        self.first = anyio.Event()
        self.release = anyio.Event()
        self.requests = 0

    async def submit(self, fn: object, *args: object, **kwargs: object) -> None:
        self.requests += 1
        self.first.set()
        await self.release.wait()


async def test_stop_lets_requests_in_flight_finish() -> None:
    """After stop(), no request arrives; run() returns once those in flight have ended."""
    rt = HeldRuntime()
    workload = Workload(rt, load=100)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(workload.run, 600.0)
        await rt.first.wait()
        workload.stop()
        await anyio.wait_all_tasks_blocked()
        arrived = rt.requests
        assert sum(o.in_flight for o in workload.outcomes.values()) == arrived
        rt.release.set()
    assert sum(o.completed for o in workload.outcomes.values()) == arrived == rt.requests


async def test_stop_now_cancels_requests_in_flight() -> None:
    """stop(now=True) ends run() at once; what was in flight stays unfinished."""
    rt = HeldRuntime()
    workload = Workload(rt, load=100)  # type: ignore[arg-type]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(workload.run, 600.0)
            await rt.first.wait()
            workload.stop(now=True)
    assert sum(o.in_flight for o in workload.outcomes.values()) == rt.requests >= 1


def test_workload_refuses_a_bad_load() -> None:
    """A load that is not a finite number > 0 is a ValueError naming it."""
    with pytest.raises(ValueError, match="load must be a finite number > 0, got 0"):
        Workload(object(), load=0)  # type: ignore[arg-type]


def test_restarts_are_summed_over_the_tree() -> None:
    """Restarts come from every supervisor of the tree, by actor name."""
    mailbox = ChannelStatistics(
        name="", capacity=1, policy="block", depth=0, high_water=0, sent=0, received=0,
        dropped=0, waiting_senders=0, waiting_receivers=0, closed=False,
    )  # fmt: skip

    def actor(name: str, count: int) -> ActorStatistics:
        return ActorStatistics(name=name, state="running", restarts=count, handled=0,
                               failed=0, mailbox=mailbox)  # fmt: skip

    inner = SupervisorStatistics(name="alerts", strategy="one_for_one", restarts=1,
                                 actors=[actor("sink", 1)], supervisors=[])  # fmt: skip
    root = SupervisorStatistics(name="jarvis", strategy="one_for_one", restarts=2,
                                actors=[actor("sampler", 2), actor("profiler", 0)],
                                supervisors=[inner])  # fmt: skip
    assert restarts(root) == {"sampler": 2, "sink": 1}
