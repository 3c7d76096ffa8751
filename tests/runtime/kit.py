"""Small actors and helpers shared by the kernel tests."""

from __future__ import annotations

from typing import Any

from runtime.actor import Actor, ActorContext
from runtime.clock import FakeClock
from runtime.deadletters import DeadLetters
from runtime.retry import RetryPolicy


def make_context(clock: FakeClock, *, retries: int = 3, initial_s: float = 0.05) -> ActorContext:
    """A context on the fake clock with dead letters and a fixed-seed retry policy."""
    import random

    return ActorContext(
        clock=clock,
        dead_letters=DeadLetters(100_000, clock=clock),
        retry=RetryPolicy(initial_s=initial_s, max_s=max(initial_s, 0.5), retries=retries),
        rng=random.Random(7),
    )


class Journal:
    """What happened, in order, across actor instances."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, ...]] = []
        self.instances = 0

    def add(self, *line: str) -> None:
        self.lines.append(line)

    def of(self, kind: str) -> list[str]:
        return [line[1] for line in self.lines if line[0] == kind]


def recorder(journal: Journal, name: str, *, poison: set[Any] | None = None) -> type[Actor]:
    """An actor class that journals its lifecycle and messages; a message in ``poison`` raises."""
    bad = poison or set()

    class Recorder(Actor):
        async def on_start(self) -> None:
            journal.instances += 1
            journal.add("start", name)

        async def on_stop(self) -> None:
            journal.add("stop", name)

        async def receive(self, message: Any) -> Any:
            if message in bad:
                raise ValueError(f"poison {message!r}")
            if message == "stop-me":
                self.stop()
                return None
            journal.add("got", f"{name}:{message}")
            return f"{name}:{message}"

    return Recorder
