"""The log's files on disk: rotated siblings, gzip, and following a file as it grows.

``runtime.logging`` rotates ``runtime.jsonl`` to ``runtime.jsonl.1`` (the newest), ``.2``, ...;
an operator's logrotate may compress them to ``runtime.jsonl.2.gz``. ``log_files`` lists the
whole history oldest first, ``read_lines`` reads any of them (gzip is recognised by its magic
bytes, whatever the name), and ``Tail`` / ``follow_lines`` read lines as they are appended,
surviving a rotation (the file renamed and a new one created) or a truncation.

These functions block on the disk: they are for the command line, not for the event loop.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["GZIP_MAGIC", "Tail", "follow_lines", "is_gzip", "log_files", "read_lines"]

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 1 << 16


def log_files(path: Path, *, rotated: bool = True) -> list[Path]:
    """``path`` and, when ``rotated``, its rotated siblings: oldest first, ``path`` last.

    Siblings are ``NAME.N`` and ``NAME.N.gz`` beside ``path``, the highest ``N`` being the
    oldest. Raises ``FileNotFoundError`` when ``path`` does not exist and
    ``IsADirectoryError`` when it is a directory.
    """
    if not path.exists():
        raise FileNotFoundError(f"log file {str(path)!r} not found")
    if path.is_dir():
        raise IsADirectoryError(f"log file {str(path)!r} is a directory, not a file")
    if not rotated:
        return [path]
    sibling = re.compile(re.escape(path.name) + r"\.(\d+)(\.gz)?")
    found: list[tuple[int, bool, Path]] = []
    for candidate in path.parent.iterdir():
        match = sibling.fullmatch(candidate.name)
        if match and candidate.is_file():
            found.append((int(match.group(1)), match.group(2) is None, candidate))
    found.sort(key=lambda item: (-item[0], item[1]))  # oldest first; N.gz before N
    return [candidate for _, _, candidate in found] + [path]


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with gzip's magic bytes. Raises ``OSError`` if unreadable."""
    with path.open("rb") as file:
        return file.read(2) == GZIP_MAGIC


def read_lines(path: Path) -> Iterator[bytes]:
    """Every line of ``path`` (gzip or plain), with its newline.

    Raises ``OSError`` when the file cannot be read (``gzip.BadGzipFile`` for a damaged
    archive) and ``EOFError`` for a truncated one, possibly after some lines were read.
    """
    if is_gzip(path):
        with gzip.open(path, "rb") as archive:
            yield from archive
    else:
        with path.open("rb") as file:
            yield from file


class Tail:
    """Reads the lines appended to a growing file, across rotations and truncations.

    Each ``read_new()`` returns the complete lines written since the last call (a line still
    being written waits for its newline). When the path names a new file (the old one was
    renamed away), the rest of the old file is read first, then the new one from its start;
    when the file shrinks (truncated in place), reading starts again from its beginning.

    It polls, so it cannot see a file that lived only between two reads: rotating twice
    between polls (more than ``max_bytes`` written in a poll interval) loses the middle file.
    """

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        """Open ``path`` at its start or, by default, its end. Raises ``OSError``."""
        self.path = path
        self._file: IO[bytes] = path.open("rb")
        self._partial = b""
        if not from_start:
            self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()

    def read_new(self) -> Iterator[bytes]:
        """The complete lines appended since the last call, following a rotation."""
        yield from self._drain()
        replaced = self._replacement()
        if replaced is not None:
            yield from self._drain()  # lines written to the old file just before the rename
            if self._partial:
                yield self._partial  # the old file ended without a newline: hand it over
            self._file.close()
            self._file, self._partial = replaced, b""
            yield from self._drain()

    def _drain(self) -> Iterator[bytes]:
        if self._truncated():
            self._file.seek(0)
            self._partial = b""
        while chunk := self._file.read(_CHUNK_BYTES):
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in lines:
                yield line + b"\n"

    def _truncated(self) -> bool:
        return os.fstat(self._file.fileno()).st_size < self._file.tell()

    def _replacement(self) -> IO[bytes] | None:
        # The path now names another file (a rotation); None while it is the same or missing.
        try:
            current = os.stat(self.path)
        except FileNotFoundError:  # renamed, the new one not created yet: keep the old one
            return None
        mine = os.fstat(self._file.fileno())
        if (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            return None
        try:
            return self.path.open("rb")
        except FileNotFoundError:  # gone again between the stat and the open
            return None


def follow_lines(
    tail: Tail,
    *,
    sleep: Callable[[float], None],
    interval_s: float = 0.25,
    max_polls: int | None = None,
) -> Iterator[bytes]:
    """Lines from ``tail`` as they come: what is there now, then a poll every ``interval_s``.

    Runs until the consumer stops iterating, ``sleep`` raises (``KeyboardInterrupt`` on
    Ctrl-C), or after ``max_polls`` sleeps (for tests). ``sleep`` is injected so a test can
    append, rotate or interrupt between polls without waiting.
    """
    yield from tail.read_new()
    polls = 0
    while max_polls is None or polls < max_polls:
        sleep(interval_s)
        polls += 1
        yield from tail.read_new()
