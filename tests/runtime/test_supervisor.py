"""Supervisors: strategies, restart types, intensity and escalation, backoff, ordering, drain."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runtime.actor import Actor
from runtime.clock import FakeClock
from runtime.exceptions import ActorStopped, SupervisorEscalation
from runtime.supervisor import ChildSpec, Supervisor

from .kit import Journal, make_context, recorder


def three_children(
    clock: FakeClock, journal: Journal, strategy: str, **kwargs: Any
) -> tuple[Supervisor, list[Any]]:
    sup = Supervisor(
        "root",
        strategy=strategy,
        context=make_context(clock, retries=0),  # type: ignore[arg-type]
        backoff_initial_s=0.0,
        **kwargs,
    )
    refs = [sup.add(ChildSpec(n, recorder(journal, n, poison={"bad"}))) for n in "abc"]
    return sup, refs


async def crash(ref: Any, clock: FakeClock) -> None:
    ref.tell_nowait("bad")
    await clock.advance(0.0)


async def test_children_start_in_order_and_stop_in_reverse(clock: FakeClock) -> None:
    """Children start in the order added and stop in the reverse order."""
    journal = Journal()
    sup, _ = three_children(clock, journal, "one_for_one")
    async with sup:
        assert journal.lines == [("start", "a"), ("start", "b"), ("start", "c")]
    assert journal.lines[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]


async def test_one_for_one_restarts_only_the_crashed_child(clock: FakeClock) -> None:
    """one_for_one: a crash of b restarts b and nobody else."""
    journal = Journal()
    sup, (a, b, c) = three_children(clock, journal, "one_for_one")
    async with sup:
        journal.lines.clear()
        await crash(b, clock)
        assert journal.lines == [("stop", "b"), ("start", "b")]
        assert (a.restarts, b.restarts, c.restarts) == (0, 1, 0)


async def test_one_for_all_restarts_every_child(clock: FakeClock) -> None:
    """one_for_all: a crash of b stops c then a, then starts a, b, c in order."""
    journal = Journal()
    sup, (a, b, c) = three_children(clock, journal, "one_for_all")
    async with sup:
        journal.lines.clear()
        await crash(b, clock)
        assert journal.lines == [
            ("stop", "b"),
            ("stop", "c"),
            ("stop", "a"),
            ("start", "a"),
            ("start", "b"),
            ("start", "c"),
        ]
        assert (a.restarts, b.restarts, c.restarts) == (1, 1, 1)


async def test_rest_for_one_restarts_the_child_and_those_after_it(clock: FakeClock) -> None:
    """rest_for_one: a crash of b restarts b and c, not a."""
    journal = Journal()
    sup, (a, b, c) = three_children(clock, journal, "rest_for_one")
    async with sup:
        journal.lines.clear()
        await crash(b, clock)
        assert journal.lines == [("stop", "b"), ("stop", "c"), ("start", "b"), ("start", "c")]
        assert (a.restarts, b.restarts, c.restarts) == (0, 1, 1)


async def test_restarted_siblings_keep_their_waiting_messages(clock: FakeClock) -> None:
    """A sibling stopped for a one_for_all restart keeps its queued messages."""
    journal = Journal()
    sup, (_, b, c) = three_children(clock, journal, "one_for_all")
    async with sup:
        c.tell_nowait("kept")
        b.tell_nowait("bad")
        await clock.advance(0.0)
        assert "c:kept" in journal.of("got")


@pytest.mark.parametrize(
    ("restart", "after_normal_exit", "after_crash"),
    [("permanent", True, True), ("transient", False, True), ("temporary", False, False)],
)
async def test_restart_types(
    clock: FakeClock, restart: str, after_normal_exit: bool, after_crash: bool
) -> None:
    """permanent always restarts, transient only after a crash, temporary never."""
    for trigger, expected in (("stop-me", after_normal_exit), ("bad", after_crash)):
        journal = Journal()
        sup = Supervisor("root", context=make_context(clock, retries=0), backoff_initial_s=0.0)
        ref = sup.add(ChildSpec("x", recorder(journal, "x", poison={"bad"}), restart=restart))  # type: ignore[arg-type]
        async with sup:
            ref.tell_nowait(trigger)
            await clock.advance(0.0)
            assert journal.instances == (2 if expected else 1), (restart, trigger)
            if expected:
                assert await ref.ask("alive") == "x:alive"
            else:
                assert sup.children == []
                with pytest.raises(ActorStopped):
                    await ref.tell("gone")


async def test_intensity_exceeded_escalates(clock: FakeClock) -> None:
    """More than `intensity` restarts within the period stops the children and escalates."""
    journal = Journal()
    sup, (a, _, _) = three_children(clock, journal, "one_for_one", intensity=2, period_s=10)
    with pytest.raises(SupervisorEscalation, match="3 restarts within 10s"):
        async with sup:
            for _ in range(3):
                await crash(a, clock)
                await clock.advance(1.0)
    # a has just crashed (its on_stop ran then); the others stop in reverse order.
    assert journal.lines[-3:] == [("stop", "a"), ("stop", "c"), ("stop", "b")]


async def test_restarts_spread_beyond_the_period_do_not_escalate(clock: FakeClock) -> None:
    """Restarts further apart than the period never add up to the intensity."""
    journal = Journal()
    sup, (a, _, _) = three_children(clock, journal, "one_for_one", intensity=1, period_s=5)
    async with sup:
        for _ in range(4):
            await crash(a, clock)
            await clock.advance(6.0)
        assert a.restarts == 4


async def test_escalation_restarts_the_nested_supervisor(clock: FakeClock) -> None:
    """A nested supervisor that escalates is restarted by its parent with all its children."""
    journal = Journal()
    context = make_context(clock, retries=0)
    root = Supervisor("root", context=context, intensity=5, backoff_initial_s=0.0)
    inner = root.add_supervisor(
        Supervisor("inner", context=context, intensity=0, backoff_initial_s=0.0)
    )
    x = inner.add(ChildSpec("x", recorder(journal, "x", poison={"bad"})))
    y = inner.add(ChildSpec("y", recorder(journal, "y")))
    async with root:
        journal.lines.clear()
        await crash(x, clock)
        assert journal.lines == [("stop", "x"), ("stop", "y"), ("start", "x"), ("start", "y")]
        assert inner.restarts == 1
        assert await y.ask("still") == "y:still"


async def test_escalation_propagates_through_nested_supervisors(clock: FakeClock) -> None:
    """When the parent's intensity is exceeded too, the escalation reaches the top."""
    journal = Journal()
    context = make_context(clock, retries=0)
    root = Supervisor("root", context=context, intensity=1, backoff_initial_s=0.0)
    inner = root.add_supervisor(
        Supervisor("inner", context=context, intensity=0, backoff_initial_s=0.0)
    )
    x = inner.add(ChildSpec("x", recorder(journal, "x", poison={"bad"})))
    with pytest.raises(SupervisorEscalation, match="'root'"):
        async with root:
            for _ in range(3):
                await crash(x, clock)


async def test_restart_backoff_waits_on_the_clock(clock: FakeClock) -> None:
    """Restarts wait an exponential backoff: 1 s, then 2 s, on the injected clock."""
    journal = Journal()
    sup = Supervisor(
        "root",
        context=make_context(clock, retries=0),
        intensity=10,
        period_s=100,
        backoff_initial_s=1.0,
        backoff_max_s=8.0,
    )
    ref = sup.add(ChildSpec("x", recorder(journal, "x", poison={"bad"})))
    async with sup:
        ref.tell_nowait("bad")
        await clock.advance(0.99)
        assert journal.instances == 1
        await clock.advance(0.02)
        assert journal.instances == 2
        ref.tell_nowait("bad")
        await clock.advance(1.99)
        assert journal.instances == 2
        await clock.advance(0.02)
        assert journal.instances == 3


async def test_shutdown_timeout_cancels_a_stuck_child(clock: FakeClock) -> None:
    """A child that does not stop within its shutdown timeout is cancelled; nothing is lost."""
    never = anyio.Event()

    class Stuck(Actor):
        async def receive(self, message: Any) -> Any:
            await never.wait()

    context = make_context(clock)
    sup = Supervisor("root", context=context)
    ref = sup.add(ChildSpec("stuck", Stuck, shutdown_timeout_s=3.0))
    stopped = anyio.Event()

    async def run() -> None:
        async with sup:
            ref.tell_nowait("hang")
            ref.tell_nowait("waiting")
        stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await clock.advance(2.9)
        assert not stopped.is_set()
        await clock.advance(0.2)
        assert stopped.is_set()
    assert context.dead_letters is not None
    reasons = {d.message: d.reason for d in context.dead_letters.entries()}
    assert reasons == {"hang": "killed", "waiting": "shutdown"}


async def test_statistics_report_the_tree(clock: FakeClock) -> None:
    """statistics() lists each actor with its restarts, and nested supervisors."""
    journal = Journal()
    sup, (_, b, _) = three_children(clock, journal, "one_for_one")
    async with sup:
        await crash(b, clock)
        stats = sup.statistics()
    assert stats.restarts == 1
    assert {a.name: a.restarts for a in stats.actors} == {"a": 0, "b": 1, "c": 0}


def test_bad_arguments_are_refused() -> None:
    """Unknown strategies, restart types, and duplicate names raise ValueError."""
    with pytest.raises(ValueError, match="strategy must be one of"):
        Supervisor("s", strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restart must be one of"):
        ChildSpec("x", Actor, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="intensity"):
        Supervisor("s", intensity=-1)
    sup = Supervisor("s")
    sup.add(ChildSpec("x", Actor))
    with pytest.raises(ValueError, match="already has a child named 'x'"):
        sup.add(ChildSpec("x", Actor))


@pytest.mark.parametrize("mode", ["poison", "transient"])
async def test_flood_with_a_crash_every_tenth_message(clock: FakeClock, mode: str) -> None:
    """10,000 messages, a crash on every tenth: each is handled exactly once or is a dead letter."""
    handled: dict[int, int] = {}
    deliveries = [0]

    class Fragile(Actor):
        async def receive(self, message: Any) -> Any:
            deliveries[0] += 1
            if mode == "poison" and message % 10 == 0:
                raise RuntimeError(f"poison {message}")
            if mode == "transient" and deliveries[0] % 10 == 0:
                raise RuntimeError("transient")
            handled[message] = handled.get(message, 0) + 1

    context = make_context(clock, retries=2, initial_s=0.001)
    sup = Supervisor(
        "root", context=context, intensity=100_000, period_s=1.0, backoff_initial_s=0.0
    )
    ref = sup.add(ChildSpec("fragile", Fragile, mailbox_capacity=64))
    n = 10_000
    async with sup, anyio.create_task_group() as tg:

        async def flood() -> None:
            for i in range(n):
                await ref.tell(i)  # backpressure: waits whenever the mailbox is full

        tg.start_soon(flood)
        while len(handled) + (context.dead_letters.total if context.dead_letters else 0) < n:
            await clock.advance(0.01)
    assert context.dead_letters is not None
    dead = [d.message for d in context.dead_letters.entries()]
    assert all(count == 1 for count in handled.values())
    assert set(handled).isdisjoint(dead)
    assert set(handled) | set(dead) == set(range(n))
    if mode == "poison":
        assert sorted(dead) == list(range(0, n, 10))
        assert ref.restarts == n // 10
    else:
        assert dead == [] and len(handled) == n
