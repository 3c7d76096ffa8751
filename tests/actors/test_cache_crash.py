"""A process writing to the SQLite tier is killed with SIGKILL: what it committed survives."""

from __future__ import annotations

import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from runtime.clock import FakeClock

from .test_cache_kit import make_cache

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the writer imports from it

# The writer: a cache with a write-behind SQLite tier that sets keys without end and, after
# each commit, prints the highest key index it holds. The parent kills it mid-writes.
WRITER = textwrap.dedent(
    """
    import anyio, sys
    from actors.cache import Cache
    from runtime.actor import ActorContext
    from runtime.config import parse_config

    PATH = sys.argv[1]
    TEXT = f'''
    cache:
      write_behind: {{interval_ms: 5, batch: 50, max_pending: 100}}
      tiers: [{{name: l3, backend: sqlite, path: "{PATH}", write: behind}}]
    '''

    async def main():
        cache = Cache(parse_config(TEXT, env={}), ActorContext())
        async with cache.running():
            index = 0
            while True:
                for _ in range(50):
                    await cache.set(f"k{index}", {"index": index, "pad": "x" * 200})
                    index += 1
                await cache.flush()
                print(f"committed {index - 1}", flush=True)

    anyio.run(main)
    """
)


async def run_and_kill(path: Path, root: Path) -> int:
    """Start the writer, kill it with SIGKILL after a few commits; the last index it reported."""
    process = await anyio.open_process(
        [sys.executable, "-c", WRITER, str(path)], cwd=root, stderr=None
    )
    committed = -1
    commits = 0
    assert process.stdout is not None
    buffer = b""
    with anyio.fail_after(60):  # a guard against a writer that never reports, not a wait
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                committed = int(line.split()[1])
                commits += 1
            if commits >= 5:
                process.send_signal(signal.SIGKILL)
                break
    await process.wait()
    await process.aclose()
    assert process.returncode == -signal.SIGKILL
    return committed


@pytest.mark.slow
async def test_a_killed_writer_leaves_an_intact_database_with_every_commit(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-writes: integrity_check is ok and every reported commit is readable."""
    clock = FakeClock(wall_start=time.time())  # the writer's entries expire in real time
    path = tmp_path / "cache.db"
    committed = await run_and_kill(path, ROOT)
    assert committed >= 249

    def check() -> tuple[str, int]:
        with sqlite3.connect(path) as db:
            (status,) = db.execute("PRAGMA integrity_check").fetchone()
            (count,) = db.execute("SELECT count(*) FROM entries").fetchone()
        return status, count

    status, count = await anyio.to_thread.run_sync(check)
    assert status == "ok"
    assert count >= committed + 1  # what was reported, and maybe a batch more
    tiers = (
        "[{name: l1, backend: memory, max_entries: 10},"
        f" {{name: l3, backend: sqlite, path: '{path}'}}]"
    )
    async with make_cache(clock, tiers).running() as cache:
        for index in (0, committed // 2, committed):
            assert await cache.get(f"k{index}") == {"index": index, "pad": "x" * 200}
        assert cache.statistics().tiers[1].errors == 0
