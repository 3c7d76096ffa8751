"""The quota enforcer's pure logic on the fake clock: the token bucket (burst, strict spacing,
waiting in debt), the concurrency limit, the escalation policy, the CPU share window, the duty
cycle, the runtime's budget and the time limits' deadlines."""

from __future__ import annotations

import math

import pytest

from actors.quota.bucket import ConcurrencyLimit, TokenBucket
from actors.quota.budget import MIB, BudgetReading, RuntimeBudget
from actors.quota.deadlines import Deadlines
from actors.quota.escalation import CpuShare, DutyCycle, Escalation
from actors.quota.plugins import Call, Plugin
from runtime.clock import FakeClock
from runtime.config import PluginQuota

# -- token bucket ------------------------------------------------------------------------------


async def test_a_full_bucket_lets_a_burst_through_then_paces_at_the_rate(clock: FakeClock) -> None:
    """burst calls go at once; the next one waits 1/rate, the one after 2/rate."""
    bucket = TokenBucket(2.0, burst=4)
    delays = [bucket.take(clock.now()) for _ in range(6)]
    assert delays == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0]


async def test_tokens_refill_at_the_rate_up_to_the_burst(clock: FakeClock) -> None:
    """After a burst the bucket refills one token per 1/rate, never above burst."""
    bucket = TokenBucket(2.0, burst=4)
    for _ in range(4):
        bucket.take(clock.now())
    assert bucket.tokens(clock.now()) == pytest.approx(0.0)
    await clock.advance(1.0)
    assert bucket.tokens(clock.now()) == pytest.approx(2.0)
    assert bucket.delay_s(clock.now()) == 0.0
    await clock.advance(60.0)
    assert bucket.tokens(clock.now()) == pytest.approx(4.0)


async def test_waiting_callers_are_spaced_in_arrival_order(clock: FakeClock) -> None:
    """Reservations in debt line up 1/rate apart; tokens go negative while they wait."""
    bucket = TokenBucket(10.0, burst=1)
    assert bucket.take(clock.now()) == 0.0
    assert [bucket.take(clock.now()) for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert bucket.tokens(clock.now()) == pytest.approx(-3.0)
    await clock.advance(0.25)
    assert bucket.delay_s(clock.now()) == pytest.approx(0.15)


async def test_delay_s_looks_without_taking(clock: FakeClock) -> None:
    """delay_s does not consume: asking twice gives the same answer."""
    bucket = TokenBucket(1.0)
    bucket.take(clock.now())
    assert bucket.delay_s(clock.now()) == bucket.delay_s(clock.now()) == 1.0


async def test_strict_spacing_allows_no_burst(clock: FakeClock) -> None:
    """With strict spacing two calls at once are 1/rate apart even on a fresh bucket."""
    bucket = TokenBucket(4.0, strict_spacing=True)
    assert bucket.take(clock.now()) == 0.0
    assert bucket.take(clock.now()) == 0.25
    await clock.advance(10.0)  # idle for long: still only one token
    assert bucket.tokens(clock.now()) == pytest.approx(1.0)
    assert [bucket.take(clock.now()) for _ in range(2)] == [0.0, 0.25]


async def test_strict_spacing_holds_calls_made_early_to_the_interval(clock: FakeClock) -> None:
    """A call made 0.1 s after the last one at 2/s waits the remaining 0.4 s."""
    bucket = TokenBucket(2.0, strict_spacing=True)
    bucket.take(clock.now())
    await clock.advance(0.1)
    assert bucket.take(clock.now()) == pytest.approx(0.4)


async def test_attempted_rate_is_over_the_rate_exactly_when_a_call_must_wait(
    clock: FakeClock,
) -> None:
    """The rate a call would make is at most the rate while tokens last, above it after."""
    bucket = TokenBucket(2.0, burst=4)
    for _ in range(3):
        bucket.take(clock.now())
    assert bucket.attempted_rate(clock.now()) == pytest.approx(2.0)
    bucket.take(clock.now())
    assert bucket.attempted_rate(clock.now()) == pytest.approx(2.5)


async def test_reconfiguring_keeps_the_tokens_held_or_owed(clock: FakeClock) -> None:
    """A new rate applies from now on to the tokens the bucket holds (or owes) at ``now``."""
    bucket = TokenBucket(1.0, burst=2)
    for _ in range(3):
        bucket.take(clock.now())  # the third one owes a token
    bucket.configure(10.0, burst=2, now=clock.now())
    assert bucket.tokens(clock.now()) == pytest.approx(-1.0)
    assert bucket.delay_s(clock.now()) == pytest.approx(0.2)
    assert "10/s burst=2" in repr(bucket)


async def test_reconfiguring_to_a_smaller_burst_caps_the_tokens(clock: FakeClock) -> None:
    """A full bucket of 10 made a bucket of 2 holds 2 tokens."""
    bucket = TokenBucket(1.0, burst=10)
    bucket.configure(1.0, burst=2, now=clock.now())
    assert bucket.tokens(clock.now()) == pytest.approx(2.0)
    assert [bucket.take(clock.now()) for _ in range(3)] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("rate", "burst", "strict", "message"),
    [
        (0, 1, False, "finite number > 0"),
        (-2.0, 1, False, "finite number > 0"),
        (math.inf, 1, False, "finite number > 0"),
        ("10/s", 1, False, "calls per second"),
        (True, 1, False, "calls per second"),
        (1.0, 0, False, "burst must be an int >= 1"),
        (1.0, 2.5, False, "burst must be an int >= 1"),
        (1.0, 3, True, "burst must be 1 with strict_spacing"),
    ],
)
def test_bad_bucket_settings_raise(rate: object, burst: object, strict: bool, message: str) -> None:
    """Each bad rate or burst is a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=message):
        TokenBucket(rate, burst, strict_spacing=strict)  # type: ignore[arg-type]


# -- concurrency limit -------------------------------------------------------------------------


def test_concurrency_limit_admits_up_to_its_limit_then_hands_freed_places_in_order() -> None:
    """Holders up to the limit; released places go to waiters first come, first served."""
    limit: ConcurrencyLimit[str] = ConcurrencyLimit(2)
    assert limit.try_acquire() and limit.try_acquire()
    assert limit.full and not limit.try_acquire()
    limit.wait("a")
    limit.wait("b")
    assert limit.release() == ["a"]
    assert limit.active == 2 and limit.waiting == 1


def test_a_waiter_keeps_its_place_against_newcomers() -> None:
    """While someone waits, try_acquire refuses even when a place is free."""
    limit: ConcurrencyLimit[str] = ConcurrencyLimit(1)
    limit.try_acquire()
    limit.wait("first")
    limit.active = 0  # a place is free, but "first" has not been handed it yet
    assert not limit.try_acquire()
    assert limit.admit_waiting() == ["first"]


def test_a_discarded_waiter_is_skipped_and_discarding_twice_is_false() -> None:
    """discard removes a waiter; a second discard says it was not there."""
    limit: ConcurrencyLimit[str] = ConcurrencyLimit(1)
    limit.try_acquire()
    limit.wait("gone")
    limit.wait("next")
    assert limit.discard("gone") and not limit.discard("gone")
    assert limit.release() == ["next"]


def test_raising_the_limit_lets_waiters_in() -> None:
    """configure with a higher limit, then admit_waiting, admits as many as now fit."""
    limit: ConcurrencyLimit[int] = ConcurrencyLimit(1)
    limit.try_acquire()
    for i in range(3):
        limit.wait(i)
    limit.configure(3)
    assert limit.admit_waiting() == [0, 1]


def test_no_limit_never_fills() -> None:
    """A limit of None counts holders but never makes anyone wait."""
    limit: ConcurrencyLimit[int] = ConcurrencyLimit(None)
    assert all(limit.try_acquire() for _ in range(1000))
    assert limit.active == 1000 and not limit.full


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_concurrency_limit_raises(bad: object) -> None:
    """A limit that is not an int >= 1 (or None) is a ValueError."""
    with pytest.raises(ValueError, match="limit must be an int >= 1 or None"):
        ConcurrencyLimit(bad)  # type: ignore[arg-type]


# -- escalation --------------------------------------------------------------------------------


async def test_escalation_warns_then_throttles_then_terminates(clock: FakeClock) -> None:
    """Near the limit: warn; over it: throttle; still over terminate_after_s later: terminate."""
    policy = Escalation(warn_ratio=0.8, throttles=True, terminate_after_s=5.0)
    assert policy.observe(50, 100, clock.now()) == []
    assert policy.observe(85, 100, clock.now()) == ["warn"]
    await clock.advance(1.0)
    assert policy.observe(120, 100, clock.now()) == ["throttle"]
    await clock.advance(4.9)
    assert policy.observe(120, 100, clock.now()) == []
    await clock.advance(0.1)
    assert policy.observe(120, 100, clock.now()) == ["terminate"]
    assert policy.level == "terminated"
    assert policy.observe(500, 100, clock.now()) == []


async def test_a_jump_over_the_limit_warns_and_throttles_at_once(clock: FakeClock) -> None:
    """From ok straight over the limit: both steps in one observation, in order."""
    policy = Escalation(warn_ratio=0.8, throttles=True, terminate_after_s=5.0)
    assert policy.observe(300, 100, clock.now()) == ["warn", "throttle"]


async def test_a_break_under_the_limit_restarts_the_terminate_countdown(clock: FakeClock) -> None:
    """Termination needs terminate_after_s over the limit without a break."""
    policy = Escalation(warn_ratio=0.8, throttles=True, terminate_after_s=2.0)
    policy.observe(150, 100, clock.now())
    await clock.advance(1.5)
    assert policy.observe(90, 100, clock.now()) == []  # throttled: no recovery, countdown reset
    await clock.advance(1.0)
    assert policy.observe(150, 100, clock.now()) == []
    await clock.advance(1.9)
    assert policy.observe(150, 100, clock.now()) == []
    await clock.advance(0.1)
    assert policy.observe(150, 100, clock.now()) == ["terminate"]


async def test_a_quota_that_does_not_throttle_terminates_when_over(clock: FakeClock) -> None:
    """Memory: warn near the limit, terminate as soon as it is over (terminate_after_s 0)."""
    policy = Escalation(warn_ratio=0.9, throttles=False, terminate_after_s=0.0)
    assert policy.observe(95, 100, clock.now()) == ["warn"]
    assert policy.observe(101, 100, clock.now()) == ["terminate"]


async def test_a_warned_quota_recovers_and_can_warn_again(clock: FakeClock) -> None:
    """Back under warn_ratio after a warning: recover; the next approach warns again."""
    policy = Escalation(warn_ratio=0.8, throttles=False, terminate_after_s=1.0)
    assert policy.observe(85, 100, clock.now()) == ["warn"]
    assert policy.observe(85, 100, clock.now()) == []
    assert policy.observe(10, 100, clock.now()) == ["recover"]
    assert policy.observe(85, 100, clock.now()) == ["warn"]


async def test_a_throttled_quota_recovers_only_under_its_release_ratio(clock: FakeClock) -> None:
    """With release_ratio, a throttled quota measured well under its limit is let go."""
    policy = Escalation(warn_ratio=0.8, throttles=True, terminate_after_s=9.0, release_ratio=0.5)
    policy.observe(150, 100, clock.now())
    assert policy.observe(70, 100, clock.now()) == []  # throttled, not low enough
    assert policy.observe(40, 100, clock.now()) == ["recover"]
    assert policy.level == "ok"
    assert policy.observe(150, 100, clock.now()) == ["warn", "throttle"]


def test_a_bad_release_ratio_raises() -> None:
    """A release ratio outside (0, 1] is a ValueError naming it."""
    with pytest.raises(ValueError, match="release_ratio"):
        Escalation(warn_ratio=0.8, throttles=True, terminate_after_s=1.0, release_ratio=0.0)


@pytest.mark.parametrize(
    ("ratio", "after_s", "message"),
    [(0.0, 1.0, "warn_ratio"), (1.5, 1.0, "warn_ratio"), (0.8, -1.0, "terminate_after_s")],
)
def test_bad_escalation_settings_raise(ratio: float, after_s: float, message: str) -> None:
    """A warn ratio outside (0, 1] or a negative time is a ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        Escalation(warn_ratio=ratio, throttles=True, terminate_after_s=after_s)


# -- CPU share and duty cycle ------------------------------------------------------------------


async def test_cpu_share_needs_half_a_window_then_averages_over_it(clock: FakeClock) -> None:
    """A process using one core of four is at 25%; before half a window there is no answer."""
    share = CpuShare(window_s=1.0, cpus=4)
    assert share.add(clock.now(), 10.0) is None
    await clock.advance(0.4)
    assert share.add(clock.now(), 10.4) is None
    await clock.advance(0.2)
    assert share.add(clock.now(), 10.6) == pytest.approx(25.0)


async def test_cpu_share_forgets_what_left_the_window(clock: FakeClock) -> None:
    """A burst older than the window no longer counts."""
    share = CpuShare(window_s=1.0, cpus=1)
    share.add(clock.now(), 0.0)
    await clock.advance(1.0)
    share.add(clock.now(), 1.0)  # a full core for a second
    for _ in range(4):
        await clock.advance(0.5)
        last = share.add(clock.now(), 1.0)  # idle since
    assert last == pytest.approx(0.0)


async def test_cpu_share_reset_starts_over(clock: FakeClock) -> None:
    """After reset the share is unknown until half a window is measured again."""
    share = CpuShare(window_s=1.0, cpus=1)
    share.add(clock.now(), 0.0)
    await clock.advance(1.0)
    assert share.add(clock.now(), 1.0) == pytest.approx(100.0)
    share.reset()
    assert share.add(clock.now(), 1.0) is None


def test_bad_cpu_share_settings_raise() -> None:
    """A window that is not > 0 or fewer than one CPU is a ValueError."""
    with pytest.raises(ValueError, match="window_s"):
        CpuShare(0.0, 1)
    with pytest.raises(ValueError, match="cpus"):
        CpuShare(1.0, 0)


def test_duty_cycle_runs_a_margin_under_the_limit_and_shrinks_when_still_over() -> None:
    """10% of a 2-CPU machine is a fifth of one core; at 0.8 margin it runs 16% of a period."""
    duty = DutyCycle(10.0, cpus=2)
    assert duty.split(0.1) == pytest.approx((0.016, 0.084))
    assert duty.split(0.1, calls=2) == pytest.approx((0.008, 0.092))
    assert duty.adapt(9.0, 10.0) == pytest.approx(0.16)
    assert duty.adapt(14.0, 10.0) == pytest.approx(0.112)


def test_duty_cycle_never_exceeds_a_period_nor_falls_below_its_floor() -> None:
    """A limit above one core runs (a margin under) the whole period; shrinking stops at floor."""
    assert DutyCycle(100.0, cpus=4).fraction == pytest.approx(0.8)
    duty = DutyCycle(1.0, cpus=1)
    for _ in range(20):
        duty.adapt(50.0, 1.0)
    assert duty.fraction == pytest.approx(0.02)


def test_bad_duty_cycle_settings_raise() -> None:
    """A limit that is not > 0 or fewer than one CPU is a ValueError."""
    with pytest.raises(ValueError, match="limit_percent"):
        DutyCycle(0.0, 1)
    with pytest.raises(ValueError, match="cpus"):
        DutyCycle(10.0, 0)


# -- the runtime's budget ----------------------------------------------------------------------


def budget(**overrides: float) -> RuntimeBudget:
    settings: dict[str, float] = {"memory_mb": 1000.0, "cpu_percent": 20.0, "cpu_window_s": 10.0,
                                  "recover_ratio": 0.8, "cooldown_s": 30.0}  # fmt: skip
    settings.update(overrides)
    return RuntimeBudget(**settings, cpus=2)


async def test_memory_near_the_budget_calls_for_recovery_before_a_breach(clock: FakeClock) -> None:
    """At recover_ratio of the limit: recover (not breached); over it: breached."""
    runtime = budget()
    assert runtime.observe(clock.now(), BudgetReading(700 * MIB, 0.0)) == []
    (pressure,) = runtime.observe(clock.now(), BudgetReading(850 * MIB, 0.0))
    assert (pressure.resource, pressure.recover, pressure.breached) == ("memory", True, False)
    await clock.advance(1.0)
    (pressure,) = runtime.observe(clock.now(), BudgetReading(1100 * MIB, 0.0))
    assert pressure.breached and not pressure.recover  # recovery is cooling down
    assert runtime.breached("memory") and runtime.breaches["memory"] == 1


async def test_recovery_repeats_only_after_the_cooldown(clock: FakeClock) -> None:
    """Still near the limit: recovery again once cooldown_s has passed, not before."""
    runtime = budget(cooldown_s=30.0)
    high = BudgetReading(900 * MIB, 0.0)
    assert runtime.observe(clock.now(), high)[0].recover
    await clock.advance(29.0)
    assert runtime.observe(clock.now(), high) == []
    await clock.advance(1.0)
    assert runtime.observe(clock.now(), high)[0].recover


async def test_a_breach_is_reported_once_and_its_end_too(clock: FakeClock) -> None:
    """breached on the way over, restored on the way back, nothing in between."""
    runtime = budget(recover_ratio=1.0)
    assert runtime.observe(clock.now(), BudgetReading(1200 * MIB, 0.0))[0].breached
    await clock.advance(1.0)
    assert not any(p.breached for p in runtime.observe(clock.now(), BudgetReading(1300 * MIB, 0)))
    await clock.advance(1.0)
    (pressure,) = runtime.observe(clock.now(), BudgetReading(500 * MIB, 0.0))
    assert pressure.restored and not runtime.breached("memory")


async def test_average_cpu_over_the_window_drives_cpu_pressure(clock: FakeClock) -> None:
    """Half a core of two CPUs is 25% of the machine: over a 20% budget."""
    runtime = budget()
    runtime.observe(clock.now(), BudgetReading(0, 100.0))
    await clock.advance(4.0)
    assert runtime.observe(clock.now(), BudgetReading(0, 102.0)) == []  # window not half full
    assert runtime.cpu_percent is None
    await clock.advance(2.0)
    (pressure,) = runtime.observe(clock.now(), BudgetReading(0, 103.0))
    assert pressure.resource == "cpu" and pressure.breached and pressure.recover
    assert runtime.cpu_percent == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"memory_mb": 0.0}, "memory_mb must be > 0"),
        ({"cpu_percent": -1.0}, "cpu_percent must be > 0"),
        ({"cpu_window_s": 0.0}, "cpu_window_s must be > 0"),
        ({"recover_ratio": 1.5}, "recover_ratio must be in"),
        ({"cooldown_s": -1.0}, "cooldown_s must be >= 0"),
    ],
)
def test_bad_budget_settings_raise(overrides: dict[str, float], message: str) -> None:
    """Each bad budget setting is a ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        budget(**overrides)


def test_a_budget_needs_a_cpu() -> None:
    """Fewer than one CPU is a ValueError."""
    with pytest.raises(ValueError, match="cpus"):
        RuntimeBudget(memory_mb=1.0, cpu_percent=1.0, cpu_window_s=1.0, recover_ratio=0.5,
                      cooldown_s=0.0, cpus=0)  # fmt: skip


async def test_the_latest_reservation_can_give_its_token_back(clock: FakeClock) -> None:
    """A waiting caller that gives up returns its token when nobody reserved after it."""
    bucket = TokenBucket(1.0)
    bucket.take(clock.now())
    bucket.take(clock.now())
    mark = bucket.mark
    assert bucket.give_back(mark)
    assert bucket.delay_s(clock.now()) == 1.0
    assert not bucket.give_back(mark)  # already returned


async def test_an_earlier_reservation_cannot_give_its_token_back(clock: FakeClock) -> None:
    """Returning a token reserved before another would let the later caller go too early."""
    bucket = TokenBucket(1.0)
    bucket.take(clock.now())
    bucket.take(clock.now())
    earlier = bucket.mark
    bucket.take(clock.now())
    assert not bucket.give_back(earlier)
    assert bucket.delay_s(clock.now()) == 3.0


# -- deadlines ---------------------------------------------------------------------------------


class StubTask:
    def __init__(self, task_id: int) -> None:
        self.id = task_id


def a_call(task_id: int) -> Call:
    plugin = Plugin("p", PluginQuota(timeout_s=1.0), source="api", cpus=1)
    return Call(plugin, StubTask(task_id))


async def test_deadlines_expire_active_calls_at_their_limit_and_skip_ended_ones(
    clock: FakeClock,
) -> None:
    """At its time an active call expires; one that ended meanwhile is skipped."""
    expired: list[tuple[int, float]] = []
    deadlines = Deadlines(clock, lambda call: expired.append((call.task.id, clock.now())))
    first, ended, last = a_call(1), a_call(2), a_call(3)
    deadlines.add(1.0, first)
    deadlines.add(1.5, ended)
    deadlines.add(2.0, last)
    ended.phase = "done"
    await clock.advance(3.0)
    assert expired == [(1, 1.0), (3, 2.0)]
    assert len(deadlines) == 0 and clock.pending_timers == 0


async def test_one_timer_serves_all_deadlines_and_a_nearer_one_rearms_it(clock: FakeClock) -> None:
    """Later limits add no timer; a nearer one replaces the armed timer."""
    expired: list[int] = []
    deadlines = Deadlines(clock, lambda call: expired.append(call.task.id))
    deadlines.add(5.0, a_call(1))
    deadlines.add(6.0, a_call(2))
    assert clock.pending_timers == 1 and clock.next_deadline() == 5.0
    deadlines.add(2.0, a_call(3))
    assert clock.pending_timers == 1 and clock.next_deadline() == 2.0
    await clock.advance(5.0)
    assert expired == [3, 1]


async def test_ended_calls_are_swept_so_the_heap_stays_bounded(clock: FakeClock) -> None:
    """Thousands of calls that end before their limit leave at most a bounded heap."""
    deadlines = Deadlines(clock, lambda call: None)
    for task_id in range(10_000):
        call = a_call(task_id)
        deadlines.add(60.0, call)
        call.phase = "done"
    assert len(deadlines) < 32
    deadlines.close()
    assert len(deadlines) == 0 and clock.pending_timers == 0


async def test_try_take_takes_only_a_token_that_is_there(clock: FakeClock) -> None:
    """try_take takes a present token (0.0) and otherwise takes nothing, saying how long."""
    bucket = TokenBucket(2.0, burst=1)
    assert bucket.try_take(clock.now()) == 0.0
    assert bucket.try_take(clock.now()) == 0.5
    assert bucket.try_take(clock.now()) == 0.5  # nothing was taken by the refusal
    await clock.advance(0.5)
    assert bucket.try_take(clock.now()) == 0.0
