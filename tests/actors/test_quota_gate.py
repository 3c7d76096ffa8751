"""Time, rate and concurrency quotas through a real Scheduler on the fake clock: waits and
refusals, strict spacing, slots handed on in order, time limits, events, statistics, and every
way a call can end while it waits."""

from __future__ import annotations

import concurrent.futures

import pytest

from actors.quota.notify import ACTOR
from runtime.clock import FakeClock
from runtime.config import PluginQuota, TaskClassConfig
from runtime.events import PluginTerminated, PluginThrottled, QuotaExceeded, TaskQueued
from runtime.exceptions import ActorStopped, Overloaded
from runtime.exceptions import QuotaExceeded as QuotaError
from runtime.testing import capture_logs

from .test_quota_kit import CLASSES, Gates, drain, enforced, quota_config, scheduler_section

# -- rate --------------------------------------------------------------------------------------


async def test_over_rate_calls_wait_for_their_tokens(clock: FakeClock) -> None:
    """rate 2/s burst 2: two calls start at once, the next ones 0.5 s apart."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("weather", rate=2, burst=2)
        handles = [h.scheduler.spawn(gates.hold(f"c{i}"), plugin="weather") for i in range(4)]
        await clock.advance(0)
        assert gates.names() == ["c0", "c1"]
        await clock.advance(0.5)
        await clock.advance(0.5)
        assert gates.started == [("c0", 0.0), ("c1", 0.0), ("c2", 0.5), ("c3", 1.0)]
        for i in range(4):
            gates.open(f"c{i}")
        assert [await handle.result() for handle in handles] == ["c0", "c1", "c2", "c3"]
        stats = h.quotas.statistics().plugins["weather"]
        assert (stats.calls, stats.throttled, stats.refused, stats.completed) == (4, 2, 0, 4)


async def test_a_rate_wait_is_published_with_its_delay(clock: FakeClock) -> None:
    """Each delayed call publishes PluginThrottled with quota 'rate' and throttle_s."""
    async with enforced(clock) as h:
        h.quotas.register("weather", rate=4)
        with h.bus.subscribe(PluginThrottled) as events:
            for _ in range(3):
                h.scheduler.spawn(abs, -1, plugin="weather")
            throttled = drain(events)
        assert [(e.plugin, e.quota, e.throttle_s) for e in throttled] == [  # type: ignore[attr-defined]
            ("weather", "rate", 0.25),
            ("weather", "rate", 0.5),
        ]
        assert all(e.actor == ACTOR for e in throttled)


async def test_strict_spacing_spaces_calls_even_after_a_pause(clock: FakeClock) -> None:
    """rate 5/s strictly spaced: calls start 0.2 s apart; idling earns no burst."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("tts", rate=5, strict_spacing=True)
        for i in range(3):
            h.scheduler.spawn(gates.note(f"a{i}"), plugin="tts")
        await clock.advance(10.0)
        for i in range(2):
            h.scheduler.spawn(gates.note(f"b{i}"), plugin="tts")
        await clock.advance(1.0)
    assert gates.started == [("a0", 0.0), ("a1", 0.2), ("a2", 0.4), ("b0", 10.0), ("b1", 10.2)]


async def test_on_rate_refuse_raises_with_when_to_retry(clock: FakeClock) -> None:
    """Over the rate with on_rate refuse: QuotaExceeded naming the plugin, quota, retry time."""
    async with enforced(clock) as h:
        h.quotas.register("search", rate=1, burst=1, on_rate="refuse")
        with h.bus.subscribe(QuotaExceeded) as events:
            assert await h.scheduler.submit(abs, -3, plugin="search") == 3
            await clock.advance(0.25)
            with pytest.raises(
                QuotaError, match=r"plugin 'search' exceeded its rate quota"
            ) as info:
                h.scheduler.spawn(abs, -3, plugin="search")
            (event,) = drain(events)
        error = info.value
        assert (error.plugin, error.quota, error.limit) == ("search", "rate", 1.0)
        assert error.measured > error.limit
        assert error.retry_after_s == pytest.approx(0.75)
        assert event.retry_after_s == pytest.approx(0.75)  # type: ignore[attr-defined]
        await clock.advance(0.75)
        assert await h.scheduler.submit(abs, -4, plugin="search") == 4
        stats = h.quotas.statistics().plugins["search"]
        assert (stats.calls, stats.refused, stats.completed) == (3, 1, 2)


async def test_a_rate_wait_past_the_deadline_is_refused_at_once(clock: FakeClock) -> None:
    """A call whose token comes after its deadline is refused now, not failed later."""
    async with enforced(clock) as h:
        h.quotas.register("slowapi", rate=0.2)  # a call every 5 s; commands have 2 s
        h.scheduler.spawn(abs, 1, task_class="command", plugin="slowapi")
        with pytest.raises(QuotaError, match="rate quota") as info:
            h.scheduler.spawn(abs, 1, task_class="command", plugin="slowapi")
        assert info.value.retry_after_s == pytest.approx(5.0)
        handle = h.scheduler.spawn(abs, -7, task_class="background", plugin="slowapi")
        await clock.advance(5.0)
        assert await handle.result() == 7


async def test_max_waiting_bounds_the_calls_held_back(clock: FakeClock) -> None:
    """Past max_waiting held calls, the next one is refused (quota 'max_waiting')."""
    async with enforced(clock) as h:
        h.quotas.register("chatty", rate=1, max_waiting=2)
        for _ in range(3):  # one at once, two waiting
            h.scheduler.spawn(abs, 1, task_class="background", plugin="chatty")
        with pytest.raises(QuotaError, match="max_waiting quota") as info:
            h.scheduler.spawn(abs, 1, task_class="background", plugin="chatty")
        assert (info.value.measured, info.value.limit) == (3, 2)
        assert h.quotas.statistics().plugins["chatty"].waiting == 2


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrency_holds_extra_calls_and_hands_slots_on_in_order(clock: FakeClock) -> None:
    """max_concurrency 2: the third and fourth call wait, then start in arrival order."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("llm", max_concurrency=2)
        for i in range(4):
            h.scheduler.spawn(gates.hold(f"c{i}"), task_class="background", plugin="llm")
        await clock.advance(0)
        assert gates.names() == ["c0", "c1"]
        stats = h.quotas.statistics().plugins["llm"]
        assert (stats.active, stats.waiting, stats.throttled) == (2, 2, 2)
        gates.open("c1")
        await clock.advance(0)
        assert gates.names() == ["c0", "c1", "c2"]
        gates.open("c0")
        await clock.advance(0)
        assert gates.names() == ["c0", "c1", "c2", "c3"]
        gates.open("c2")
        gates.open("c3")
        await clock.advance(0)
        stats = h.quotas.statistics().plugins["llm"]
        assert (stats.active, stats.waiting, stats.completed) == (0, 0, 4)


async def test_on_concurrency_refuse_raises_when_all_slots_are_taken(clock: FakeClock) -> None:
    """With on_concurrency refuse a call over the limit is refused with no retry time."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("llm", max_concurrency=1, on_concurrency="refuse")
        h.scheduler.spawn(gates.hold("first"), plugin="llm")
        with pytest.raises(QuotaError, match=r"concurrency quota \(2 > 1\)") as info:
            h.scheduler.spawn(abs, 1, plugin="llm")
        assert info.value.retry_after_s is None
        gates.open("first")
        await clock.advance(0)
        assert await h.scheduler.submit(abs, -1, plugin="llm") == 1


async def test_a_call_waiting_for_a_slot_is_refused_at_its_deadline(clock: FakeClock) -> None:
    """A call still waiting for a slot when its deadline comes fails with QuotaExceeded then."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("llm", max_concurrency=1)
        h.scheduler.spawn(gates.hold("hog"), task_class="background", plugin="llm")
        waiting = h.scheduler.spawn(abs, 1, task_class="command", plugin="llm")  # 2 s deadline
        await clock.advance(1.999)
        assert not waiting.done()
        await clock.advance(0.001)
        with pytest.raises(QuotaError, match="concurrency quota"):
            await waiting.result()
        stats = h.quotas.statistics().plugins["llm"]
        assert (stats.refused, stats.waiting, stats.active) == (1, 0, 1)
        assert h.scheduler.statistics().classes["command"].refused == 1


async def test_a_call_with_its_token_waits_for_a_slot_too(clock: FakeClock) -> None:
    """Rate and concurrency together: a delayed call that finds the slots taken waits on."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("both", rate=10, max_concurrency=1)
        for i in range(2):
            h.scheduler.spawn(gates.hold(f"c{i}"), task_class="background", plugin="both")
        await clock.advance(1.0)
        assert gates.names() == ["c0"]
        gates.open("c0")
        await clock.advance(0)
        assert gates.started == [("c0", 0.0), ("c1", 1.0)]


async def test_on_concurrency_refuse_after_a_rate_wait_fails_the_call(clock: FakeClock) -> None:
    """A call whose token came but whose slot is taken, with on_concurrency refuse, fails."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("both", rate=10, max_concurrency=1, on_concurrency="refuse")
        h.scheduler.spawn(gates.hold("c0"), task_class="background", plugin="both")
        late = h.scheduler.spawn(abs, 1, task_class="background", plugin="both")
        await clock.advance(0.1)
        with pytest.raises(QuotaError, match="concurrency quota"):
            await late.result()
        assert h.quotas.statistics().plugins["both"].waiting == 0


async def test_raising_the_limit_lets_waiting_calls_in(clock: FakeClock) -> None:
    """Registering again with a higher max_concurrency starts calls that were waiting."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("llm", max_concurrency=1)
        for i in range(3):
            h.scheduler.spawn(gates.hold(f"c{i}"), task_class="background", plugin="llm")
        await clock.advance(0)
        h.quotas.register("llm", max_concurrency=3)
        await clock.advance(0)
        assert gates.names() == ["c0", "c1", "c2"]


# -- time limits -------------------------------------------------------------------------------


async def test_a_call_past_its_time_limit_is_cancelled_on_time(clock: FakeClock) -> None:
    """timeout_s 1: the call fails with QuotaExceeded at exactly 1 s; both steps published."""
    async with enforced(clock) as h:
        h.quotas.register("slow", timeout_s=1.0)
        with h.bus.subscribe(QuotaExceeded, PluginTerminated) as events:
            handle = h.scheduler.spawn(clock.sleep, 5.0, plugin="slow")
            await clock.advance(0.999)
            assert not handle.done()
            await clock.advance(0.001)
            assert handle.done()
            with pytest.raises(QuotaError, match=r"timeout quota") as info:
                await handle.result()
            kinds = [(type(e).__name__, e.quota) for e in drain(events)]  # type: ignore[attr-defined]
        assert info.value.measured == pytest.approx(1.0)
        assert kinds == [("QuotaExceeded", "timeout"), ("PluginTerminated", "timeout")]
        assert await h.scheduler.submit(abs, -2, plugin="slow") == 2
        stats = h.quotas.statistics().plugins["slow"]
        assert (stats.terminated, stats.failed, stats.completed) == (1, 1, 1)


async def test_the_time_limit_counts_from_the_start_not_the_submission(clock: FakeClock) -> None:
    """A call that waited 0.5 s for its token still gets its whole time limit."""
    async with enforced(clock) as h:
        h.quotas.register("paced", rate=2, timeout_s=1.0)
        h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
        handle = h.scheduler.spawn(clock.sleep, 0.9, task_class="background", plugin="paced")
        await clock.advance(1.4)
        assert await handle.result() is None


async def test_terminated_calls_are_logged_with_plugin_quota_and_value(clock: FakeClock) -> None:
    """The termination is one error log line naming the plugin, the quota and the value."""
    async with enforced(clock) as h:
        h.quotas.register("slow", timeout_s=0.5)
        with capture_logs() as logs:
            handle = h.scheduler.spawn(clock.sleep, 5.0, plugin="slow")
            await clock.advance(0.5)
        with pytest.raises(QuotaError):
            await handle.result()
    (line,) = [entry for entry in logs if entry["event"] == "plugin terminated"]
    assert (line["plugin"], line["quota"], line["measured"], line["limit"]) == (
        "slow", "timeout", 0.5, 0.5,
    )  # fmt: skip
    assert line["log_level"] == "error"


async def test_log_lines_are_limited_per_plugin_quota_and_step(clock: FakeClock) -> None:
    """Many refusals within log_interval_s give one line; the next one counts those held back."""
    async with enforced(clock, quota_config(log_interval_s=1.0)) as h:
        h.quotas.register("spam", rate=1, on_rate="refuse")
        h.scheduler.spawn(abs, 1, task_class="background", plugin="spam")
        with capture_logs() as logs:
            for _ in range(5):
                with pytest.raises(QuotaError):
                    h.scheduler.spawn(abs, 1, task_class="background", plugin="spam")
            await clock.advance(1.0)
            h.scheduler.spawn(abs, 1, task_class="background", plugin="spam")
            with pytest.raises(QuotaError):
                h.scheduler.spawn(abs, 1, task_class="background", plugin="spam")
    lines = [entry for entry in logs if entry["event"] == "quota refused"]
    assert [line["suppressed"] for line in lines] == [0, 4]


# -- how waiting calls end ---------------------------------------------------------------------


async def test_cancelling_a_waiting_call_gives_its_place_back(clock: FakeClock) -> None:
    """A held call cancelled by its submitter ends cancelled; the plugin holds nothing for it."""
    gates = Gates(clock)
    async with enforced(clock) as h:
        h.quotas.register("llm", max_concurrency=1)
        h.scheduler.spawn(gates.hold("first"), task_class="background", plugin="llm")
        waiting = h.scheduler.spawn(gates.hold("never"), task_class="background", plugin="llm")
        waiting.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            await waiting.result()
        assert h.quotas.statistics().plugins["llm"].waiting == 0
        gates.open("first")
        await clock.advance(0)
        assert gates.names() == ["first"]
        assert h.quotas.statistics().plugins["llm"].active == 0


async def test_a_token_that_comes_after_its_call_was_cancelled_does_nothing(
    clock: FakeClock,
) -> None:
    """The timer of a cancelled rate wait fires into nothing; later calls are unaffected."""
    async with enforced(clock) as h:
        h.quotas.register("paced", rate=1)
        h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
        waiting = h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
        waiting.cancel()
        await clock.advance(1.0)
        assert h.quotas.statistics().plugins["paced"].waiting == 0
        later = h.scheduler.spawn(abs, -5, task_class="background", plugin="paced")
        await clock.advance(0)
        assert later.done() and await later.result() == 5  # the returned token, at once


async def test_a_call_the_queue_refuses_after_admission_gives_its_slot_back(
    clock: FakeClock,
) -> None:
    """Admitted by the quota but refused by the class's full queue: the slot is not lost."""
    gates = Gates(clock)
    classes = {**CLASSES, "narrow": TaskClassConfig(priority=5, max_concurrency=1,
                                                   queue_capacity=1)}  # fmt: skip
    async with enforced(clock, scheduler=scheduler_section(classes=classes)) as h:
        h.quotas.register("llm", max_concurrency=5)
        h.scheduler.spawn(gates.hold("running"), task_class="narrow")
        h.scheduler.spawn(gates.hold("queued"), task_class="narrow")
        with pytest.raises(Overloaded):
            h.scheduler.spawn(abs, 1, task_class="narrow", plugin="llm")
        stats = h.quotas.statistics().plugins["llm"]
        assert (stats.active, stats.failed) == (0, 1)


async def test_a_held_call_the_queue_refuses_on_release_fails_with_that_error(
    clock: FakeClock,
) -> None:
    """A call released from its rate wait into a full queue ends with the queue's Overloaded."""
    gates = Gates(clock)
    classes = {**CLASSES, "narrow": TaskClassConfig(priority=5, max_concurrency=1,
                                                   queue_capacity=1)}  # fmt: skip
    async with enforced(clock, scheduler=scheduler_section(classes=classes)) as h:
        h.quotas.register("paced", rate=1)
        h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
        held = h.scheduler.spawn(abs, 1, task_class="narrow", plugin="paced")
        h.scheduler.spawn(gates.hold("running"), task_class="narrow")
        h.scheduler.spawn(gates.hold("queued"), task_class="narrow")
        await clock.advance(1.0)
        with pytest.raises(Overloaded, match="queue_capacity"):
            await held.result()
        assert h.quotas.statistics().plugins["paced"].waiting == 0


async def test_a_stopping_scheduler_fails_waiting_calls(clock: FakeClock) -> None:
    """Calls held for a quota when the scheduler stops fail with ActorStopped."""
    async with enforced(clock) as h:
        h.quotas.register("paced", rate=1)
        h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
        held = h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
    with pytest.raises(ActorStopped):
        await held.result()
    assert h.quotas.statistics().plugins["paced"].waiting == 0


async def test_a_held_call_is_reported_queued_once(clock: FakeClock) -> None:
    """A call held for its token is announced once (TaskQueued), when it is admitted."""
    async with enforced(clock) as h:
        h.quotas.register("paced", rate=1)
        with h.bus.subscribe(TaskQueued) as events:
            h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
            h.scheduler.spawn(abs, 1, task_class="background", plugin="paced")
            await clock.advance(1.0)
            assert [e.plugin for e in drain(events)] == ["paced", "paced"]  # type: ignore[attr-defined]


# -- plugins -----------------------------------------------------------------------------------


async def test_an_unknown_plugin_is_refused_naming_the_registered_ones(clock: FakeClock) -> None:
    """A task for a plugin nobody registered: ValueError saying how to register it."""
    async with enforced(clock) as h:
        h.quotas.register("weather", rate=1)
        with pytest.raises(
            ValueError, match=r"plugin 'wether' is not registered \(registered: weather\)"
        ):
            h.scheduler.spawn(abs, 1, task_class="command", plugin="wether")
        assert h.scheduler.statistics().classes["command"].refused == 1


async def test_tasks_without_a_plugin_are_not_touched(clock: FakeClock) -> None:
    """Work that names no plugin runs as before and counts for no plugin."""
    async with enforced(clock) as h:
        h.quotas.register("weather", rate=0.001)
        assert [await h.scheduler.submit(abs, -i) for i in range(5)] == [0, 1, 2, 3, 4]
        assert h.quotas.statistics().plugins["weather"].calls == 0


async def test_plugins_declared_in_config_are_enforced(clock: FakeClock) -> None:
    """quotas.plugins from the config apply from the start, with their source."""
    config = quota_config({"search": PluginQuota(rate=1.0, on_rate="refuse")})
    async with enforced(clock, config) as h:
        h.scheduler.spawn(abs, 1, plugin="search")
        with pytest.raises(QuotaError):
            h.scheduler.spawn(abs, 1, plugin="search")
        assert h.quotas.statistics().plugins["search"].source == "config"
        assert h.quotas.plugins() == {"search": PluginQuota(rate=1.0, on_rate="refuse")}


async def test_unregistering_makes_later_calls_unknown(clock: FakeClock) -> None:
    """After unregister a call naming the plugin is refused; a second unregister raises."""
    async with enforced(clock) as h:
        h.quotas.register("gone", rate=1)
        h.quotas.unregister("gone")
        with pytest.raises(ValueError, match="not registered"):
            h.scheduler.spawn(abs, 1, plugin="gone")
        with pytest.raises(ValueError, match=r"plugin 'gone' is not registered"):
            h.quotas.unregister("gone")
        with pytest.raises(ValueError, match="not registered"):
            h.quotas.quota("gone")


async def test_detach_stops_enforcement(clock: FakeClock) -> None:
    """Without its hooks the enforcer neither limits nor counts (and detaching twice is fine)."""
    async with enforced(clock) as h:
        h.quotas.register("paced", rate=0.001, on_rate="refuse")
        h.quotas.detach()
        h.quotas.detach()
        assert [await h.scheduler.submit(abs, -1, plugin="paced") for _ in range(3)] == [1, 1, 1]
        assert h.quotas.statistics().plugins["paced"].calls == 0


async def test_a_reload_updates_config_plugins_and_keeps_registered_ones(clock: FakeClock) -> None:
    """A reload adds, changes and removes config plugins and keeps registered ones."""
    config = quota_config({"a": PluginQuota(rate=1.0), "b": PluginQuota(rate=1.0)})
    async with enforced(clock, config) as h:
        h.quotas.register("api", max_concurrency=1)
        new = quota_config({"a": PluginQuota(rate=5.0), "c": PluginQuota(timeout_s=1.0)},
                           log_interval_s=9.0)  # fmt: skip
        assert h.quotas.apply_config(new) == []
        assert h.quotas.plugins() == {"a": PluginQuota(rate=5.0), "api": PluginQuota(
            max_concurrency=1), "c": PluginQuota(timeout_s=1.0)}  # fmt: skip
        assert h.quotas.config.log_interval_s == 9.0
        off = quota_config(enabled=False)
        assert h.quotas.apply_config(off) == ["$.quotas.enabled"]


async def test_statistics_report_running_and_the_budget(clock: FakeClock) -> None:
    """statistics() says whether it runs, and carries the budget with its limits."""
    async with enforced(clock) as h:
        stats = h.quotas.statistics()
        assert stats.running and stats.watched_processes == 0
        assert (stats.budget.memory_limit_mb, stats.budget.cpu_limit_percent) == (2048.0, 20.0)
    assert not h.quotas.statistics().running


async def test_running_twice_is_refused(clock: FakeClock) -> None:
    """A second running() while the first one runs raises RuntimeError."""
    async with enforced(clock) as h:
        with pytest.raises(RuntimeError, match="already running"):
            async with h.quotas.running():
                pass
