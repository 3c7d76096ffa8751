"""The SQLite tier: write-behind batches, group commits, coalesced reads, lifetimes on disk,
a bounded tier's policy, and files that are corrupt or cannot be opened."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from actors.cache import Cache
from actors.cache.entry import Record
from actors.cache.sqlite import SqliteTier
from runtime.clock import FakeClock, settle
from runtime.events import CacheExpired
from runtime.testing import capture_logs

from .test_cache_kit import drain, make_cache, subscribe, tier_stats

BEHIND = "write_behind: {interval_ms: 500, batch: 4, max_pending: 8}"


def sqlite_cache(
    clock: FakeClock, path: Path, *, write: str = "behind", limits: str = "", extra: str = ""
) -> Cache:
    tiers = f"[{{name: l3, backend: sqlite, path: '{path}', write: {write}{limits}}}]"
    return make_cache(clock, tiers, extra=BEHIND + ("\n" + extra if extra else ""))


def l3(cache: Cache) -> SqliteTier:
    tier = cache.tiers[-1]
    assert isinstance(tier, SqliteTier)
    return tier


async def rows(path: Path) -> list[tuple[Any, ...]]:
    """The committed rows (id, accessed_at), read by another connection, in a thread."""

    def read() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT id, accessed_at FROM entries ORDER BY id").fetchall()

    return await anyio.to_thread.run_sync(read)


async def ids(path: Path) -> list[str]:
    return [row[0] for row in await rows(path)]


async def test_write_behind_commits_a_full_batch_at_once(clock: FakeClock, tmp_path: Path) -> None:
    """Three writes wait; the fourth fills the batch and the actor commits all four."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        for index in range(3):
            await cache.set(f"k{index}", index)
        await settle()
        assert l3(cache).pending_writes == 3 and await ids(path) == []
        await cache.set("k3", 3)
        await settle()
        assert l3(cache).pending_writes == 0  # the actor took the batch
        await cache.flush()  # waits for the actor's commit to end
        assert await ids(path) == ["response:k0", "response:k1", "response:k2", "response:k3"]
        assert tier_stats(cache, "l3").flushes_total == 1


async def test_write_behind_commits_what_waits_at_each_interval(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A lone write is committed when the interval comes, not before."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        await cache.set("k", 1)
        await clock.advance(0.4)
        assert l3(cache).pending_writes == 1
        await clock.advance(0.1)
        assert l3(cache).pending_writes == 0
        await cache.flush()
        assert await ids(path) == ["response:k"]


async def test_writes_waiting_at_stop_are_committed(clock: FakeClock, tmp_path: Path) -> None:
    """Stopping the cache commits the buffered writes before closing the file."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        await cache.set("a", 1)
        await cache.set("b", 2)
        assert l3(cache).pending_writes == 2
    assert await ids(path) == ["response:a", "response:b"]


async def test_past_max_pending_a_writer_commits_itself(clock: FakeClock, tmp_path: Path) -> None:
    """Backpressure: with no actor to flush, the write that reaches max_pending commits."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    await l3(cache).open()
    for index in range(7):
        await cache.set(f"k{index}", index)
    assert l3(cache).pending_writes == 7
    await cache.set("k7", 7)
    assert l3(cache).pending_writes == 0 and len(await ids(path)) == 8
    await l3(cache).close()


async def test_write_through_commits_before_set_returns(clock: FakeClock, tmp_path: Path) -> None:
    """Each set is on disk when it returns; concurrent sets share commits."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path, write="through")
    async with cache.running():
        await cache.set("a", 1)
        assert await ids(path) == ["response:a"]
        async with anyio.create_task_group() as tg:
            for index in range(10):
                tg.start_soon(cache.set, f"k{index}", index)
        assert len(await ids(path)) == 11
        assert tier_stats(cache, "l3").flushes_total < 11


async def test_a_buffered_write_is_read_before_it_is_committed(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Reads see the buffer: a value is there the moment it is set, a delete too."""
    cache = sqlite_cache(clock, tmp_path / "c.db")
    async with cache.running():
        await cache.set("k", "v")
        assert await cache.get("k") == "v"
        await cache.flush()
        await cache.invalidate("k")
        assert l3(cache).pending_writes == 1
        assert await cache.get("k") is None


async def test_concurrent_readers_share_one_query(clock: FakeClock, tmp_path: Path) -> None:
    """64 readers of 16 keys: one batch, each key read once."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        for index in range(16):
            await cache.set(f"k{index}", index)
        await cache.flush()
        results: dict[int, Any] = {}

        async def reader(index: int) -> None:
            results[index] = await cache.get(f"k{index % 16}")

        async with anyio.create_task_group() as tg:
            for index in range(64):
                tg.start_soon(reader, index)
        assert results == {index: index % 16 for index in range(64)}
        stats = tier_stats(cache, "l3")
        assert (stats.read_batches_total, stats.coalesced_reads_total, stats.hits) == (1, 48, 64)


async def test_entries_survive_a_restart_and_are_promoted(clock: FakeClock, tmp_path: Path) -> None:
    """A new cache on the same file reads what the old one wrote, into its memory tier."""
    path = tmp_path / "c.db"
    tiers = (
        "[{name: l1, backend: memory, max_entries: 10},"
        f" {{name: l3, backend: sqlite, path: '{path}', write: behind}}]"
    )
    async with make_cache(clock, tiers).running() as first:
        await first.set("k", {"a": 1}, ttl=100)
    async with make_cache(clock, tiers).running() as second:
        assert await second.get("k") == {"a": 1}
        assert tier_stats(second, "l1").promotions == 1
        assert second.get_nowait("k") == {"a": 1}


async def test_an_expired_row_is_a_miss_and_the_sweep_deletes_the_rest(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Lifetimes are wall-clock deadlines in the file; the actor sweeps every interval."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path, extra="sweep_interval_s: 30")
    async with cache.running():
        await cache.set("short", 1, ttl=10)
        await cache.set("short2", 2, ttl=10)
        await cache.set("long", 3, ttl=100)
        await cache.flush()
        await clock.advance(10)
        with subscribe(cache, CacheExpired) as sub:
            assert await cache.get("short") is None
            await clock.advance(20)  # the sweep
            await cache.flush()  # waits for the sweep's transaction
            expired = sorted(e.key for e in drain(sub))
        assert expired == ["short", "short2"]
        assert await ids(path) == ["response:long"]
        stats = tier_stats(cache, "l3")
        assert (stats.expired, stats.entries) == ({"ttl": 2}, 1)


async def test_reads_renew_the_time_to_idle_on_disk(clock: FakeClock, tmp_path: Path) -> None:
    """A read stamps accessed_at (written with the next batch); an idle row expires."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path, limits=", tti_s: 10")
    async with cache.running():
        await cache.set("read", 1)
        await cache.set("idle", 2)
        await clock.advance(6)
        assert await cache.get("read") == 1
        await cache.flush()
        stamps = dict(await rows(path))
        assert stamps["response:read"] == clock.wall() and stamps["response:idle"] < clock.wall()
        await clock.advance(6)
        assert await cache.get("idle") is None
        assert await cache.get("read") == 1
        assert tier_stats(cache, "l3").expired == {"tti": 1}


async def test_a_bounded_sqlite_tier_evicts_by_policy_and_rebuilds_it_at_open(
    clock: FakeClock, tmp_path: Path
) -> None:
    """max_entries 3 under LRU: the least recently read rows are deleted, also after a restart."""
    path = tmp_path / "c.db"
    limits = ", policy: lru, max_entries: 3"
    async with sqlite_cache(clock, path, limits=limits).running() as cache:
        for key in "abc":
            await cache.set(key, key)
            await clock.advance(1)
        await cache.get("a")
        await cache.set("d", "d")
        assert tier_stats(cache, "l3").evictions == {"entries": 1}
    assert await ids(path) == ["response:a", "response:c", "response:d"]
    async with sqlite_cache(clock, path, limits=limits).running() as cache:
        assert tier_stats(cache, "l3").entries == 3
        await cache.set("e", "e")
    assert await ids(path) == ["response:a", "response:d", "response:e"]


async def test_a_corrupt_file_is_moved_aside_and_replaced(clock: FakeClock, tmp_path: Path) -> None:
    """Garbage in the file: renamed with a timestamp, logged, and a fresh database works."""
    path = tmp_path / "c.db"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    with capture_logs() as logs:
        async with sqlite_cache(clock, path).running() as cache:
            await cache.set("k", "v")
            await cache.flush()
            assert await cache.get("k") == "v"
    (moved,) = l3(cache).moved_aside
    assert moved.name == "c.db.corrupt-20270115T080000Z"
    assert moved.read_bytes() == garbage
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == [
        "cache database is corrupt; moved aside and replaced by an empty one"
    ]
    assert errors[0]["moved_to"] == str(moved) and "not a database" in errors[0]["error"]
    assert await ids(path) == ["response:k"]


async def test_a_database_of_an_unknown_format_is_moved_aside(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A file written by a newer version (another user_version) is not misread."""
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 9")
    async with sqlite_cache(clock, path).running() as cache:
        assert len(l3(cache).moved_aside) == 1 and l3(cache).available


async def test_a_file_that_cannot_be_opened_leaves_the_tier_out(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A path under a regular file: logged, the tier skipped, the other tiers work."""
    (tmp_path / "plain").write_text("not a directory")
    path = tmp_path / "plain" / "c.db"
    tiers = (
        "[{name: l1, backend: memory, max_entries: 10},"
        f" {{name: l3, backend: sqlite, path: '{path}'}}]"
    )
    with capture_logs() as logs:
        async with make_cache(clock, tiers, extra=BEHIND).running() as cache:
            for index in range(20):  # more than max_pending: nothing is kept for a file
                await cache.set(f"k{index}", "v")
            assert await cache.get("k0") == "v"
            await cache.flush()
            assert l3(cache).pending_writes == 0
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "cache database not opened; the tier is skipped until the cache restarts"
    ]
    stats = tier_stats(cache, "l3")
    assert (stats.available, stats.errors) == (False, 1)


async def test_writes_before_the_file_opens_are_buffered_up_to_max_pending(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Before open the newest max_pending writes wait (older ones are dropped, counted)."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    for index in range(10):
        await cache.set(f"k{index}", index)
    assert l3(cache).pending_writes == 8 and tier_stats(cache, "l3").errors == 2
    async with cache.running():
        await cache.flush()
    assert await ids(path) == [f"response:k{index}" for index in range(2, 10)]


async def test_a_failed_batch_is_kept_for_the_next_one(clock: FakeClock, tmp_path: Path) -> None:
    """A commit that fails (disk full) is counted and logged; its writes go with the next."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        tier = l3(cache)
        file = tier._file
        assert file is not None
        real_write = file.write
        attempts = 0

        async def failing_write(*args: Any) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise sqlite3.OperationalError("database or disk is full")
            await real_write(*args)

        file.write = failing_write  # type: ignore[method-assign,assignment]
        await cache.set("k", "v")
        with capture_logs() as logs:
            await cache.flush()
        assert tier.pending_writes == 1 and tier_stats(cache, "l3").errors == 1
        assert logs[0]["event"] == "cache database write failed"
        await cache.flush()
        assert await ids(path) == ["response:k"]


async def test_corruption_found_in_use_makes_the_actor_replace_the_file(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A read that SQLite reports corrupt: a miss now, and the actor replaces the file."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        await cache.set("k", "v")
        await cache.flush()
        file = l3(cache)._file
        assert file is not None

        async def corrupt(ids: Sequence[str]) -> dict[str, tuple[Record, float]]:
            error = sqlite3.DatabaseError("database disk image is malformed")
            error.sqlite_errorname = "SQLITE_CORRUPT"
            raise error

        file.fetch = corrupt  # type: ignore[method-assign]
        with capture_logs():
            assert await cache.get("k") is None
            await settle()
            await cache.flush()  # waits for the recovery, which holds the write lock
        assert len(l3(cache).moved_aside) == 1 and l3(cache)._file is not file
        await cache.set("k2", "v2")
        await cache.flush()
        assert await cache.get("k2") == "v2"


async def test_an_unreadable_value_on_disk_is_dropped_and_missed(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A row whose value is not msgpack: a miss, counted as an error, deleted."""
    path = tmp_path / "c.db"
    cache = sqlite_cache(clock, path)
    async with cache.running():
        await cache.set("k", "v")
        await cache.flush()

        def damage() -> None:
            with sqlite3.connect(path) as db:
                db.execute("UPDATE entries SET value = x'c1c1'")

        await anyio.to_thread.run_sync(damage)
        with capture_logs():
            assert await cache.get("k") is None
        await cache.flush()
        assert await ids(path) == [] and tier_stats(cache, "l3").errors == 1
