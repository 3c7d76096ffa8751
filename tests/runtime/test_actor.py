"""Actors: tell, ask, retries of a failing handler, lifecycle hooks and mailbox policies."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

from runtime.actor import Actor, ActorRef
from runtime.clock import FakeClock, settle
from runtime.exceptions import ActorStopped, ChannelFull, DeadlineExceeded
from runtime.supervisor import ChildSpec, Supervisor

from .kit import Journal, make_context, recorder


def supervisor(clock: FakeClock, **kwargs: Any) -> Supervisor:
    return Supervisor("root", context=make_context(clock), backoff_initial_s=0.0, **kwargs)


async def test_tell_is_handled_in_order(clock: FakeClock) -> None:
    """Messages told to an actor are handled once each, in the order sent."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a")))
    async with sup:
        for i in range(5):
            await ref.tell(i)
        await settle()
        assert journal.of("got") == [f"a:{i}" for i in range(5)]
        assert ref.statistics().handled == 5


async def test_ask_returns_the_handlers_value(clock: FakeClock) -> None:
    """ask returns what the handler returned."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a")))
    async with sup:
        assert await ref.ask("ping") == "a:ping"


async def test_ask_times_out_on_the_injected_clock(clock: FakeClock) -> None:
    """An ask whose handler never answers raises DeadlineExceeded once the clock passes it."""
    never = anyio.Event()

    class Stuck(Actor):
        async def receive(self, message: Any) -> Any:
            await never.wait()

    sup = supervisor(clock)
    ref = sup.add(ChildSpec("stuck", Stuck, shutdown_timeout_s=0))
    async with sup:
        outcome: list[BaseException] = []

        async def asker() -> None:
            try:
                await ref.ask("x", timeout_s=2.0)
            except DeadlineExceeded as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(asker)
            await clock.advance(1.9)
            assert outcome == []
            await clock.advance(0.2)
        assert len(outcome) == 1 and "timed out after 2.0s" in str(outcome[0])


async def test_failing_handler_is_retried_then_succeeds(clock: FakeClock) -> None:
    """A handler that fails twice is retried with backoff on the clock and then succeeds."""
    attempts: list[float] = []

    class Flaky(Actor):
        async def receive(self, message: Any) -> Any:
            attempts.append(self.clock.now())
            if len(attempts) < 3:
                raise OSError("flaky")
            return "ok"

    sup = supervisor(clock)
    ref = sup.add(ChildSpec("flaky", Flaky))
    async with sup:
        async with anyio.create_task_group() as tg:
            result: list[Any] = []

            async def ask() -> None:
                result.append(await ref.ask("x", timeout_s=None))

            tg.start_soon(ask)
            await clock.advance(1.0)
        assert result == ["ok"]
        assert len(attempts) == 3
        assert all(0 <= b - a <= 0.5 for a, b in itertools.pairwise(attempts))
        assert ref.statistics().restarts == 0


async def test_poison_message_goes_to_dead_letters_and_asker_gets_the_error(
    clock: FakeClock,
) -> None:
    """After the last retry: a dead letter, the error to the asker, a restart."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a", poison={"bad"})))
    async with sup:
        errors: list[BaseException] = []

        async def ask() -> None:
            try:
                await ref.ask("bad", timeout_s=None)
            except ValueError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await clock.advance(5.0)
        assert [str(e) for e in errors] == ["poison 'bad'"]
        dead = sup.context.dead_letters
        assert dead is not None and [d.message for d in dead.entries()] == ["bad"]
        assert dead.entries()[0].reason == "handler_failed"
        assert ref.statistics().restarts == 1
        assert await ref.ask("next") == "a:next"


async def test_mailbox_outlives_a_crashed_instance(clock: FakeClock) -> None:
    """Messages waiting behind a poison message are handled by the restarted instance."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a", poison={"bad"})))
    async with sup:
        for message in ["one", "bad", "two", "three"]:
            ref.tell_nowait(message)
        await clock.advance(5.0)
        assert journal.of("got") == ["a:one", "a:two", "a:three"]
        assert journal.instances == 2


async def test_lifecycle_hooks_run_per_instance(clock: FakeClock) -> None:
    """on_start and on_stop run once per instance, on a crash as on a stop."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a", poison={"bad"})))
    async with sup:
        ref.tell_nowait("bad")
        await clock.advance(5.0)
    assert [line[0] for line in journal.lines] == ["start", "stop", "start", "stop"]


async def test_drain_on_stop_handles_every_waiting_message(clock: FakeClock) -> None:
    """A graceful stop handles what waits in the mailbox before on_stop."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a")))
    async with sup:
        for i in range(50):
            ref.tell_nowait(i)
    assert journal.of("got") == [f"a:{i}" for i in range(50)]
    assert journal.lines[-1] == ("stop", "a")


async def test_tell_after_stop_raises_actor_stopped(clock: FakeClock) -> None:
    """A stopped actor refuses tell and ask with ActorStopped."""
    journal = Journal()
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("a", recorder(journal, "a")))
    async with sup:
        pass
    with pytest.raises(ActorStopped, match="'a' is stopped"):
        await ref.tell("late")
    with pytest.raises(ActorStopped):
        await ref.ask("late")


async def test_reject_mailbox_raises_channel_full(clock: FakeClock) -> None:
    """A full mailbox with the reject policy raises ChannelFull at once."""
    journal = Journal()
    ref = ActorRef("r", recorder(journal, "r"), capacity=2, policy="reject")
    ref.tell_nowait(1)
    ref.tell_nowait(2)
    with pytest.raises(ChannelFull, match="capacity 2"):
        await ref.tell(3)


async def test_drop_oldest_mailbox_sends_the_dropped_to_dead_letters(clock: FakeClock) -> None:
    """Messages a drop_oldest mailbox discards are dead letters, and a dropped ask fails fast."""
    context = make_context(clock)
    ref = ActorRef("d", recorder(Journal(), "d"), context=context, capacity=1, policy="drop_oldest")
    errors: list[BaseException] = []

    async def ask() -> None:
        try:
            await ref.ask("first", timeout_s=None)
        except ChannelFull as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await settle()
        ref.tell_nowait("second")
    assert len(errors) == 1
    assert context.dead_letters is not None
    assert [(d.message, d.reason) for d in context.dead_letters.entries()] == [
        ("first", "mailbox_full")
    ]


async def test_actor_without_receive_crashes_with_a_clear_error(clock: FakeClock) -> None:
    """An Actor subclass that forgets receive() fails the ask with NotImplementedError."""
    sup = supervisor(clock)
    ref = sup.add(ChildSpec("bare", Actor))
    async with sup:
        async with anyio.create_task_group() as tg:
            errors: list[BaseException] = []

            async def ask() -> None:
                try:
                    await ref.ask("x", timeout_s=None)
                except NotImplementedError as exc:
                    errors.append(exc)

            tg.start_soon(ask)
            await clock.advance(5.0)
        assert "must implement receive()" in str(errors[0])
