"""The SQLite file behind a sqlite tier: schema, statements, and what to do when it is corrupt.

Every call goes through aiosqlite (its own thread): nothing here blocks the event loop. The
file is in WAL mode with ``synchronous=NORMAL``: a committed batch survives the process being
killed (only an operating-system crash may lose the last ones), and readers never wait for the
writer.

An entry's id is ``namespace:key``; a namespace is a config name (no ``:``), so the id is
unambiguous and a namespace is the id range ``[namespace:, namespace;)``.

A file that is not a database, or is corrupt, is moved aside (renamed with a UTC timestamp,
with its ``-wal`` and ``-shm`` companions) and replaced by a new one; the caller logs it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec

from .entry import Record

__all__ = ["SqliteFile", "entry_id", "is_corrupt", "move_aside", "namespace_range"]

_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    keep_until REAL NOT NULL,
    accessed_at REAL NOT NULL,
    tags BLOB
);
CREATE INDEX IF NOT EXISTS entries_by_keep_until ON entries (keep_until);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (tag, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_id ON tags (id);
"""
_UPSERT = """
INSERT INTO entries (id, value, size, expires_at, keep_until, accessed_at, tags)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET value = excluded.value, size = excluded.size,
    expires_at = excluded.expires_at, keep_until = excluded.keep_until,
    accessed_at = excluded.accessed_at, tags = excluded.tags
"""
_tags_encoder = msgspec.msgpack.Encoder()
_tags_decoder = msgspec.msgpack.Decoder(tuple[str, ...])

Row = tuple[Any, ...]
Write = tuple[str, Record | None, float]
"""``(id, record, written_at)``; a ``None`` record deletes the id."""


def entry_id(namespace: str, key: str) -> str:
    return f"{namespace}:{key}"


def namespace_range(namespace: str) -> tuple[str, str]:
    """The ids of ``namespace``: from ``namespace:`` up to (not including) ``namespace;``."""
    return f"{namespace}:", f"{namespace};"


def is_corrupt(error: BaseException) -> bool:
    """Whether SQLite says the file is not a database or is damaged."""
    name = getattr(error, "sqlite_errorname", "") or ""
    return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")


async def move_aside(path: Path, wall_s: float) -> Path:
    """Rename ``path`` (and its -wal, -shm) to ``<path>.corrupt-<UTC time>``; returns the new
    name. Raises ``OSError`` when it cannot be renamed."""

    def rename() -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_s))
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        serial = 1
        while target.exists():
            serial += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{serial}")
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                os.replace(companion, target.with_name(target.name + suffix))
        return target

    return await anyio.to_thread.run_sync(rename)


class SqliteFile:
    """An open cache database. ``await SqliteFile.open(path)``; ``close()`` when done."""

    def __init__(self, path: Path, db: aiosqlite.Connection) -> None:
        self.path = path
        self._db = db
        self.has_tags = False

    @classmethod
    async def open(cls, path: Path) -> SqliteFile:
        """Open or create the database (and its directory).

        Raises ``OSError`` (the directory), ``sqlite3.DatabaseError`` (``is_corrupt``: not a
        database, damaged, or of an unknown format) or another ``sqlite3.Error``.
        """
        await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            file = cls(path, db)
            await file._prepare()
        except BaseException:
            await db.close()
            raise
        return file

    async def _prepare(self) -> None:
        db = self._db
        await db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: no fsync per commit; a committed batch survives a killed process.
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA cache_size=-16384")  # 16 MiB of pages: hot rows stay in memory
        # Reads map the first 64 MiB of the file instead of a read() per page (as diskcache
        # does). A mapped file truncated under us would fault; SQLite never shrinks it here
        # (no VACUUM, no auto_vacuum), so only another program could.
        await db.execute("PRAGMA mmap_size=67108864")
        (version,) = await self._one("PRAGMA user_version")
        if version not in (0, _VERSION):
            error = sqlite3.DatabaseError(f"cache database format {version} is not {_VERSION}")
            error.sqlite_errorname = "SQLITE_NOTADB"
            raise error
        await db.executescript(_SCHEMA + f"PRAGMA user_version={_VERSION};")
        (has_tags,) = await self._one("SELECT EXISTS (SELECT 1 FROM tags)")
        self.has_tags = bool(has_tags)

    async def _one(self, sql: str) -> Row:
        """The first row of ``sql``."""
        return tuple(next(iter(await self._db.execute_fetchall(sql))))

    async def close(self) -> None:
        await self._db.close()

    # -- reads --------------------------------------------------------------------------------

    async def fetch(self, ids: Sequence[str]) -> dict[str, tuple[Record, float]]:
        """The stored ``(record, accessed_at)`` of each of ``ids`` that is there."""
        marks = ",".join("?" * len(ids))
        sql = (
            "SELECT id, value, expires_at, keep_until, accessed_at, tags FROM entries "
            f"WHERE id IN ({marks})"
        )
        rows = await self._db.execute_fetchall(sql, ids)
        return {row[0]: (Record(row[1], row[2], row[3], _tags(row[5])), row[4]) for row in rows}

    async def sizes(self) -> list[tuple[str, int]]:
        """Every ``(id, size)``, least recently read first (to rebuild a policy)."""
        rows = await self._db.execute_fetchall("SELECT id, size FROM entries ORDER BY accessed_at")
        return [(row[0], row[1]) for row in rows]

    async def totals(self) -> tuple[int, int]:
        """``(entries, bytes)`` stored."""
        count, size = await self._one("SELECT count(*), total(size) FROM entries")
        return int(count), int(size)

    # -- writes -------------------------------------------------------------------------------

    async def write(self, writes: Iterable[Write], touches: dict[str, float]) -> None:
        """Apply ``writes`` (upserts and deletes) and reads' ``touches`` (id -> accessed_at) in
        one transaction. Raises ``sqlite3.Error`` (the transaction is rolled back)."""
        upserts: list[Row] = []
        tag_rows: list[tuple[str, str]] = []
        deletes: list[tuple[str]] = []
        for id_, record, written_at in writes:
            if record is None:
                deletes.append((id_,))
                continue
            data, expires_at, keep_until, tags = record
            blob = _tags_encoder.encode(tags) if tags else None
            upserts.append((id_, data, len(data), expires_at, keep_until, written_at, blob))
            tag_rows.extend((tag, id_) for tag in tags)
        await self._transaction(upserts, tag_rows, deletes, touches)

    async def _transaction(
        self,
        upserts: list[Row],
        tag_rows: list[tuple[str, str]],
        deletes: list[tuple[str]],
        touches: dict[str, float],
    ) -> None:
        db = self._db
        # Shielded: a transaction cancelled halfway would leave the connection inside it.
        with anyio.CancelScope(shield=True):
            await db.execute("BEGIN")
            await self._apply(upserts, tag_rows, deletes, touches)
        self.has_tags = self.has_tags or bool(tag_rows)

    async def _apply(
        self,
        upserts: list[Row],
        tag_rows: list[tuple[str, str]],
        deletes: list[tuple[str]],
        touches: dict[str, float],
    ) -> None:
        db = self._db
        try:
            if upserts:
                await db.executemany(_UPSERT, upserts)
            if self.has_tags or tag_rows:
                await db.executemany("DELETE FROM tags WHERE id = ?", [(r[0],) for r in upserts])
                await db.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?)", tag_rows)
                await db.executemany("DELETE FROM tags WHERE id = ?", deletes)
            if deletes:
                await db.executemany("DELETE FROM entries WHERE id = ?", deletes)
            if touches:
                await db.executemany(
                    "UPDATE entries SET accessed_at = ? WHERE id = ? AND accessed_at < ?",
                    [(at, id_, at) for id_, at in touches.items()],
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def delete_namespace(self, namespace: str) -> list[str]:
        """Delete every entry of ``namespace``; returns their ids."""
        low, high = namespace_range(namespace)
        return await self._delete_where("id >= ? AND id < ?", (low, high))

    async def delete_tag(self, tag: str, namespace: str | None) -> list[str]:
        """Delete every entry tagged ``tag`` (of ``namespace`` only, when given)."""
        if not self.has_tags:
            return []
        where = "id IN (SELECT id FROM tags WHERE tag = ?)"
        params: tuple[Any, ...] = (tag,)
        if namespace is not None:
            where += " AND id >= ? AND id < ?"
            params += namespace_range(namespace)
        return await self._delete_where(where, params)

    async def delete_expired(self, now: float, idle_before: float | None) -> list[Row]:
        """Delete entries past ``keep_until`` (or read last before ``idle_before``); returns
        their ``(id, keep_until, accessed_at)``."""
        where = "keep_until <= ?"
        params: tuple[Any, ...] = (now,)
        if idle_before is not None:
            where += " OR accessed_at <= ?"
            params += (idle_before,)
        return await self._delete_where(where, params, returning="id, keep_until, accessed_at")

    async def _delete_where(
        self, where: str, params: tuple[Any, ...], returning: str = "id"
    ) -> list[Any]:
        db = self._db
        with anyio.CancelScope(shield=True):
            await db.execute("BEGIN")
            try:
                rows = await db.execute_fetchall(
                    f"DELETE FROM entries WHERE {where} RETURNING {returning}", params
                )
                if self.has_tags and rows:
                    await db.execute("DELETE FROM tags WHERE id NOT IN (SELECT id FROM entries)")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return [row[0] for row in rows] if returning == "id" else [tuple(r) for r in rows]


def _tags(blob: bytes | None) -> tuple[str, ...]:
    return () if blob is None else _tags_decoder.decode(blob)
