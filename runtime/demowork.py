"""The demo's simulated assistant: what arrives, when, and how it ended.

Five streams arrive as Poisson processes (exponential gaps, rates scaled by the load factor):
wake-word verifications and voice turns (coroutines on the loop: simulated model and network
waits plus small CPU bits), home-control commands and plugin calls (blocking I/O in threads,
the plugins under quotas), and background maintenance (pure-Python CPU work in worker
processes). Voice turns look their utterance's LLM response and embeddings up in the cache.
What each request does is in ``runtime.demotasks``.

Every random draw comes from one ``random.Random`` per stream, seeded from ``--seed``: the same
seed gives the same arrivals and the same work.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from .demotasks import (
    DEVICES,
    SNIPPET_WEIGHTS,
    SNIPPETS,
    UTTERANCE_WEIGHTS,
    UTTERANCES,
    VoiceTurn,
    embed,
    home_command,
    llm,
    maintenance_job,
    plugin_call,
    spin_cpu,
    verify_wake_word,
)
from .exceptions import DeadlineExceeded, Overloaded, QuotaExceeded
from .logging import get_logger

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .app import Runtime

__all__ = [
    "PLUGINS",
    "STREAMS",
    "CacheTally",
    "Outcomes",
    "Stream",
    "Workload",
    "register_plugins",
]

log = get_logger("demo")


class Stream(NamedTuple):
    """One kind of arriving work: its name, task class and arrival rate at load 1.0."""

    name: str
    task_class: str
    rate_per_s: float
    about: str


# A busy household's day compressed: a few requests a second keep every class measured.
STREAMS = (
    Stream("wake_word", "wake_word", 2.0, "verify a wake-word candidate (on the loop)"),
    Stream("voice", "voice", 1.5, "a voice turn: STT, embeddings and LLM through the cache"),
    Stream("command", "command", 0.6, "a home-control command (blocking I/O, thread)"),
    Stream("plugin", "command", 0.8, "a plugin call under its quota (blocking I/O, thread)"),
    Stream("background", "background", 0.5, "maintenance: 100-300 ms of CPU (process)"),
)

# The demo's plugins and their quotas (rate in calls per second), registered unless the
# config already declares them; the rates are above the demo's average so only bursts wait.
PLUGINS: dict[str, dict[str, Any]] = {
    "weather": {"timeout_s": 1.0, "rate": 2.0, "burst": 2, "max_concurrency": 2},
    "calendar": {"timeout_s": 1.0, "rate": 4.0, "burst": 4, "max_concurrency": 2},
}


# -- counting outcomes ------------------------------------------------------------------------


class Outcomes:
    """How the demo's requests of one stream ended, as the assistant saw them."""

    __slots__ = ("completed", "failed", "late", "refused", "submitted")

    def __init__(self) -> None:
        self.submitted = self.completed = self.late = self.refused = self.failed = 0

    @property
    def in_flight(self) -> int:
        return self.submitted - self.completed - self.late - self.refused - self.failed


class CacheTally:
    """One namespace's lookups from the demo's side: which keys repeat, which were computed.

    A repeated request is a lookup of a key already asked for in this run; it should be a hit
    (the first request of a key is a miss unless a previous run left it in a persistent tier).
    """

    __slots__ = ("computed", "lookups", "repeat_misses", "repeats", "seen")

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.lookups = self.repeats = self.repeat_misses = self.computed = 0

    def start(self, key: str) -> bool:
        """Count a lookup of ``key``; True when it is a repeated request."""
        self.lookups += 1
        repeat = key in self.seen
        self.seen.add(key)
        self.repeats += repeat
        return repeat

    def end(self, *, repeat: bool, computed: bool) -> None:
        self.computed += computed
        self.repeat_misses += repeat and computed

    @property
    def repeat_hit_rate(self) -> float | None:
        """Hits among repeated requests; None before the first repeat."""
        if not self.repeats:
            return None
        return 1 - self.repeat_misses / self.repeats


# -- the assistant ------------------------------------------------------------------------------

Request = Callable[[], Awaitable[Any]]
_ENDING_QUOTAS = frozenset({"timeout", "memory", "cpu"})  # a call ended for these, not refused


def register_plugins(rt: Runtime) -> list[str]:
    """Give the demo's plugins their quotas, unless the config declares them; returns the
    names registered here (none when quotas are not running)."""
    if not rt.config.quotas.enabled:
        return []
    known = rt.quotas.plugins()
    added = [name for name in PLUGINS if name not in known]
    for name in added:
        rt.quotas.register(name, **PLUGINS[name])
    return added


class Workload:
    """The simulated assistant: submits each stream's work to ``rt`` as it arrives.

    ``outcomes`` counts how each stream's requests ended, ``caches`` the cache lookups per
    namespace. ``load`` multiplies every arrival rate. Raises ``ValueError`` for a ``load``
    that is not a finite number > 0.
    """

    def __init__(self, rt: Runtime, *, load: float = 1.0, seed: int = 1) -> None:
        if not (load > 0 and math.isfinite(load)):
            raise ValueError(f"load must be a finite number > 0, got {load!r}")
        self._rt = rt
        self._load = load
        self._cache = rt.cache if rt.config.cache.enabled else None
        # A string seed is hashed with SHA-512 by random: the same on every run and machine.
        self._rngs = {s.name: random.Random(f"{seed}:{s.name}") for s in STREAMS}
        self._arrivals = anyio.CancelScope()  # the arrivals: ends at the duration, or stop()
        self._work = anyio.CancelScope()  # the requests in flight: the grace, or stop(now=True)
        self._makers: dict[str, Callable[[random.Random], Request]] = {
            "wake_word": self._wake_word,
            "voice": self._voice,
            "command": self._command,
            "plugin": self._plugin,
            "background": self._background,
        }
        self.outcomes = {s.name: Outcomes() for s in STREAMS}
        self.caches = {"response": CacheTally(), "embedding": CacheTally()}

    @property
    def cache_running(self) -> bool:
        return self._cache is not None

    def stop(self, *, now: bool = False) -> None:
        """Stop the arrivals; what is in flight still finishes, unless ``now``: then it is
        cancelled (and counted as unfinished)."""
        self._arrivals.cancel()
        if now:
            self._work.cancel()

    async def run(self, duration_s: float, *, grace_s: float = 10.0) -> float:
        """Let work arrive for ``duration_s``, then wait up to ``grace_s`` for what is in
        flight; what is still unfinished then is cancelled (counted as in flight). Returns
        the seconds work arrived for (less than ``duration_s`` after ``stop()``)."""
        started = anyio.current_time()
        arrived_s = None  # stays None when stop(now=True) cancels the arrivals with the rest
        with self._work:
            async with anyio.create_task_group() as work:
                with self._arrivals:
                    self._arrivals.deadline = started + duration_s
                    async with anyio.create_task_group() as arrivals:
                        for stream in STREAMS:
                            arrivals.start_soon(self._arrive, stream, work)
                arrived_s = anyio.current_time() - started
                self._work.deadline = anyio.current_time() + grace_s
        return arrived_s if arrived_s is not None else anyio.current_time() - started

    async def _arrive(self, stream: Stream, work: TaskGroup) -> None:
        rng = self._rngs[stream.name]
        rate_per_s = stream.rate_per_s * self._load
        make = self._makers[stream.name]
        next_at = anyio.current_time()
        while True:
            next_at += rng.expovariate(rate_per_s)  # Poisson arrivals: exponential gaps
            await anyio.sleep_until(next_at)
            work.start_soon(self._one, stream, make(rng))

    async def _one(self, stream: Stream, request: Request) -> None:
        outcome = self.outcomes[stream.name]
        outcome.submitted += 1
        try:
            await request()
        except DeadlineExceeded:
            outcome.late += 1
        except Overloaded:
            outcome.refused += 1
        except QuotaExceeded as exc:  # held back (rate, concurrency), or ended (time, memory)
            if exc.quota in _ENDING_QUOTAS:
                outcome.failed += 1
            else:
                outcome.refused += 1
        except Exception as exc:  # counted and shown in the table; the demo goes on
            outcome.failed += 1
            log.warning("demo request failed", stream=stream.name, error=repr(exc))
        else:
            outcome.completed += 1

    # -- what each stream submits -------------------------------------------------------------

    def _wake_word(self, rng: random.Random) -> Request:
        model_s, cpu_ms = rng.uniform(0.005, 0.02), rng.uniform(0.5, 2.0)
        return functools.partial(self._rt.submit, verify_wake_word, model_s, cpu_ms,
                                 task_class="wake_word")  # fmt: skip

    def _voice(self, rng: random.Random) -> Request:
        turn = VoiceTurn(
            utterance=rng.choices(UTTERANCES, cum_weights=UTTERANCE_WEIGHTS)[0],
            snippets=tuple(rng.choices(SNIPPETS, cum_weights=SNIPPET_WEIGHTS, k=3)),
            stt_s=rng.uniform(0.015, 0.06),
            embed_s=rng.uniform(0.01, 0.03),
            llm_s=rng.uniform(0.06, 0.18),
            cpu_ms=rng.uniform(0.5, 2.0),
        )
        return functools.partial(self._rt.submit, self.voice_turn, turn, task_class="voice")

    def _command(self, rng: random.Random) -> Request:
        device, io_s = rng.choice(DEVICES), rng.uniform(0.02, 0.15)
        return functools.partial(self._rt.submit, home_command, device, io_s,
                                 task_class="command")  # fmt: skip

    def _plugin(self, rng: random.Random) -> Request:
        name, io_s = rng.choice(sorted(PLUGINS)), rng.uniform(0.02, 0.15)
        return functools.partial(self._rt.submit, plugin_call, name, io_s,
                                 task_class="command", plugin=name)  # fmt: skip

    def _background(self, rng: random.Random) -> Request:
        cpu_ms = rng.uniform(100, 300)
        return functools.partial(self._rt.submit, maintenance_job, cpu_ms,
                                 task_class="background")  # fmt: skip

    # -- a voice turn ---------------------------------------------------------------------------

    async def voice_turn(self, turn: VoiceTurn) -> str:
        """Speech to text, embeddings of the utterance and of what retrieval found (at once),
        then the LLM's response; embeddings and responses come from the cache when it has
        them."""
        await anyio.sleep(turn.stt_s)  # streaming speech-to-text
        spin_cpu(turn.cpu_ms)  # normalizing and tokenizing the transcript
        async with anyio.create_task_group() as lookups:
            for text in (turn.utterance, *turn.snippets):
                compute = functools.partial(embed, text, turn.embed_s)
                lookups.start_soon(self._lookup, "embedding", text, compute)
        answer = functools.partial(llm, turn.utterance, turn.llm_s)
        response: str = await self._lookup("response", turn.utterance, answer)
        return response

    async def _lookup(self, namespace: str, key: str, compute: Request) -> Any:
        """``compute()`` through the cache's single-flight read-through, counted."""
        tally = self.caches[namespace]
        repeat = tally.start(key)
        computed = False

        async def counted() -> Any:
            nonlocal computed
            computed = True
            return await compute()

        try:
            if self._cache is None:
                return await counted()
            return await self._cache.get_or_compute(key, counted, namespace=namespace)
        finally:
            tally.end(repeat=repeat, computed=computed)
