"""The sample history: SQLite (aiosqlite, WAL), with retention and downsampling.

Each row is one Sample encoded with msgpack (never pickle: a file on disk must not be a
code-execution hole), its timestamp, and the width of the bucket it stands for (0 for a raw
sample). ``maintain`` deletes rows older than the retention and folds raw samples older than
``raw_s`` into averages over ``bucket_s`` buckets, so a day at 1 Hz keeps an hour of raw
samples and 1-minute averages before that.

Every operation holds one lock, so a query made while a write is under way sees that write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import aiosqlite
import anyio
import msgspec

from .sample import Sample, average

__all__ = ["MaintenanceResult", "SampleHistory", "downsample"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    timestamp REAL NOT NULL,
    bucket_s REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (timestamp);
"""


def downsample(samples: Iterable[Sample], bucket_s: float) -> list[Sample]:
    """Average ``samples`` per ``bucket_s``-wide bucket (aligned to the epoch), oldest first.

    Each average is stamped with its bucket's start. Raises ``ValueError`` for a bucket width
    that is not a positive number.
    """
    if not (math.isfinite(bucket_s) and bucket_s > 0):
        raise ValueError(f"bucket_s must be a positive number of seconds, got {bucket_s!r}")
    buckets: dict[float, list[Sample]] = {}
    for sample in samples:
        start = math.floor(sample.timestamp / bucket_s) * bucket_s
        buckets.setdefault(start, []).append(sample)
    return [average(group, timestamp=start) for start, group in sorted(buckets.items())]


class MaintenanceResult(NamedTuple):
    """What one ``maintain`` did."""

    expired: int  # rows deleted for being older than the retention
    folded: int  # raw rows replaced by averages
    buckets: int  # averages written


class SampleHistory:
    """Samples in a SQLite file. ``open`` before use, ``close`` after.

    Raises ``ValueError`` for a retention, raw window or bucket width below 1 second.
    """

    def __init__(
        self, path: str | Path, *, retention_s: float, raw_s: float = 3600.0, bucket_s: float = 60.0
    ) -> None:
        for name, value in (("retention_s", retention_s), ("raw_s", raw_s), ("bucket_s", bucket_s)):
            if not (math.isfinite(value) and value >= 1):
                raise ValueError(f"{name} must be at least 1 second, got {value!r}")
        self.path = Path(path)
        self.retention_s = retention_s
        self.raw_s = raw_s
        self.bucket_s = bucket_s
        self._db: aiosqlite.Connection | None = None
        self._lock = anyio.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Sample)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        """Create the file (and its directory) if needed, in WAL mode.

        Raises ``OSError`` or ``sqlite3.Error`` when the file cannot be opened or is not a
        database.
        """
        await anyio.Path(self.path.parent).mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL: no fsync per sample; a crash loses the last few.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(_SCHEMA)
            await db.commit()
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"sample history {self.path} is not open; call open() first")
        return self._db

    async def append(self, sample: Sample) -> None:
        """Store one raw sample. Raises ``RuntimeError`` when not open, ``sqlite3.Error``."""
        db = self._connection()
        async with self._lock:
            await db.execute(
                "INSERT INTO samples (timestamp, bucket_s, data) VALUES (?, 0, ?)",
                (sample.timestamp, self._encoder.encode(sample)),
            )
            await db.commit()

    async def query(
        self, since: float, until: float | None = None, *, resolution_s: float | None = None
    ) -> list[Sample]:
        """Samples stamped ``since <= t <= until`` (wall seconds), oldest first.

        Rows are as stored (raw where recent, averages where older) unless ``resolution_s`` asks
        for averages over buckets of that width. Raises ``RuntimeError`` when not open.
        """
        db = self._connection()
        upper = math.inf if until is None else until
        async with self._lock:
            cursor = await db.execute(
                "SELECT data FROM samples WHERE timestamp >= ? AND timestamp <= ? "
                "ORDER BY timestamp",
                (since, upper),
            )
            rows = await cursor.fetchall()
        samples = [self._decoder.decode(row[0]) for row in rows]
        return samples if resolution_s is None else downsample(samples, resolution_s)

    async def maintain(self, now_wall: float) -> MaintenanceResult:
        """Expire rows older than the retention; fold raw rows older than ``raw_s`` into
        averages (whole buckets only). One transaction. Raises ``RuntimeError`` when not open."""
        db = self._connection()
        horizon = now_wall - self.retention_s
        cutoff = math.floor((now_wall - self.raw_s) / self.bucket_s) * self.bucket_s
        async with self._lock:
            try:
                expired = await db.execute("DELETE FROM samples WHERE timestamp < ?", (horizon,))
                cursor = await db.execute(
                    "SELECT data FROM samples WHERE bucket_s = 0 AND timestamp < ?", (cutoff,)
                )
                raw = [self._decoder.decode(row[0]) for row in await cursor.fetchall()]
                averages = downsample(raw, self.bucket_s)
                await db.execute(
                    "DELETE FROM samples WHERE bucket_s = 0 AND timestamp < ?", (cutoff,)
                )
                await db.executemany(
                    "INSERT INTO samples (timestamp, bucket_s, data) VALUES (?, ?, ?)",
                    [(s.timestamp, self.bucket_s, self._encoder.encode(s)) for s in averages],
                )
                await db.commit()
            except BaseException:
                with anyio.CancelScope(shield=True):  # roll back even when cancelled
                    await db.rollback()
                raise
        return MaintenanceResult(expired.rowcount, len(raw), len(averages))

    async def count(self) -> int:
        """How many rows are stored (raw and averaged). Raises ``RuntimeError`` when not open."""
        db = self._connection()
        async with self._lock:
            cursor = await db.execute("SELECT COUNT(*) FROM samples")
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0
