"""Alert history in SQLite: every transition (pending, firing, resolved), kept for a retention.

The history actor owns the connection (aiosqlite runs it in its own thread, so the event loop
never waits on the disk), opened on the first write or query. Writes and queries go through
its mailbox, so a query sees every transition recorded before it was asked. ``path=None``
keeps the history in an in-memory database (gone when the actor stops).
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import aiosqlite
import anyio
import msgspec

from runtime.actor import Actor
from runtime.clock import Clock

__all__ = ["AlertRecord", "HistoryActor", "HistoryQuery", "open_history"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    value REAL,
    active_since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_history_at ON alert_history (at);
CREATE INDEX IF NOT EXISTS alert_history_name ON alert_history (name, at);
"""
_INSERT = (
    "INSERT INTO alert_history (at, name, state, labels, annotations, value, active_since) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "at, name, state, labels, annotations, value, active_since"
_PRUNE_EVERY_S = 3600.0
_LABELS = msgspec.json.Decoder(dict[str, str])
_ENCODER = msgspec.json.Encoder()


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One transition: alert ``name`` went ``state`` at ``at`` (wall-clock seconds)."""

    at: float
    name: str
    state: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_since: float


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What ``Alerter.history`` asks for: newest first, at most ``limit`` records."""

    name: str | None = None
    state: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100


async def open_history(path: str | None) -> aiosqlite.Connection:
    """Open (creating) the history database; WAL mode for a file.

    Raises ``sqlite3.Error`` or ``OSError`` when the file cannot be opened or created.
    """
    if path is not None:
        # Open the file once here first: a path SQLite cannot open fails in this thread, not
        # in aiosqlite's, whose failure path calls back into the loop after it may be closed.
        await anyio.to_thread.run_sync(_probe, path)
    db = await aiosqlite.connect(path if path is not None else ":memory:")
    try:
        if path is not None:
            await db.execute("PRAGMA journal_mode=WAL")
        await db.executescript(_SCHEMA)
        await db.commit()
    except BaseException:
        await db.close()
        raise
    return db


def _probe(path: str) -> None:
    sqlite3.connect(path).close()


class HistoryActor(Actor):
    """Records lists of ``AlertRecord`` and answers ``HistoryQuery`` asks."""

    def __init__(self, path: str | None, *, retention_s: float, clock: Clock) -> None:
        self._path = path
        self._retention_s = retention_s
        self._wall_clock = clock
        self._db: aiosqlite.Connection | None = None
        self._pruned_at = -math.inf
        self.recorded = 0

    async def on_stop(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def receive(self, message: Any) -> Any:
        if isinstance(message, HistoryQuery):
            return await self.query(message)
        if isinstance(message, list):
            await self.record(message)
            return None
        raise TypeError(f"history takes a list of AlertRecord or a HistoryQuery, got {message!r}")

    async def record(self, records: list[AlertRecord]) -> None:
        """Append ``records``; prune what is older than the retention (at most hourly)."""
        db = await self._connection()
        rows = [
            (
                r.at, r.name, r.state, _ENCODER.encode(r.labels).decode(),
                _ENCODER.encode(r.annotations).decode(),
                r.value if not math.isnan(r.value) else None, r.active_since,
            )
            for r in records
        ]  # fmt: skip
        await db.executemany(_INSERT, rows)
        await db.commit()
        self.recorded += len(rows)
        if self._wall_clock.wall() - self._pruned_at >= _PRUNE_EVERY_S:
            await self._prune(db)

    async def query(self, query: HistoryQuery) -> list[AlertRecord]:
        """The records ``query`` selects, newest first."""
        clauses, params = _where(query)
        sql = f"SELECT {_COLUMNS} FROM alert_history{clauses} ORDER BY at DESC, id DESC LIMIT ?"
        db = await self._connection()
        async with db.execute(sql, (*params, query.limit)) as cursor:
            rows = await cursor.fetchall()
        return [_record(row) for row in rows]

    async def _prune(self, db: aiosqlite.Connection) -> None:
        now = self._wall_clock.wall()
        await db.execute("DELETE FROM alert_history WHERE at < ?", (now - self._retention_s,))
        await db.commit()
        self._pruned_at = now

    async def _connection(self) -> aiosqlite.Connection:
        """The database, opened (and pruned) on first use: starting the actor does no I/O, so
        the Alerter starts at once and a bad path shows in the first write's error."""
        if self._db is None:
            self._db = await open_history(self._path)
            await self._prune(self._db)
        return self._db


def _where(query: HistoryQuery) -> tuple[str, list[object]]:
    conditions: list[str] = []
    params: list[object] = []
    for column, op, value in (
        ("name", "=", query.name),
        ("state", "=", query.state),
        ("at", ">=", query.since),
        ("at", "<=", query.until),
    ):
        if value is not None:
            conditions.append(f"{column} {op} ?")
            params.append(value)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def _record(row: Any) -> AlertRecord:
    at, name, state, labels, annotations, value, active_since = row
    return AlertRecord(
        at=at,
        name=name,
        state=state,
        labels=_LABELS.decode(labels),
        annotations=_LABELS.decode(annotations),
        value=math.nan if value is None else value,
        active_since=active_since,
    )
