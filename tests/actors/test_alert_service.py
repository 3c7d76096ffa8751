"""The Alerter service: its schedule, events and views, repeat interval, history, recovery
actions, reload and statistics, on the fake clock."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
import yaml

from actors.alerter import Alerter
from actors.alerter.rules import RuleGroup
from runtime.actor import ActorContext
from runtime.clock import FakeClock
from runtime.config import Config, parse_config
from runtime.deadletters import DeadLetters
from runtime.events import (
    ActorRestarted,
    AlertFiring,
    AlertPending,
    AlertResolved,
    AutoRecoveryCompleted,
    AutoRecoveryStarted,
    EventBus,
    TaskQueued,
)
from runtime.exceptions import ActorStopped
from runtime.metrics import MetricsRegistry
from runtime.retry import RetryPolicy
from runtime.supervisor import Supervisor

MEMORY = {"name": "HighMemoryUsage", "expr": "memory_percent > 85", "for": "2s",
          "labels": {"severity": "warning"},
          "annotations": {"summary": "{{ $labels.device }} at {{ $value }}%"}}  # fmt: skip


def config_for(rules: list[dict[str, Any]], **section: Any) -> Config:
    alerts = {"evaluation_interval_ms": 1000, "history_path": None, "rules": rules}
    return parse_config(yaml.safe_dump({"alerts": alerts | section}))


def context_for(clock: FakeClock) -> ActorContext:
    return ActorContext(
        clock=clock,
        dead_letters=DeadLetters(1000, clock=clock),
        events=EventBus(clock=clock),
        metrics=MetricsRegistry(clock=clock),
        retry=RetryPolicy(initial_s=0.1, max_s=1.0, retries=0),
        rng=random.Random(3),
    )


def parts(alerter: Alerter, context: ActorContext) -> tuple[MetricsRegistry, EventBus]:
    assert context.metrics is not None and context.events is not None
    return context.metrics, context.events


class Posts:
    """A sink's post that always succeeds, recording (time, decoded body)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, Any]] = []

    async def __call__(self, url: str, body: bytes, timeout_s: float) -> int:
        self.calls.append((self.clock.now(), msgspec.json.decode(body)))
        return 200


async def test_an_alert_goes_pending_firing_resolved(clock: FakeClock) -> None:
    """Events and views follow the states: pending at once, firing after `for`, resolved when
    the condition stops; each event carries labels, rendered annotations and value."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY]), context)
    metrics, _ = parts(alerter, context)
    with alerter.subscribe() as events:
        async with alerter.running():
            metrics.set("memory_percent", 90.0, device="kitchen")
            await clock.advance(0)
            pending = events.receive_nowait()
            assert isinstance(pending, AlertPending) and alerter.active() == []
            assert [a.state for a in alerter.pending()] == ["pending"]
            assert pending.labels == {
                "alertname": "HighMemoryUsage", "device": "kitchen", "severity": "warning"
            }  # fmt: skip
            assert (pending.annotations, pending.value) == ({"summary": "kitchen at 90%"}, 90.0)
            metrics.set("memory_percent", 95.0, device="kitchen")
            await clock.advance(2.0)  # still pending at 1 s: no event then
            firing = events.receive_nowait()
            assert isinstance(firing, AlertFiring) and firing.annotations["summary"].endswith("95%")
            [alert] = alerter.active()
            assert (alert.active_since, alert.fired_at) == (clock.wall() - 2.0, clock.wall())
            metrics.set("memory_percent", 50.0, device="kitchen")
            await clock.advance(1.0)
            resolved = events.receive_nowait()
            assert isinstance(resolved, AlertResolved) and resolved.value == 95.0
            assert alerter.active() == [] and alerter.pending() == []
            assert len(events) == 0


async def test_subscribe_gets_alert_events_only(clock: FakeClock) -> None:
    """subscribe() carries the three alert events and nothing else from the bus."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY | {"for": "0s"}]), context)
    metrics, bus = parts(alerter, context)
    with alerter.subscribe() as events:
        bus.emit(TaskQueued, actor="test", task_id=1, task_class="voice", priority=1)
        async with alerter.running():
            metrics.set("memory_percent", 99.0)
            await clock.advance(0)
        assert [type(e) for e in [events.receive_nowait()]] == [AlertFiring]
        assert len(events) == 0


async def test_a_gauge_removed_from_the_registry_goes_stale_at_once(clock: FakeClock) -> None:
    """A gauge that disappears from the registry gets a stale marker at the next round: its
    alert resolves then, not after the 5-minute lookback."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY | {"for": "0s"}]), context)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 99.0, device="hall")
        await clock.advance(0)
        assert len(alerter.active()) == 1
        metrics.remove("memory_percent", device="hall")
        await clock.advance(1.0)
        assert alerter.active() == []
        [series] = list(alerter.series)
        assert series.values == [99.0, None]


async def test_rounds_run_on_a_fixed_grid(clock: FakeClock) -> None:
    """Round i runs at start + i·interval: a long advance runs every round at its own time;
    a reloaded interval starts a new grid."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY]), context)
    metrics, _ = parts(alerter, context)
    metrics.set("memory_percent", 10.0)
    async with alerter.running():
        await clock.advance(3.5)
        [series] = list(alerter.series)
        assert series.times == [0, 1000, 2000, 3000]
        assert alerter.apply_config(config_for([MEMORY], evaluation_interval_ms=250)) == []
        await clock.advance(1.0)  # the round due at 4 s, then every 250 ms from there
        assert series.times[-4:] == [3000, 4000, 4250, 4500]
    assert alerter.statistics().evaluations == 7


async def test_repeat_interval_limits_resends_to_sinks(clock: FakeClock) -> None:
    """External sinks get an alert when it fires, again once per repeat interval while it
    fires (not every round), and once when it resolves."""
    posts = Posts(clock)
    config = config_for(
        [MEMORY | {"for": "0s"}], repeat_interval_s=10.0, webhook_url="http://hook.invalid/"
    )
    context = context_for(clock)
    alerter = Alerter(config, context, sink_post=posts)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 99.0)
        await clock.advance(25.0)
        metrics.set("memory_percent", 1.0)
        await clock.advance(5.0)
        await alerter.flush()
    assert [(t, body["alerts"][0]["status"]) for t, body in posts.calls] == [
        (0.0, "firing"), (10.0, "firing"), (20.0, "firing"), (26.0, "resolved"),
    ]  # fmt: skip
    firing = posts.calls[1][1]["alerts"][0]
    assert firing["startsAt"] == "2027-01-15T08:00:00.000Z"
    assert firing["endsAt"] == "2027-01-15T08:00:50.000Z"  # leased for 4 repeat intervals


async def test_history_is_kept_in_sqlite(clock: FakeClock, tmp_path: Path) -> None:
    """Every transition is recorded in the SQLite file; history() filters and orders newest
    first; the file holds the rows after the Alerter stops."""
    path = tmp_path / "alerts.db"
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY], history_path=str(path)), context)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 90.0, device="a")
        await clock.advance(2.0)
        metrics.set("memory_percent", 10.0, device="a")
        await clock.advance(1.0)
        everything = await alerter.history()
        assert [r.state for r in everything] == ["resolved", "firing", "pending"]
        assert everything[0].labels["device"] == "a" and everything[0].value == 90.0
        assert [r.state for r in await alerter.history(state="firing")] == ["firing"]
        assert len(await alerter.history(since=clock.wall() - 1.5, limit=5)) == 2
        assert await alerter.history(name="Other") == []
        assert len(await alerter.history(limit=1)) == 1
    assert alerter.statistics().history_recorded == 3

    def rows() -> list[Any]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT name, state FROM alert_history ORDER BY id").fetchall()

    assert await anyio.to_thread.run_sync(rows) == [
        ("HighMemoryUsage", "pending"), ("HighMemoryUsage", "firing"),
        ("HighMemoryUsage", "resolved"),
    ]  # fmt: skip


async def test_history_older_than_the_retention_is_deleted(
    clock: FakeClock, tmp_path: Path
) -> None:
    """When the history opens it forgets records older than history_retention_s."""
    path = tmp_path / "alerts.db"
    config = config_for([MEMORY | {"for": "0s"}], history_path=str(path), history_retention_s=60)
    context = context_for(clock)
    alerter = Alerter(config, context)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 90.0)
        await clock.advance(0)
        assert len(await alerter.history()) == 1
    await clock.advance(61.0)
    async with alerter.running():
        assert await alerter.history() == []


async def test_history_checks_its_arguments(clock: FakeClock) -> None:
    """history() refuses a bad state or limit, and says when the Alerter is not running."""
    alerter = Alerter(config_for([MEMORY]), context_for(clock))
    with pytest.raises(ActorStopped):
        await alerter.history()
    async with alerter.running():
        with pytest.raises(ValueError, match="state must be one of"):
            await alerter.history(state="burning")
        with pytest.raises(ValueError, match="limit must be an int >= 1"):
            await alerter.history(limit=0)


async def test_recovery_actions_run_when_an_alert_fires(clock: FakeClock) -> None:
    """A firing alert runs its rule's recovery actions once, each reported as started and
    completed: a registered one, the built-in collect_garbage, a failing and an unknown one."""
    shed: list[str] = []

    async def shed_background() -> str:
        shed.append("shed")
        return "shed 3 tasks"

    async def broken() -> None:
        raise RuntimeError("cache is locked")

    actions = ["shed_background", "collect_garbage", "broken", "missing"]
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY | {"for": "0s", "recovery": actions}]), context)
    alerter.register_recovery("shed_background", shed_background)
    alerter.register_recovery("broken", broken)
    metrics, bus = parts(alerter, context)
    with bus.subscribe(AutoRecoveryStarted, AutoRecoveryCompleted) as events:
        async with alerter.running():
            metrics.set("memory_percent", 99.0)
            await clock.advance(5.0)  # fires once, keeps firing: actions run once
        seen = [events.receive_nowait() for _ in range(len(events))]
    completed = {e.action: e for e in seen if isinstance(e, AutoRecoveryCompleted)}
    assert [e.action for e in seen if isinstance(e, AutoRecoveryStarted)] == actions
    assert {a: c.ok for a, c in completed.items()} == {
        "shed_background": True, "collect_garbage": True, "broken": False, "missing": False
    }  # fmt: skip
    assert completed["shed_background"].detail == "shed 3 tasks" and shed == ["shed"]
    assert completed["collect_garbage"].detail.startswith("collected ")
    assert completed["broken"].detail == "RuntimeError: cache is locked"
    assert "no recovery action 'missing'" in completed["missing"].detail
    assert all(c.alert == "HighMemoryUsage" for c in completed.values())
    assert alerter.statistics().recoveries == dict.fromkeys(actions, 1)


def test_register_recovery_checks_its_arguments(clock: FakeClock) -> None:
    """A recovery action needs a non-empty name and a callable."""
    alerter = Alerter(config_for([MEMORY]), context_for(clock))
    with pytest.raises(ValueError, match="non-empty string"):
        alerter.register_recovery(" ", lambda: anyio.lowlevel.checkpoint())
    with pytest.raises(TypeError, match="async callable"):
        alerter.register_recovery("shed", "not callable")  # type: ignore[arg-type]


async def test_reload_keeps_alerts_of_unchanged_rules(clock: FakeClock) -> None:
    """apply_config swaps rules live: a rule with the same name and expression keeps its
    alerts, a changed one starts over; sink and history settings need a restart."""
    context = context_for(clock)
    other = MEMORY | {"name": "Other", "expr": "memory_percent > 50"}
    alerter = Alerter(config_for([MEMORY, other]), context)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 90.0)
        await clock.advance(1.0)
        assert [a.name for a in alerter.pending()] == ["HighMemoryUsage", "Other"]
        changed = config_for(
            [MEMORY | {"annotations": {}}, other | {"expr": "memory_percent > 60"}],
            webhook_url="http://hook.invalid/", history_path="x.db",
        )  # fmt: skip
        assert alerter.apply_config(changed) == ["$.alerts.history_path", "$.alerts.webhook_url"]
        assert [a.name for a in alerter.pending()] == ["HighMemoryUsage"]
        await clock.advance(1.0)
        assert [a.name for a in alerter.active()] == ["HighMemoryUsage"]  # for: 2s kept
        assert alerter.active()[0].annotations == {}


async def test_a_failing_rule_is_reported_and_the_others_go_on(clock: FakeClock) -> None:
    """A rule whose samples collide on the alert labels fails its round (state unchanged,
    reported in statistics); the other rules are evaluated as usual."""
    clash = {"name": "Clash", "expr": "memory_percent > 0", "labels": {"device": "all"}}
    context = context_for(clock)
    alerter = Alerter(config_for([clash, MEMORY | {"for": "0s"}]), context)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 90.0, device="a")
        metrics.set("memory_percent", 95.0, device="b")
        await clock.advance(1.0)
    stats = alerter.statistics()
    assert "several series give the alert labels" in stats.rule_errors["Clash"]
    assert stats.firing == 2 and [a.name for a in alerter.active()] == ["HighMemoryUsage"] * 2


async def test_a_crashed_evaluator_restarts_and_keeps_its_alerts(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that raises crashes the evaluator; its supervisor restarts it and the alert
    state, kept by the service, carries on."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY]), context)
    metrics, bus = parts(alerter, context)
    original = RuleGroup.evaluate
    calls = {"n": 0}

    def flaky(self: RuleGroup, t_ms: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("evaluation bug")
        return original(self, t_ms)

    monkeypatch.setattr(RuleGroup, "evaluate", flaky)
    with bus.subscribe(ActorRestarted) as restarts:
        async with alerter.running():
            metrics.set("memory_percent", 90.0)
            await clock.advance(4.0)
            assert restarts.receive_nowait().name == "alerts.evaluator"
            assert [a.state for a in alerter.active()] == ["firing"]


async def test_attach_runs_under_a_parent_supervisor(clock: FakeClock) -> None:
    """attach() nests the Alerter's actors under the runtime's supervisor."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY], webhook_url="http://hook.invalid/"), context)
    async with Supervisor("root", context=context) as root:
        alerter.attach(root, context)
        await clock.advance(0)
        [nested] = root.statistics().supervisors
        assert nested.name == "alerts"
        assert [a.name for a in nested.actors] == [
            "alerts.history", "alerts.recovery", "alerts.sink.webhook", "alerts.evaluator"
        ]  # fmt: skip
        assert alerter.statistics().evaluations == 1


async def test_statistics_count_rounds_series_and_transitions(clock: FakeClock) -> None:
    """statistics() reports rules, series, samples, rounds and their cost, and transitions."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY]), context)
    metrics, _ = parts(alerter, context)
    async with alerter.running():
        metrics.set("memory_percent", 90.0, device="a")
        metrics.set("cpu_percent", 5.0)
        await clock.advance(2.0)
    stats = alerter.statistics()
    assert (stats.rules, stats.series, stats.samples, stats.evaluations) == (1, 2, 6, 3)
    assert stats.transitions == {"pending": 1, "firing": 1, "resolved": 0}
    assert (stats.pending, stats.firing) == (0, 1)
    assert 0 < stats.last_evaluation_ms <= stats.max_evaluation_ms
    assert msgspec.json.decode(msgspec.json.encode(stats))["rules"] == 1


async def test_a_retried_round_leaves_one_tick_pending(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that fails and is retried by the actor does not double the schedule: one round
    per interval afterwards."""
    context = context_for(clock)
    context.retry = RetryPolicy(initial_s=0.1, max_s=0.1, retries=2)
    alerter = Alerter(config_for([MEMORY]), context)
    original = RuleGroup.evaluate
    calls = {"n": 0}

    def flaky(self: RuleGroup, t_ms: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("once")
        return original(self, t_ms)

    monkeypatch.setattr(RuleGroup, "evaluate", flaky)
    async with alerter.running():
        await clock.advance(5.0)
    assert alerter.statistics().evaluations == 6  # 0 s, the retry of 1 s, then 2..5 s


async def test_hand_outs_without_running_actors_go_to_the_dead_letters(clock: FakeClock) -> None:
    """A round run while the Alerter's actors are stopped still updates the alerts; what it
    would hand to the history, the sinks and recovery goes to the dead letters."""
    rule = MEMORY | {"for": "0s", "recovery": ["collect_garbage"]}
    config = config_for([rule], webhook_url="http://hook.invalid/")
    context = context_for(clock)
    alerter = Alerter(config, context)
    metrics, _ = parts(alerter, context)
    metrics.set("memory_percent", 99.0)
    alerter.evaluate_now()
    assert [a.state for a in alerter.active()] == ["firing"]
    assert context.dead_letters is not None
    assert sorted(d.source for d in context.dead_letters.entries()) == [
        "alerts.history", "alerts.recovery", "alerts.webhook"
    ]  # fmt: skip
    assert context.dead_letters.by_reason == {"actor_stopped": 3}


async def test_flush_gives_up_after_its_timeout(clock: FakeClock) -> None:
    """flush() raises TimeoutError when a sink stays busy past timeout_s."""
    release = anyio.Event()

    async def hang(url: str, body: bytes, timeout_s: float) -> int:
        await release.wait()
        return 200

    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY | {"for": "0s"}], webhook_url="http://h.invalid/"),
                      context, sink_post=hang)  # fmt: skip
    metrics, _ = parts(alerter, context)
    async with alerter.running(), anyio.create_task_group() as tg:
        metrics.set("memory_percent", 99.0)
        await clock.advance(0)
        outcome: list[BaseException] = []

        async def flush() -> None:
            try:
                await alerter.flush(timeout_s=2.0)
            except TimeoutError as exc:
                outcome.append(exc)

        tg.start_soon(flush)
        await clock.advance(2.0)
        assert len(outcome) == 1
        release.set()


async def test_the_actors_refuse_messages_they_do_not_know(clock: FakeClock) -> None:
    """Each of the Alerter's actors raises TypeError for a message that is not its own."""
    alerter = Alerter(config_for([MEMORY], webhook_url="http://h.invalid/"), context_for(clock))
    async with alerter.running():
        for name in ("history", "recovery", "webhook", "evaluator"):
            with pytest.raises(TypeError, match=r"got 'nonsense'|got str"):
                await alerter._refs[name].ask("nonsense")
            await clock.advance(1.0)  # its supervisor restarts it after a backoff


async def test_a_history_file_that_cannot_be_opened(clock: FakeClock, tmp_path: Path) -> None:
    """A history path SQLite cannot open fails the history's requests, not the evaluation."""
    context = context_for(clock)
    alerter = Alerter(config_for([MEMORY], history_path=str(tmp_path)), context)
    async with alerter.running():
        with pytest.raises(sqlite3.OperationalError):
            await alerter.history()
        await clock.advance(2.0)
    assert alerter.statistics().evaluations == 3
