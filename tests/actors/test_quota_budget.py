"""The runtime's own budget as a quota, on the fake clock: recovery actions run (in order,
published, failures reported) before the budget is breached; a breach is published once."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from actors.quota import BudgetReading, QuotaEnforcer
from actors.quota.budget import RuntimeProbe, measure_runtime
from actors.quota.recovery import collect_garbage
from actors.quota.service import RUNTIME
from actors.scheduler import Scheduler
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import BudgetConfig
from runtime.events import AutoRecoveryCompleted, AutoRecoveryStarted, EventBus, QuotaExceeded
from runtime.supervisor import Supervisor
from runtime.testing import capture_logs

from .test_quota_kit import (
    MIB,
    FakePool,
    drain,
    enforced,
    inline,
    quota_config,
    scheduler_section,
)


def budget_config(**settings: object) -> BudgetConfig:
    values: dict[str, object] = {
        "memory_mb": 1000,
        "cpu_percent": 20.0,
        "interval_ms": 1000,
        "cpu_window_s": 10.0,
        "recover_ratio": 0.8,
        "cooldown_s": 30.0,
    }
    values.update(settings)
    return BudgetConfig(**values)  # type: ignore[arg-type]


async def test_nearing_the_memory_budget_runs_its_recovery_actions_in_order(
    clock: FakeClock,
) -> None:
    """At 85% of the memory budget: a warning, then each memory action, published."""
    ran: list[str] = []

    async def shrink_caches() -> str:
        ran.append("shrink_caches")
        return "freed 40 MB"

    config = quota_config(budget=budget_config(memory_actions=["shrink_caches", "trim"]))
    async with enforced(clock, config) as h:
        h.quotas.register_recovery("shrink_caches", shrink_caches)
        h.quotas.register_recovery("trim", lambda: ran.append("trim"))
        with h.bus.subscribe(QuotaExceeded, AutoRecoveryStarted, AutoRecoveryCompleted) as events:
            pressures = await h.quotas.observe_budget(BudgetReading(850 * MIB, 0.0))
            found = drain(events)
        assert ran == ["shrink_caches", "trim"]
        assert [p.resource for p in pressures] == ["memory"] and not pressures[0].breached
        warning = found[0]
        assert isinstance(warning, QuotaExceeded)
        assert (warning.plugin, warning.quota, warning.measured) == (RUNTIME, "memory", 850.0)
        completions = [e for e in found if isinstance(e, AutoRecoveryCompleted)]
        assert [(e.action, e.ok, e.detail) for e in completions] == [
            ("shrink_caches", True, "freed 40 MB"),
            ("trim", True, ""),
        ]
        budget = h.quotas.statistics().budget
        assert budget.recoveries == {"shrink_caches": 1, "trim": 1}
        assert budget.memory_mb == 850.0


async def test_unknown_and_failing_actions_are_reported_not_raised(clock: FakeClock) -> None:
    """An action nobody registered, and one that raises, complete with ok false and why."""

    def broken() -> None:
        raise OSError("disk gone")

    config = quota_config(budget=budget_config(memory_actions=["missing", "broken"]))
    async with enforced(clock, config) as h:
        h.quotas.register_recovery("broken", broken)
        with h.bus.subscribe(AutoRecoveryCompleted) as events:
            with capture_logs() as logs:
                await h.quotas.observe_budget(BudgetReading(900 * MIB, 0.0))
            missing, failed = drain(events)
        assert not missing.ok and "no recovery action 'missing'" in missing.detail  # type: ignore[attr-defined]
        assert not failed.ok and failed.detail == "OSError: disk gone"  # type: ignore[attr-defined]
        assert h.quotas.statistics().budget.recovery_failures == 2
        errors = [e for e in logs if e["event"] == "recovery action finished"]
        assert [e["log_level"] for e in errors] == ["error", "error"]


async def test_a_breach_is_published_once_and_logged_when_over(clock: FakeClock) -> None:
    """Over the budget: QuotaExceeded for the runtime; again only after it was back within."""
    config = quota_config(budget=budget_config(memory_actions=[], cooldown_s=1000.0))
    async with enforced(clock, config) as h:
        with h.bus.subscribe(QuotaExceeded) as events:
            await h.quotas.observe_budget(BudgetReading(1200 * MIB, 0.0))
            await h.quotas.observe_budget(BudgetReading(1300 * MIB, 0.0))
            with capture_logs() as logs:
                await h.quotas.observe_budget(BudgetReading(100 * MIB, 0.0))
            await h.quotas.observe_budget(BudgetReading(1100 * MIB, 0.0))
            breaches = drain(events)
        assert [e.measured for e in breaches] == [1200.0, 1100.0]  # type: ignore[attr-defined]
        assert [e["event"] for e in logs] == ["runtime back within budget"]
        assert h.quotas.statistics().budget.breaches == {"memory": 2, "cpu": 0}


async def test_the_budget_is_measured_every_interval_and_cpu_runs_its_actions(
    clock: FakeClock,
) -> None:
    """The loop probes each interval_ms; average CPU near its limit runs the CPU actions."""
    shed: list[float] = []
    config = quota_config(budget=budget_config(interval_ms=1000, cpu_window_s=4.0))
    async with enforced(clock, config, cpu_count=2) as h:
        h.quotas.register_recovery("shed_background", lambda: shed.append(clock.now()))
        for second in range(1, 5):
            h.budget.append(BudgetReading(10 * MIB, 0.35 * second))  # 35% of a core: 17.5%
            await clock.advance(1.0)
        assert shed == [3.0]  # once the window was half measured; then cooling down
        assert h.quotas.statistics().budget.cpu_percent == pytest.approx(17.5)


def test_collect_garbage_says_what_it_collected() -> None:
    """The built-in action runs a collection and reports the count."""
    assert collect_garbage().startswith("collected ")


async def test_bad_recovery_registrations_raise(clock: FakeClock) -> None:
    """A bad name is a ValueError, a non-callable a TypeError; unregister says if it was there."""
    async with enforced(clock) as h:
        with pytest.raises(ValueError, match="recovery action name"):
            h.quotas.register_recovery("2fast", lambda: None)
        with pytest.raises(TypeError, match="must be callable"):
            h.quotas.register_recovery("shed", 42)  # type: ignore[arg-type]
        h.quotas.register_recovery("shed", lambda: None)
        assert h.quotas.unregister_recovery("shed")
        assert not h.quotas.unregister_recovery("shed")


def test_measure_runtime_counts_the_children_too() -> None:
    """The runtime's memory and CPU include its child processes'."""
    me = psutil.Process()
    alone = measure_runtime(me)
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        child_rss = psutil.Process(child.pid).memory_info().rss
        together = measure_runtime(me)
    finally:
        child.communicate(b"")
    assert alone.rss_bytes > 0 and alone.cpu_s > 0
    assert together.rss_bytes >= alone.rss_bytes + child_rss * 0.9


def test_the_probe_finds_new_children_only_at_its_next_refresh() -> None:
    """Known children are read every time; a new one counts from the next refresh."""
    now = [0.0]
    probe = RuntimeProbe(refresh_s=10.0, now=lambda: now[0])
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    alone = probe()
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        child_rss = psutil.Process(child.pid).memory_info().rss
        now[0] = 9.0
        before_refresh = probe()
        now[0] = 10.0
        after_refresh = probe()
    finally:
        child.communicate(b"")
    assert before_refresh.rss_bytes < alone.rss_bytes + child_rss * 0.5
    assert after_refresh.rss_bytes >= alone.rss_bytes + child_rss * 0.9


async def test_attached_under_a_supervisor_the_enforcer_measures_and_stops_cleanly(
    clock: FakeClock,
) -> None:
    """attach() runs the measuring loops under a supervisor; stopping it stops them."""
    readings = [BudgetReading(900 * MIB, 0.0)]
    bus = EventBus(clock=clock)
    context = ActorContext(clock=clock, events=bus)
    scheduler = Scheduler(scheduler_section(), context, pool_factory=FakePool, cpu_probe=None)
    config = quota_config(budget=BudgetConfig(memory_mb=1000, memory_actions=[]))
    quotas = QuotaEnforcer(config, context, scheduler, probe=lambda: readings[-1], offload=inline)
    supervisor = Supervisor("root", context=context)
    scheduler.attach(supervisor, context)
    quotas.attach(supervisor, context)
    with bus.subscribe(QuotaExceeded) as events:
        async with supervisor:
            await clock.advance(1.0)
            assert quotas.statistics().running
            assert quotas.statistics().budget.memory_mb == 900.0
            (warning,) = drain(events)
    assert warning.plugin == RUNTIME  # type: ignore[attr-defined]
    assert not quotas.statistics().running
