"""The bottleneck report: the worst class, the worst blocking call, and what to do."""

from __future__ import annotations

from typing import Any

from actors.profiler.blocking import BlockingSite
from actors.profiler.histogram import LatencySummary
from actors.profiler.report import NO_BOTTLENECK, BottleneckReport, build_report
from actors.profiler.stacks import StackFrame
from actors.profiler.tasks import ClassLatency
from runtime.config import SchedulerSection, TaskClassConfig

SCHEDULER = SchedulerSection(
    classes={
        "wake_word": TaskClassConfig(priority=0, deadline_ms=500, executor="loop"),
        "voice": TaskClassConfig(priority=1, deadline_ms=1000, max_concurrency=4, reserved=1,
                                 executor="thread"),
        "command": TaskClassConfig(priority=2, deadline_ms=2000, executor="loop"),
        "background": TaskClassConfig(priority=9, executor="process"),
    }
)  # fmt: skip


def latency(p99_ms: float) -> LatencySummary:
    return LatencySummary(count=10, p50_ms=p99_ms / 2, p95_ms=p99_ms * 0.9, p99_ms=p99_ms,
                          max_ms=p99_ms)  # fmt: skip


def cls(
    name: str, e2e_ms: float, wait_ms: float = 0.0, run_ms: float = 0.0, **kw: Any
) -> ClassLatency:
    return ClassLatency(task_class=name, finished=10, end_to_end=latency(e2e_ms),
                        queue_wait=latency(wait_ms), run=latency(run_ms), **kw)  # fmt: skip


def site(function: str, total_ms: float, computing: bool | None, line: int = 7) -> BlockingSite:
    return BlockingSite(
        function=function, file="/app/skills.py", line=line, count=3, total_ms=total_ms,
        max_ms=total_ms / 2, computing=computing, cpu_percent=None, last_at=1.0,
        stack=[StackFrame(function, "/app/skills.py", line)],
    )  # fmt: skip


def report(
    classes: list[ClassLatency], sites: list[BlockingSite], lag_p99_ms: float = 1.0
) -> BottleneckReport:
    return build_report(
        {c.task_class: c for c in classes},
        sites,
        latency(lag_p99_ms),
        scheduler=SCHEDULER,
        threshold_ms=50.0,
        generated_at=1_800_000_000.0,
    )


def test_the_worst_class_is_furthest_over_its_deadline() -> None:
    """Classes rank by end-to-end p99 / deadline; classes without a deadline rank after."""
    result = report(
        [
            cls("command", e2e_ms=2500, wait_ms=100, run_ms=2400),  # 1.25x
            cls("voice", e2e_ms=1500, wait_ms=1200, run_ms=300),  # 1.5x
            cls("wake_word", e2e_ms=100, run_ms=100),  # 0.2x
            cls("background", e2e_ms=60_000, run_ms=60_000),  # no deadline
        ],
        [],
    )
    assert result.worst_class is not None and result.worst_class.task_class == "voice"
    assert result.worst_class.ratio == 1.5 and result.worst_class.deadline_ms == 1000.0
    assert [v.task_class for v in result.classes] == ["voice", "command", "wake_word", "background"]
    assert result.classes[-1].ratio is None


def test_queue_bound_classes_are_told_to_raise_concurrency() -> None:
    """A late class whose tasks mostly wait for a slot: raise its max_concurrency."""
    result = report([cls("voice", e2e_ms=1500, wait_ms=1200, run_ms=300)], [])
    assert result.recommendations == [
        "raise max_concurrency of voice (now 4) or its reserved slots: its tasks wait "
        "1200.0 ms (p99) for a slot, against its 1000 ms deadline"
    ]


def test_run_bound_classes_are_told_to_speed_up_or_move_off_the_loop() -> None:
    """A late class whose tasks run too long: speed them up; off the loop for a loop class,
    to a process for a thread class."""
    result = report(
        [
            cls("command", e2e_ms=2500, wait_ms=100, run_ms=2400, deadline_misses=2),
            cls("voice", e2e_ms=1100, wait_ms=10, run_ms=1090),
        ],
        [],
    )
    assert result.recommendations == [
        "speed up command: it runs 2400.0 ms (p99) against its 2000 ms deadline (2 missed); "
        "run it off the loop (executor: thread for I/O, process for CPU-bound work)",
        "speed up voice: it runs 1090.0 ms (p99) against its 1000 ms deadline (0 missed); "
        "use executor: process if it is CPU-bound (threads share the GIL)",
    ]


def test_the_worst_blocking_call_is_named_with_what_to_do() -> None:
    """The place that cost the loop the most is the worst blocking call; waiting calls go to
    a thread, computing ones to a process, unknown ones get both options."""
    sites = [site("parse_audio", 900.0, True, 12), site("read_config", 300.0, False, 40),
             site("mystery", 100.0, None, 55)]  # fmt: skip
    result = report([], sites)
    assert result.worst_blocking_call is sites[0]
    assert result.worst_class is None
    assert result.recommendations == [
        "move parse_audio at /app/skills.py:12 to run_in='process': it blocked the event loop "
        "3x, up to 450 ms (900 ms in all), computing; in a thread it would still hold the GIL",
        "move read_config at /app/skills.py:40 to run_in='thread' (or make it async): it "
        "blocked the event loop 3x, up to 150 ms (300 ms in all), waiting (I/O, a sleep or a "
        "lock)",
        "move mystery at /app/skills.py:55 off the event loop: run_in='thread' if it waits "
        "(I/O, sleep, a lock), run_in='process' if it computes; it blocked the event loop 3x, "
        "up to 50 ms (100 ms in all)",
    ]


def test_lag_without_a_blocking_call_says_the_loop_is_overloaded() -> None:
    """High loop lag with no single long block: too much work on the loop."""
    result = report([], [], lag_p99_ms=80.0)
    assert result.recommendations[0].startswith(
        "the event loop lags 80.0 ms (p99; threshold 50 ms) without one long block"
    )


def test_a_healthy_runtime_has_no_bottleneck() -> None:
    """Every class within its deadline, nothing blocking, low lag: no bottleneck."""
    result = report([cls("voice", e2e_ms=200, run_ms=150)], [])
    assert result.recommendations == [NO_BOTTLENECK]
    assert result.worst_class is not None and result.worst_class.ratio == 0.2


def test_a_class_missing_from_config_uses_the_deadline_its_tasks_carried() -> None:
    """A class the scheduler config does not name is judged against the deadline its
    tasks were queued with."""
    result = report([cls("music", e2e_ms=300, run_ms=300, deadline_ms=200.0)], [])
    assert result.worst_class is not None
    assert (result.worst_class.ratio, result.worst_class.max_concurrency) == (1.5, None)


def test_classes_with_no_finished_task_are_left_out() -> None:
    """A class with events but no finished task has nothing to judge yet."""
    pending = ClassLatency(task_class="voice", queued=3)
    assert report([pending], []).classes == []


def test_the_report_renders_as_text() -> None:
    """render() names the classes, the blocking places, the lag and the numbered advice."""
    text = report(
        [cls("voice", e2e_ms=1500, wait_ms=1200, run_ms=300)], [site("parse_audio", 900.0, True)]
    ).render()
    assert "voice: p99 1500.00 ms, deadline 1000 ms (1.50x)" in text
    assert "parse_audio at /app/skills.py:7: 3x, max 450.0 ms, total 900.0 ms, computing" in text
    assert "loop lag: p50 0.50 ms, p99 1.00 ms" in text
    assert "  1. move parse_audio" in text and "  2. raise max_concurrency of voice" in text
    empty = report([], []).render()
    assert "no task finished yet" in empty and "  none" in empty
