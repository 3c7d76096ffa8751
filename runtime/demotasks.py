"""What the demo's simulated assistant does: its utterances and the work of each request.

Voice turns draw utterances and memory snippets from Zipf distributions (people repeat
themselves; a few requests are most of the traffic). The models and services are simulated by
awaiting (an LLM, an embedding model, a wake-word verifier), sleeping in a thread (a plugin's
HTTP call, a device) or burning CPU in pure Python (background maintenance). The functions that
run in threads and worker processes are module-level, and this module imports only anyio and
the standard library: a worker process imports it by name to run them.
"""

from __future__ import annotations

import itertools
import random
import time
import zlib
from typing import NamedTuple

import anyio

__all__ = [
    "DEVICES",
    "SNIPPETS",
    "SNIPPET_WEIGHTS",
    "UTTERANCES",
    "UTTERANCE_WEIGHTS",
    "VoiceTurn",
    "embed",
    "home_command",
    "llm",
    "maintenance_job",
    "plugin_call",
    "spin_cpu",
    "verify_wake_word",
    "zipf_weights",
]

DEVICES = ("thermostat", "kitchen lights", "front door lock", "tv")

_UTTERANCE_PATTERNS = (
    "what's the weather {when}",
    "turn {state} the {room} lights",
    "set a timer for {minutes} minutes",
    "play {genre} in the {room}",
)
_FILLERS = {
    "when": ["today", "tomorrow", "this evening", "this weekend"],
    "state": ["on", "off"],
    "room": ["kitchen", "living room", "bedroom"],
    "minutes": ["five", "ten", "twenty"],
    "genre": ["jazz", "the news", "a podcast"],
}


def _utterances() -> list[str]:
    """Every utterance the simulated household says, most popular first (Zipf rank order)."""
    out: list[str] = []
    for pattern in _UTTERANCE_PATTERNS:
        keys = [k for k in _FILLERS if "{" + k + "}" in pattern]
        for values in itertools.product(*(_FILLERS[k] for k in keys)):
            out.append(pattern.format(**dict(zip(keys, values, strict=True))))
    random.Random(7).shuffle(out)  # interleave the patterns across the popularity ranks
    return out


UTTERANCES = _utterances()
SNIPPETS = [f"memory note {i}" for i in range(200)]  # what retrieval finds for a turn


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Cumulative Zipf weights of ranks 1..n (``random.choices(cum_weights=...)``).

    Raises ``ValueError`` for ``n`` < 1 or an ``exponent`` that is not > 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    return list(itertools.accumulate(1.0 / rank**exponent for rank in range(1, n + 1)))


UTTERANCE_WEIGHTS = zipf_weights(len(UTTERANCES), 1.2)
SNIPPET_WEIGHTS = zipf_weights(len(SNIPPETS), 1.1)


# -- the work itself -------------------------------------------------------------------------


def spin_cpu(ms: float) -> int:
    """Busy pure-Python arithmetic for ``ms`` milliseconds of wall time; returns a checksum."""
    end = time.perf_counter() + ms / 1000
    x = 1
    while time.perf_counter() < end:
        for _ in range(200):
            x = (x * 31 + 7) % 1_000_003
    return x


def maintenance_job(cpu_ms: float) -> int:
    """Background maintenance in a worker process: ``cpu_ms`` of this process's CPU time.

    Measured as CPU time, so time spent paused (the scheduler stops background workers while
    urgent work runs) does not count as work done.
    """
    end = time.process_time() + cpu_ms / 1000
    x = 1
    while time.process_time() < end:
        for _ in range(2000):
            x = (x * 31 + 7) % 1_000_003
    return x


def plugin_call(name: str, io_s: float) -> str:
    """A plugin's blocking call (an HTTP request, a file): runs in a worker thread."""
    time.sleep(io_s)
    return f"{name}: ok"


def home_command(device: str, io_s: float) -> str:
    """A home-control command: blocking I/O to a device, in a worker thread."""
    time.sleep(io_s)
    spin_cpu(0.2)
    return f"{device}: done"


def _embedding(text: str, size: int = 32) -> list[float]:
    """A deterministic stand-in for an embedding vector."""
    seed = zlib.crc32(text.encode())
    return [((seed * (i + 1)) % 1000) / 1000 for i in range(size)]


class VoiceTurn(NamedTuple):
    """One voice turn's draws: what was said, what retrieval finds, and how slow things are."""

    utterance: str
    snippets: tuple[str, ...]
    stt_s: float
    embed_s: float
    llm_s: float
    cpu_ms: float


async def verify_wake_word(model_s: float, cpu_ms: float) -> bool:
    """Second-stage wake-word check: wait for the verifier model, score the frame."""
    await anyio.sleep(model_s)
    return spin_cpu(cpu_ms) % 2 == 0


async def embed(text: str, delay_s: float) -> list[float]:
    """A simulated embedding model call (network or accelerator I/O)."""
    await anyio.sleep(delay_s)
    return _embedding(text)


async def llm(text: str, delay_s: float) -> str:
    """A simulated LLM call: the slow, expensive thing the response cache saves."""
    await anyio.sleep(delay_s)
    return f"(an answer to '{text}')"
