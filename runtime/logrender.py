"""How ``jarvis-runtime logs`` shows lines and statistics: plain or ANSI-colored text.

``format_line`` renders one record as ``TIMESTAMP LEVEL ACTOR EVENT key=value ...`` with
multi-line values (tracebacks) indented below it; ``LogStats`` counts lines by level, event and
actor and keeps their times for ``render_stats``' histogram. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .logview import LogLine, field_text, level_rank

__all__ = ["Histogram", "LogStats", "format_line", "format_offset", "render_stats"]

_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_CYAN = "\x1b[36m"
_LEVEL_STYLES = {10: _DIM, 20: "\x1b[32m", 30: "\x1b[33m", 40: "\x1b[31m", 50: "\x1b[1;31m"}
_HEAD_KEYS = frozenset({"timestamp", "level", "event", "actor"})
_ACTOR_WIDTH = 12


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{_RESET}" if color and style else text


def _value_text(value: Any) -> str:
    # Quote a string only when it would be ambiguous bare: empty, or with a space, quote or =.
    if isinstance(value, str) and (not value or any(c in value for c in ' "=')):
        return msgspec.json.encode(value).decode()
    return field_text(value)


def format_line(line: LogLine, *, color: bool = False, start_s: float | None = None) -> str:
    """One record as text; with ``start_s``, the seconds since then follow the timestamp.

    Fields with several lines (a traceback) come after the line, indented.
    """
    level = line.level or "-"
    head = [
        _paint(str(line.fields.get("timestamp", "-")), _DIM, color),
        format_offset(line.time_s, start_s) if start_s is not None else "",
        _paint(f"{level.upper():<8}", _LEVEL_STYLES.get(level_rank(level), ""), color),
        _paint(f"{line.actor or '-':<{_ACTOR_WIDTH}}", _CYAN, color),
        _paint(line.event, _BOLD, color),
    ]
    pairs, blocks = [], []
    for key, value in line.fields.items():
        if key in _HEAD_KEYS:
            continue
        if isinstance(value, str) and "\n" in value:
            blocks.append(f"{key}:\n" + "\n".join("    " + row for row in value.splitlines()))
        else:
            pairs.append(_paint(f"{key}=", _DIM, color) + _value_text(value))
    text = " ".join(part for part in head if part)
    if pairs:
        text += "  " + " ".join(pairs)
    return "\n".join([text, *(_paint(block, _DIM, color) for block in blocks)])


def format_offset(time_s: float | None, start_s: float) -> str:
    """``+1.250s``: how long after ``start_s`` a line came (``+?`` when it has no time)."""
    return "+?" if time_s is None else f"+{time_s - start_s:.3f}s"


# -- statistics -------------------------------------------------------------------------------

# Histogram bucket widths, finest first, with the name of a bucket for the title.
_BUCKETS_S = (
    (1, "second"), (10, "10 s"), (60, "minute"), (300, "5 minutes"), (900, "15 minutes"),
    (3600, "hour"), (21600, "6 hours"), (86400, "day"), (604800, "week"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Histogram:
    """Lines per bucket: bucket ``i`` starts at ``start_s + i * width_s``."""

    width_s: int
    name: str
    start_s: float
    counts: list[int]

    def as_record(self) -> dict[str, Any]:
        return {"bucket_s": self.width_s, "start": _iso(self.start_s), "counts": self.counts}


@dataclass
class LogStats:
    """Counts of the lines seen, by level, event and actor, and their times."""

    total: int = 0
    by_level: Counter[str] = field(default_factory=Counter)
    by_event: Counter[str] = field(default_factory=Counter)
    by_actor: Counter[str] = field(default_factory=Counter)
    times_s: array[float] = field(default_factory=lambda: array("d"))

    def add(self, line: LogLine) -> None:
        self.total += 1
        self.by_level[line.level.lower() or "-"] += 1
        self.by_event[line.event or "-"] += 1
        self.by_actor[line.actor or "-"] += 1
        if line.time_s is not None:
            self.times_s.append(line.time_s)

    def add_all(self, lines: Iterable[LogLine]) -> LogStats:
        for line in lines:
            self.add(line)
        return self

    def levels_by_severity(self) -> list[tuple[str, int]]:
        """Level counts, most severe first; levels the runtime does not use last."""
        return sorted(self.by_level.items(), key=lambda item: -level_rank(item[0]))

    def histogram(self, *, max_buckets: int = 30) -> Histogram | None:
        """Lines per bucket of the finest width that needs at most ``max_buckets``; None
        when no line had a time."""
        if not self.times_s:
            return None
        first_s, last_s = min(self.times_s), max(self.times_s)
        width_s, name = next(
            (
                (width_s, name)
                for width_s, name in _BUCKETS_S
                if math.floor(last_s / width_s) - math.floor(first_s / width_s) < max_buckets
            ),
            _BUCKETS_S[-1],
        )
        origin = math.floor(first_s / width_s)
        counts = [0] * (math.floor(last_s / width_s) - origin + 1)
        for time_s in self.times_s:
            counts[math.floor(time_s / width_s) - origin] += 1
        return Histogram(width_s, name, float(origin * width_s), counts)

    def as_record(self) -> dict[str, Any]:
        """The statistics as a JSON-ready dict (``--stats --json``)."""
        histogram = self.histogram()
        return {
            "lines": self.total,
            "first": _iso(min(self.times_s)) if self.times_s else None,
            "last": _iso(max(self.times_s)) if self.times_s else None,
            "by_level": dict(self.levels_by_severity()),
            "by_actor": dict(self.by_actor.most_common()),
            "by_event": dict(self.by_event.most_common()),
            "histogram": histogram.as_record() if histogram is not None else None,
        }


def _iso(time_s: float) -> str:
    seconds, millis = divmod(round(time_s * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def render_stats(
    stats: LogStats, *, color: bool = False, bar: str = "█", top: int = 15, width: int = 40
) -> str:
    """The statistics as text: totals, the ``top`` events and actors, a bar chart."""
    if stats.total == 0:
        return "no lines"
    rows = [_paint(f"{stats.total} line{'s' * (stats.total != 1)}", _BOLD, color)]
    if stats.times_s:
        rows[0] += f" from {_iso(min(stats.times_s))} to {_iso(max(stats.times_s))}"
    rows += _table("by level", stats.levels_by_severity(), top, color)
    rows += _table("by actor", stats.by_actor.most_common(), top, color)
    rows += _table("by event", stats.by_event.most_common(), top, color)
    histogram = stats.histogram()
    if histogram is not None:
        rows += _chart(histogram, bar=bar, width=width, color=color)
    return "\n".join(rows)


def _table(title: str, counts: list[tuple[str, int]], top: int, color: bool) -> list[str]:
    shown = counts[:top]
    name_width = max(len(name) for name, _ in shown)
    count_width = len(str(max(count for _, count in shown)))
    rows = ["", _paint(f"{title}:", _BOLD, color)]
    for name, count in shown:
        style = _LEVEL_STYLES.get(level_rank(name), "") if title == "by level" else ""
        rows.append(f"  {_paint(f'{name:<{name_width}}', style, color)}  {count:>{count_width}}")
    if len(counts) > top:
        rest = sum(count for _, count in counts[top:])
        rows.append(f"  ... {len(counts) - top} more ({rest} lines)")
    return rows


def _chart(histogram: Histogram, *, bar: str, width: int, color: bool) -> list[str]:
    label_format = _label_format(histogram)
    peak = max(histogram.counts)
    count_width = len(str(peak))
    rows = ["", _paint(f"lines per {histogram.name}:", _BOLD, color)]
    for index, count in enumerate(histogram.counts):
        start = time.gmtime(histogram.start_s + index * histogram.width_s)
        length = math.ceil(count * width / peak) if count else 0
        bars = _paint(bar * length, _CYAN, color)
        rows.append(f"  {time.strftime(label_format, start)}  {count:>{count_width}} {bars}")
    return rows


def _label_format(histogram: Histogram) -> str:
    span_s = histogram.width_s * len(histogram.counts)
    if histogram.width_s >= 86400:
        return "%Y-%m-%d"
    clock = "%H:%M:%S" if histogram.width_s < 60 else "%H:%M"
    return f"%m-%d {clock}" if span_s > 86400 else clock
