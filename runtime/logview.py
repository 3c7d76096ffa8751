"""Reading the JSON log: parse lines, and the query behind ``jarvis-runtime logs``.

Pure functions over lines, no I/O: ``LineParser`` turns raw lines into ``LogLine`` records
(counting the ones that are not JSON objects), ``make_query`` turns the command's options into
a ``LogQuery`` whose ``matches`` decides which records are shown. The files (rotation, gzip,
following) are ``runtime.logfiles``; the output is ``runtime.logrender``.

Matching rules, as the command documents them:

- ``level``: that level and above (``warn``, ``exception`` and ``fatal`` are read as aliases);
- ``actors``: exact names, any of them;
- ``events``: case-insensitive substrings, any of them (exact: ``-f event=...``);
- ``fields``: ``key=value`` is an exact match on the field's text as the JSON line has it
  (``true``, ``null``, ``12.5``, a string without quotes), ``key~=regex`` a regex search in it;
  ``a.b`` reaches into a nested object; all of them must match;
- ``since`` / ``until``: a duration before now (``10m``, ``2h``, ``1h30m``, ``1d``), ``now``, an
  ISO date or time (``2027-01-15``, ``2027-01-15T08:30:00Z``, ``2027-01-15 08:30+02:00``) or a
  time of day today (``08:30``); a time without an offset is UTC, like the log's timestamps;
- ``trace``: one task's story: the lines whose ``task_id``, ``trace_id`` or ``request_id`` is
  that id (exactly).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._config_check import parse_duration

__all__ = [
    "LEVEL_NAMES",
    "TRACE_FIELDS",
    "FieldFilter",
    "LineParser",
    "LogLine",
    "LogQuery",
    "field_text",
    "in_time_order",
    "level_rank",
    "make_query",
    "parse_field_filter",
    "parse_level",
    "parse_time",
    "parse_timestamp",
]

# The runtime's levels in order of severity (as runtime.logging.LEVELS, without importing it:
# that would load structlog and anyio into a command that only reads files).
LEVEL_NAMES = ("debug", "info", "warning", "error", "critical")
_LEVEL_RANKS = {name: (index + 1) * 10 for index, name in enumerate(LEVEL_NAMES)}
_LEVEL_ALIASES = {"warn": "warning", "exception": "error", "fatal": "critical"}
TRACE_FIELDS = ("task_id", "trace_id", "request_id")

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


# -- lines ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogLine:
    """One JSON log line: its text as read (``raw``, no newline), its fields and its time."""

    raw: str
    fields: dict[str, Any]
    time_s: float | None  # seconds since the epoch; None when the timestamp is missing or bad

    @property
    def level(self) -> str:
        return _text_or_empty(self.fields.get("level"))

    @property
    def event(self) -> str:
        return _text_or_empty(self.fields.get("event"))

    @property
    def actor(self) -> str:
        return _text_or_empty(self.fields.get("actor"))


def _text_or_empty(value: object) -> str:
    return "" if value is None else field_text(value)


class LineParser:
    """Parses raw lines into ``LogLine``s and counts (in ``skipped``) those it cannot read.

    A line is skipped when it is not a JSON object (a stray print, a truncated write, bytes
    that are not UTF-8); blank lines are ignored without counting.
    """

    def __init__(self) -> None:
        self.skipped = 0

    def parse(self, raw: bytes) -> LogLine | None:
        """The record in ``raw``, or None (counted) when it is not a JSON object."""
        text = raw.rstrip(b"\r\n")
        if not text.strip():
            return None
        try:
            fields = _decoder.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError):  # the latter: bytes that are not UTF-8
            fields = None
        if not isinstance(fields, dict):
            self.skipped += 1
            return None
        return LogLine(text.decode(), fields, parse_timestamp(fields.get("timestamp")))

    def parse_all(self, raws: Iterable[bytes]) -> Iterator[LogLine]:
        """Every readable record in ``raws``, in order."""
        for raw in raws:
            line = self.parse(raw)
            if line is not None:
                yield line


def parse_timestamp(value: object) -> float | None:
    """Seconds since the epoch in an ISO-8601 string (UTC when it has no offset), else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def field_text(value: object) -> str:
    """A field's text as the JSON line has it: strings bare, anything else as JSON."""
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def level_rank(level: str) -> int:
    """A level's severity (debug 10 ... critical 50); 0 for a level the runtime does not use."""
    name = level.lower()
    return _LEVEL_RANKS.get(_LEVEL_ALIASES.get(name, name), 0)


def in_time_order(lines: Iterable[LogLine]) -> list[LogLine]:
    """``lines`` sorted by time, stable; lines without a time come first."""
    return sorted(lines, key=lambda line: -math.inf if line.time_s is None else line.time_s)


# -- the options ------------------------------------------------------------------------------


def parse_level(text: str) -> int:
    """The rank of a ``--level`` value. Raises ``ValueError`` for a level it does not know."""
    rank = level_rank(text.strip())
    if rank == 0:
        raise ValueError(f"--level must be one of {', '.join(LEVEL_NAMES)}; got {text!r}")
    return rank


_CLOCK_TIME = re.compile(r"\d{1,2}:\d\d(:\d\d(\.\d+)?)?")


def parse_time(text: str, *, now_s: float, option: str = "--since") -> float:
    """Seconds since the epoch for a ``--since``/``--until`` value, relative to ``now_s``.

    Raises ``ValueError`` naming ``option`` and the text when it is none of the forms above.
    """
    spec = text.strip().upper()
    if spec == "NOW":
        return now_s
    if spec and spec[0].isdigit() and spec[-1] in "SMHDW" and "-" not in spec:
        try:
            return now_s - parse_duration(spec.lower())
        except ValueError:
            pass  # said below, with every accepted form
    if _CLOCK_TIME.fullmatch(spec):
        spec = f"{datetime.fromtimestamp(now_s, UTC).date().isoformat()}T{spec}"
    moment = parse_timestamp(spec) if spec[:1].isdigit() else None
    if moment is None:
        raise ValueError(
            f"{option}: cannot read {text!r} as a time; use a duration before now such as "
            "10m, 2h or 1d, or an ISO time such as 2027-01-15T08:30:00Z (UTC unless it has "
            "an offset)"
        )
    return moment


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class FieldFilter:
    """``-f key=value`` (exact) or ``-f key~=regex`` (search) on one field's text."""

    key: str
    value: str | None = None
    pattern: re.Pattern[str] | None = None

    def matches(self, fields: Mapping[str, Any]) -> bool:
        found = _lookup(fields, self.key)
        if found is _MISSING:
            return False
        text = field_text(found)
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        return text == self.value


def _lookup(fields: Mapping[str, Any], key: str) -> Any:
    # A key with a dot is first a key of its own, then a path into nested objects.
    if key in fields:
        return fields[key]
    value: Any = fields
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def parse_field_filter(text: str) -> FieldFilter:
    """A ``-f`` value: ``key=value`` or ``key~=regex``.

    Raises ``ValueError`` when there is no ``=``, the key is empty or the regex is invalid.
    """
    key, equals, value = text.partition("=")
    if not equals:
        raise ValueError(f"-f: expected key=value or key~=regex; got {text!r}")
    is_regex = key.endswith("~")
    key = key.removesuffix("~").strip()
    if not key:
        raise ValueError(f"-f: the field name is empty in {text!r}; write e.g. task_class=voice")
    if not is_regex:
        return FieldFilter(key, value=value)
    try:
        return FieldFilter(key, pattern=re.compile(value))
    except re.error as exc:
        raise ValueError(f"-f: bad regex {value!r} for {key!r}: {exc}") from None


# -- the query --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which lines to show; ``matches`` is true when a line passes every filter that is set."""

    min_level: int = 0
    actors: frozenset[str] = frozenset()
    events: tuple[str, ...] = ()  # lower case; a line's event must contain one of them
    fields: tuple[FieldFilter, ...] = ()
    since_s: float | None = None
    until_s: float | None = None
    trace_id: str | None = None

    def matches(self, line: LogLine) -> bool:
        return (
            self._in_time_range(line.time_s)
            and (not self.min_level or level_rank(line.level) >= self.min_level)
            and (not self.actors or line.actor in self.actors)
            and (not self.events or any(e in line.event.lower() for e in self.events))
            and all(f.matches(line.fields) for f in self.fields)
            and (self.trace_id is None or self._in_trace(line.fields))
        )

    def _in_time_range(self, time_s: float | None) -> bool:
        if self.since_s is None and self.until_s is None:
            return True
        if time_s is None:  # a line we cannot place in time is outside any range
            return False
        after = self.since_s is None or time_s >= self.since_s
        return after and (self.until_s is None or time_s <= self.until_s)

    def _in_trace(self, fields: Mapping[str, Any]) -> bool:
        return any(
            key in fields and field_text(fields[key]) == self.trace_id for key in TRACE_FIELDS
        )


def make_query(
    *,
    now_s: float,
    level: str | None = None,
    actors: Sequence[str] = (),
    events: Sequence[str] = (),
    fields: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    trace: str | None = None,
) -> LogQuery:
    """The query for the command's options; relative times count back from ``now_s``.

    Raises ``ValueError`` with a message for the user on the first bad option.
    """
    since_s = parse_time(since, now_s=now_s, option="--since") if since is not None else None
    until_s = parse_time(until, now_s=now_s, option="--until") if until is not None else None
    if since_s is not None and until_s is not None and since_s > until_s:
        raise ValueError(f"--since {since!r} is after --until {until!r}; swap them")
    return LogQuery(
        min_level=parse_level(level) if level is not None else 0,
        actors=frozenset(actors),
        events=tuple(event.lower() for event in events),
        fields=tuple(parse_field_filter(text) for text in fields),
        since_s=since_s,
        until_s=until_s,
        trace_id=trace,
    )
