"""The sample history on a real SQLite file: round trip, WAL, retention, downsampling."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.sampler import PluginStats, Sample
from actors.sampler.history import SampleHistory, downsample

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[SampleHistory]:
    """An open history in tmp_path: a day's retention, raw for 10 min, 1-minute buckets."""
    store = SampleHistory(
        tmp_path / "var" / "samples.db", retention_s=86_400, raw_s=600, bucket_s=60
    )
    await store.open()
    yield store
    await store.close()


def sample_at(timestamp: float, cpu: float = 0.0, **fields: object) -> Sample:
    return Sample(timestamp=timestamp, cpu_percent=cpu, **fields)  # type: ignore[arg-type]


async def test_samples_round_trip_in_time_order(history: SampleHistory) -> None:
    """Appended samples come back equal, oldest first, plugins and per-core figures included."""
    samples = [
        sample_at(T0 + 2, 20.0),
        sample_at(T0 + 1, 10.0, cpu_percent_per_core=(5.0, 15.0),
                  plugins={"weather": PluginStats(processes=1, rss_bytes=99)}),
    ]  # fmt: skip
    for sample in samples:
        await history.append(sample)
    assert await history.query(T0) == [samples[1], samples[0]]


async def test_the_file_is_in_wal_mode_and_survives_a_reopen(
    history: SampleHistory, tmp_path: Path
) -> None:
    """The database (and its directory) is created in WAL mode; a new handle sees the rows."""
    await history.append(sample_at(T0, 1.0))
    await history.close()
    path = tmp_path / "var" / "samples.db"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SampleHistory(path, retention_s=86_400)
    await again.open()
    try:
        assert [s.cpu_percent for s in await again.query(T0 - 1)] == [1.0]
    finally:
        await again.close()


async def test_a_query_takes_the_window_asked_for(history: SampleHistory) -> None:
    """since <= t <= until, both ends included."""
    for i in range(10):
        await history.append(sample_at(T0 + i, float(i)))
    found = await history.query(T0 + 3, T0 + 5)
    assert [s.cpu_percent for s in found] == [3.0, 4.0, 5.0]


async def test_a_query_can_average_to_a_resolution(history: SampleHistory) -> None:
    """resolution_s=5 folds 10 one-second samples into two averages stamped at their buckets."""
    for i in range(10):
        await history.append(sample_at(T0 + i, float(i)))
    found = await history.query(T0, resolution_s=5)
    assert [(s.timestamp, s.cpu_percent) for s in found] == [(T0, 2.0), (T0 + 5, 7.0)]


async def test_retention_deletes_what_is_older(history: SampleHistory) -> None:
    """maintain() deletes rows older than retention_s; newer rows stay."""
    history.retention_s = 100
    history.raw_s = 1000  # no downsampling in this test
    for offset in (0, 50, 150, 199):
        await history.append(sample_at(T0 + offset, float(offset)))
    result = await history.maintain(T0 + 200)
    assert result.expired == 2
    assert [s.cpu_percent for s in await history.query(T0 - 1)] == [150.0, 199.0]
    assert await history.count() == 2


async def test_old_raw_samples_are_folded_into_bucket_averages(history: SampleHistory) -> None:
    """Raw samples older than raw_s become one average per whole minute; newer ones stay raw."""
    for second in range(0, 180, 10):  # three minutes of samples, every 10 s
        await history.append(sample_at(T0 + second, float(second), process_rss_bytes=second))
    # At T0+790 the raw window starts at T0+190 → whole buckets before T0+180 are folded.
    result = await history.maintain(T0 + 790)
    assert (result.folded, result.buckets, result.expired) == (18, 3, 0)
    rows = await history.query(T0 - 1)
    assert [(s.timestamp, s.cpu_percent) for s in rows] == [
        (T0, 25.0),
        (T0 + 60, 85.0),
        (T0 + 120, 145.0),
    ]
    assert rows[0].process_rss_bytes == 25 and isinstance(rows[0].process_rss_bytes, int)


async def test_an_unfinished_bucket_is_not_folded(history: SampleHistory) -> None:
    """Samples in a minute that is still partly inside the raw window stay raw."""
    for second in range(0, 120, 10):
        await history.append(sample_at(T0 + second, float(second)))
    # The raw window starts at T0+90: minute [T0, T0+60) is folded, [T0+60, T0+120) is not.
    result = await history.maintain(T0 + 690)
    assert (result.folded, result.buckets) == (6, 1)
    rows = await history.query(T0 - 1)
    assert len(rows) == 1 + 6
    again = await history.maintain(T0 + 690)
    assert (again.folded, again.buckets) == (0, 0)  # a second pass changes nothing


async def test_averages_expire_with_the_retention_too(history: SampleHistory) -> None:
    """A folded average older than the retention is deleted like a raw row."""
    for second in range(0, 60, 10):
        await history.append(sample_at(T0 + second, 1.0))
    await history.maintain(T0 + 700)
    history.retention_s = 300
    result = await history.maintain(T0 + 1000)
    assert result.expired == 1
    assert await history.count() == 0


async def test_using_a_history_that_is_not_open_raises(tmp_path: Path) -> None:
    """append, query, maintain and count before open raise RuntimeError saying to open it."""
    store = SampleHistory(tmp_path / "s.db", retention_s=60)
    with pytest.raises(RuntimeError, match="is not open; call open\\(\\) first"):
        await store.append(sample_at(T0))
    with pytest.raises(RuntimeError, match="is not open"):
        await store.query(T0)
    with pytest.raises(RuntimeError, match="is not open"):
        await store.maintain(T0)
    with pytest.raises(RuntimeError, match="is not open"):
        await store.count()


async def test_a_path_that_is_not_a_database_fails_to_open(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises sqlite3.DatabaseError and leaves it closed."""
    path = tmp_path / "not-a-db"
    path.write_bytes(b"this is not a database file, not at all" * 100)
    store = SampleHistory(path, retention_s=60)
    with pytest.raises(sqlite3.DatabaseError):
        await store.open()
    assert not store.is_open


@pytest.mark.parametrize("name", ["retention_s", "raw_s", "bucket_s"])
def test_windows_below_a_second_are_refused(tmp_path: Path, name: str) -> None:
    """retention_s, raw_s and bucket_s below 1 s raise ValueError naming the parameter."""
    kwargs = {"retention_s": 60.0, "raw_s": 60.0, "bucket_s": 60.0} | {name: 0.5}
    with pytest.raises(ValueError, match=f"{name} must be at least 1 second"):
        SampleHistory(tmp_path / "s.db", **kwargs)


def test_downsampling_to_a_bad_width_is_refused() -> None:
    """A bucket width of 0 raises ValueError."""
    with pytest.raises(ValueError, match="bucket_s must be a positive number"):
        downsample([sample_at(T0)], 0)
