"""Computing once: single flight, stale-while-revalidate, and coalesced slow reads."""

from __future__ import annotations

import anyio
import pytest

from actors.cache.coalesce import Coalescer
from actors.cache.flight import Flights
from runtime.clock import FakeClock, settle
from runtime.testing import capture_logs

from .test_cache_kit import make_cache

L1 = "[{name: l1, backend: memory, policy: lru, max_entries: 100}]"
STALE = "namespaces: {response: {ttl_s: 10, stale_s: 30, negative_ttl_s: 5}, embedding: {}}"


class Source:
    """A slow computation the test releases: counts its calls, returns v1, v2, ..."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = anyio.Event()
        self.fail_with: Exception | None = None

    async def __call__(self) -> str | None:
        self.calls += 1
        call = self.calls
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return f"v{call}"


async def test_concurrent_callers_of_one_key_compute_once(clock: FakeClock) -> None:
    """Ten callers during one computation: compute runs once, all get its value."""
    cache = make_cache(clock, L1)
    source = Source()
    results: list[object] = []

    async def caller() -> None:
        results.append(await cache.get_or_compute("k", source))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(caller)
        await settle()
        assert source.calls == 1
        source.release.set()
    assert results == ["v1"] * 10
    namespace = cache.statistics().namespaces["response"]
    assert (namespace.computes_total, namespace.coalesced_total) == (1, 9)
    assert await cache.get_or_compute("k", source) == "v1"
    assert source.calls == 1


async def test_a_failed_computation_reaches_every_waiter_and_is_not_cached(
    clock: FakeClock,
) -> None:
    """The error goes to all callers of the flight; the next call computes again."""
    cache = make_cache(clock, L1)
    source = Source()
    source.fail_with = ConnectionError("llm down")
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await cache.get_or_compute("k", source)
        except ConnectionError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(caller)
        await settle()
        source.release.set()
    assert len(errors) == 3 and source.calls == 1
    assert cache.statistics().namespaces["response"].errors == 1
    source.fail_with = None
    assert await cache.get_or_compute("k", source) == "v2"


async def test_a_sync_compute_and_a_bad_compute_argument(clock: FakeClock) -> None:
    """A plain function works; something not callable is a TypeError."""
    cache = make_cache(clock, L1)
    assert await cache.get_or_compute("k", lambda: 42) == 42
    assert await cache.get("k") == 42
    with pytest.raises(TypeError, match="compute must be a function of no arguments"):
        await cache.get_or_compute("j", 42)  # type: ignore[arg-type]


async def test_a_none_result_is_cached_as_not_found(clock: FakeClock) -> None:
    """compute() returning None is cached for negative_ttl_s: no recomputation meanwhile."""
    cache = make_cache(clock, L1, extra=STALE)
    calls = []

    def lookup() -> None:
        calls.append(clock.now())

    assert await cache.get_or_compute("atlantis", lookup) is None
    assert await cache.get_or_compute("atlantis", lookup) is None
    assert calls == [0.0]
    await clock.advance(5)
    assert await cache.get_or_compute("atlantis", lookup) is None
    assert calls == [0.0, 5.0]


async def test_a_stale_entry_is_served_while_it_is_recomputed_in_the_background(
    clock: FakeClock,
) -> None:
    """Past its TTL, within stale_s: the old value at once; one revalidation replaces it."""
    cache = make_cache(clock, L1, extra=STALE)
    source = Source()
    source.release.set()
    async with cache.running():
        assert await cache.get_or_compute("k", source) == "v1"
        await clock.advance(15)
        assert await cache.get("k") is None  # a plain read does not take stale values
        source.release = anyio.Event()
        assert await cache.get_or_compute("k", source) == "v1"
        assert await cache.get_or_compute("k", source) == "v1"
        await settle()
        assert source.calls == 2  # one revalidation for both stale reads
        source.release.set()
        await settle()
        assert await cache.get("k") == "v2"
    stats = cache.statistics()
    assert (stats.revalidations_total, stats.namespaces["response"].stale_hits_total) == (1, 2)


async def test_a_stale_entry_past_its_window_is_recomputed_in_the_foreground(
    clock: FakeClock,
) -> None:
    """After ttl + stale_s the entry is gone: the caller computes and waits."""
    cache = make_cache(clock, L1, extra=STALE)
    source = Source()
    source.release.set()
    async with cache.running():
        await cache.get_or_compute("k", source)
        await clock.advance(40)
        assert await cache.get_or_compute("k", source) == "v2"


async def test_a_failed_revalidation_keeps_the_stale_value_and_is_logged(
    clock: FakeClock,
) -> None:
    """The background error is logged; readers keep the stale value until its window ends."""
    cache = make_cache(clock, L1, extra=STALE)
    source = Source()
    source.release.set()
    async with cache.running():
        await cache.get_or_compute("k", source)
        await clock.advance(15)
        source.fail_with = TimeoutError("slow model")
        with capture_logs() as logs:
            assert await cache.get_or_compute("k", source) == "v1"
            await settle()
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "revalidation failed; the stale value stays until its window ends"
        ]
        assert await cache.get_or_compute("k", source) == "v1"


async def test_without_a_running_cache_a_stale_value_is_served_without_revalidation(
    clock: FakeClock,
) -> None:
    """No task group to recompute in: the stale value is served, nothing runs."""
    cache = make_cache(clock, L1, extra=STALE)
    source = Source()
    source.release.set()
    await cache.get_or_compute("k", source)
    await clock.advance(15)
    assert await cache.get_or_compute("k", source) == "v1"
    await settle()
    assert source.calls == 1 and cache.statistics().revalidations_total == 0


async def test_stopping_the_cache_cancels_a_revalidation_under_way(clock: FakeClock) -> None:
    """The stale value stays; the computation is cancelled, nothing is written after stop."""
    cache = make_cache(clock, L1, extra=STALE)
    source = Source()
    source.release.set()
    async with cache.running():
        await cache.get_or_compute("k", source)
        await clock.advance(15)
        source.release = anyio.Event()
        await cache.get_or_compute("k", source)
        await settle()
        assert source.calls == 2
    source.release.set()
    await settle()
    assert cache.get_nowait("k") is None  # still stale: v2 was never stored
    assert cache.statistics().in_flight == 0


async def test_a_computation_that_spans_an_invalidation_is_not_kept(clock: FakeClock) -> None:
    """The value computed from data that changed meanwhile is returned but not cached."""
    cache = make_cache(clock, L1)
    source = Source()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_compute, "k", source)
        await settle()
        await cache.invalidate("k")
        source.release.set()
    assert await cache.get("k") is None


async def test_a_cancelled_runner_leaves_the_work_to_a_waiter() -> None:
    """Cancel the first caller mid-work: the second caller runs it and gets its value."""
    flights = Flights()
    release = anyio.Event()
    runs: list[str] = []

    async def work(name: str) -> str:
        runs.append(name)
        await release.wait()
        return name

    results: list[str] = []
    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()

        async def first_caller() -> None:
            with first:
                await flights.run("k", lambda: work("first"))

        async def second_caller() -> None:
            results.append(await flights.run("k", lambda: work("second")))

        tg.start_soon(first_caller)
        await settle()
        tg.start_soon(second_caller)
        await settle()
        assert flights.joined == 1
        first.cancel()
        await settle()
        release.set()
    assert runs == ["first", "second"] and results == ["second"]


async def test_coalescer_serves_concurrent_readers_with_one_batch_and_one_read_per_key() -> None:
    """Readers started together share one fetch; readers of one key share its read."""
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        fetched.append(keys)
        await anyio.lowlevel.checkpoint()
        return {k: k.upper() for k in keys if k != "absent"}

    reads: Coalescer[str, str] = Coalescer(fetch, max_batch=3)
    results: dict[int, str | None] = {}

    async def reader(index: int, key: str) -> None:
        results[index] = await reads.get(key)

    async with anyio.create_task_group() as tg:
        for index, key in enumerate(["a", "b", "a", "c", "absent", "b"]):
            tg.start_soon(reader, index, key)
    assert fetched == [["a", "b", "c"], ["absent"]]
    assert results == {0: "A", 1: "B", 2: "A", 3: "C", 4: None, 5: "B"}
    assert (reads.batches, reads.coalesced) == (2, 2)


async def test_a_lone_reader_does_not_wait_a_turn_until_readers_come_together() -> None:
    """When nobody joined the last leader the next one fetches at once; a reader joining
    brings the turn of waiting (and one batch for a burst) back."""
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        fetched.append(keys)
        await anyio.lowlevel.checkpoint()
        return {k: k for k in keys}

    reads: Coalescer[str, str] = Coalescer(fetch)

    async def burst(*keys: str) -> None:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(reads.get, key)

    await reads.get("a")  # the first leader waits a turn: nobody joins
    await reads.get("a2")  # so this one does not
    await burst("b", "c")  # b fetches at once; c, arriving meanwhile, is the next batch
    await burst("d", "e", "f")  # c joined b: the wait is back, the burst is one batch
    assert fetched == [["a"], ["a2"], ["b"], ["c"], ["d", "e", "f"]]


async def test_coalescer_gives_a_failed_fetch_to_every_reader_of_the_batch() -> None:
    """The fetch's error is raised to each reader; the next read fetches again."""
    attempts = 0

    async def fetch(keys: list[str]) -> dict[str, str]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("disk")
        return {k: "ok" for k in keys}

    reads: Coalescer[str, str] = Coalescer(fetch)
    errors: list[BaseException] = []

    async def reader(key: str) -> None:
        try:
            await reads.get(key)
        except OSError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader, "a")
        tg.start_soon(reader, "b")
    assert len(errors) == 2
    assert await reads.get("a") == "ok"
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        Coalescer(fetch, max_batch=0)


async def test_a_cancelled_leader_leaves_and_a_follower_reads_in_its_place() -> None:
    """The leader's cancellation is felt at once; the readers it left ask again: one leads."""
    release = anyio.Event()
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        fetched.append(keys)
        await release.wait()
        return {k: k for k in keys}

    reads: Coalescer[str, str] = Coalescer(fetch)
    got: list[str | None] = []
    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await reads.get("a")

        async def follow(key: str) -> None:
            got.append(await reads.get(key))

        tg.start_soon(lead)
        tg.start_soon(follow, "b")
        tg.start_soon(follow, "a")
        await settle()
        leader.cancel()
        await settle()
        assert leader.cancelled_caught
        release.set()
    assert fetched == [["a", "b"], ["a", "b"]]
    assert set(got) == {"a", "b"} and len(got) == 2
