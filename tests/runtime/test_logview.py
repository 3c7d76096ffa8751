"""The log reader's parts: parsing lines, the query and its options, rendering and statistics,
and the files (rotated siblings, gzip, following a file through a rotation or truncation)."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime.logfiles import Tail, follow_lines, is_gzip, log_files, read_lines
from runtime.logrender import LogStats, format_line, format_offset, render_stats
from runtime.logview import (
    FieldFilter,
    LineParser,
    LogLine,
    LogQuery,
    field_text,
    in_time_order,
    level_rank,
    make_query,
    parse_field_filter,
    parse_level,
    parse_time,
    parse_timestamp,
)

START_S = 1_800_000_000.0  # 2027-01-15T08:00:00Z
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def raw(**fields: Any) -> bytes:
    """A JSON log line with a timestamp, level, event and actor unless given."""
    head = {"timestamp": "2027-01-15T08:00:00.000Z", "level": "info", "event": "e",
            "actor": "runtime"}  # fmt: skip
    return msgspec.json.encode(head | fields) + b"\n"


def line(**fields: Any) -> LogLine:
    parsed = LineParser().parse(raw(**fields))
    assert parsed is not None
    return parsed


def at(offset_s: float, **fields: Any) -> LogLine:
    """A line ``offset_s`` after START_S (to the millisecond)."""
    seconds, millis = divmod(round(offset_s * 1000), 1000)
    minutes, seconds = divmod(seconds, 60)
    return line(timestamp=f"2027-01-15T08:{minutes:02d}:{seconds:02d}.{millis:03d}Z", **fields)


# -- parsing lines ----------------------------------------------------------------------------


def test_parse_keeps_the_raw_text_fields_and_time() -> None:
    """A JSON object becomes a LogLine: its text without the newline, its fields, its time."""
    parser = LineParser()
    parsed = parser.parse(
        b'{"timestamp":"2027-01-15T08:00:01.500Z","level":"warning",'
        b'"event":"slow","actor":"cache","task_id":7}\r\n'
    )
    assert parsed is not None
    assert parsed.raw.endswith('"task_id":7}')
    assert (parsed.level, parsed.event, parsed.actor) == ("warning", "slow", "cache")
    assert parsed.time_s == START_S + 1.5
    assert parser.skipped == 0


@pytest.mark.parametrize(
    "text",
    [b"Traceback (most recent call last):\n", b'{"timestamp": "2027-01\n', b"[1, 2]\n",
     b"42\n", b'"event"\n', b'{"event": "caf\xe9"}\n'],
    ids=["text", "truncated", "array", "number", "string", "not-utf8"],
)  # fmt: skip
def test_parse_skips_and_counts_what_is_not_a_json_object(text: bytes) -> None:
    """Stray text, a cut line, JSON that is not an object, bad UTF-8: None, counted."""
    parser = LineParser()
    assert parser.parse(text) is None
    assert parser.skipped == 1


def test_parse_all_ignores_blank_lines_without_counting() -> None:
    """Blank lines are not log lines and not errors either."""
    parser = LineParser()
    lines = list(parser.parse_all([raw(event="a"), b"\n", b"  \n", b"oops\n", raw(event="b")]))
    assert [parsed.event for parsed in lines] == ["a", "b"]
    assert parser.skipped == 1


def test_missing_head_fields_read_as_empty() -> None:
    """A line without level, event or actor has empty ones; a non-string level is its text."""
    parsed = LineParser().parse(b'{"level": 30}')
    assert parsed is not None
    assert (parsed.level, parsed.event, parsed.actor, parsed.time_s) == ("30", "", "", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-01-15T08:00:00.250Z", START_S + 0.25),
        ("2027-01-15T10:00:00+02:00", START_S),
        ("2027-01-15T08:00:00", START_S),  # no offset: UTC
        ("2027-01-15", START_S - 8 * 3600),
        ("yesterday", None),
        (1_800_000_000, None),
        (None, None),
    ],
)
def test_parse_timestamp(value: object, expected: float | None) -> None:
    """ISO-8601 with Z, an offset or none (UTC); anything else is None."""
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [("voice", "voice"), (42, "42"), (12.5, "12.5"), (True, "true"), (None, "null"),
     ({"a": [1, "x"]}, '{"a":[1,"x"]}')],
)  # fmt: skip
def test_field_text_is_the_json_form_with_strings_bare(value: object, text: str) -> None:
    """A field's text is how the JSON line writes it, strings without quotes."""
    assert field_text(value) == text


def test_in_time_order_is_stable_and_puts_untimed_lines_first() -> None:
    """Sorted by time; equal times keep their order; lines without a time come first."""
    lines = [at(2, event="c"), at(1, event="a"), line(timestamp="?", event="x"),
             at(1, event="b")]  # fmt: skip
    assert [parsed.event for parsed in in_time_order(lines)] == ["x", "a", "b", "c"]


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rank"),
    [("debug", 10), ("INFO", 20), ("warn", 30), ("warning", 30), ("exception", 40),
     ("error", 40), ("fatal", 50), ("critical", 50)],
)  # fmt: skip
def test_levels_and_their_aliases(text: str, rank: int) -> None:
    """Levels rank by severity, any case; warn, exception and fatal are aliases."""
    assert parse_level(text) == rank == level_rank(text)


def test_unknown_level_is_refused_with_the_choices() -> None:
    """An unknown --level raises ValueError listing the levels; a line's unknown level is 0."""
    with pytest.raises(
        ValueError,
        match=r"--level must be one of debug, info, warning, "
        r"error, critical; got 'verbose'",
    ):
        parse_level("verbose")
    assert level_rank("verbose") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", START_S - 600),
        ("2h", START_S - 7200),
        ("1h30m", START_S - 5400),
        ("250ms", START_S - 0.25),
        ("1d", START_S - 86400),
        ("now", START_S),
        ("2027-01-14", START_S - 32 * 3600),
        ("2027-01-15T07:30:00Z", START_S - 1800),
        ("2027-01-15t07:30z", START_S - 1800),
        ("2027-01-15 09:30+02:00", START_S - 1800),
        ("07:30", START_S - 1800),  # a time of day: today (UTC)
        ("07:59:59.5", START_S - 0.5),
    ],
)
def test_parse_time_forms(text: str, expected: float) -> None:
    """Durations count back from now; ISO dates and times; a time of day is today's."""
    assert parse_time(text, now_s=START_S + 0.0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "10", "-5m", "10x", "5 m", "25:00", "2027-13"])
def test_parse_time_refuses_what_it_cannot_read(text: str) -> None:
    """Anything else raises ValueError naming the option and the text, with examples."""
    with pytest.raises(
        ValueError,
        match=rf"^--until: cannot read {re.escape(repr(text))} as a "
        r"time; use a duration before now such as 10m",
    ):
        parse_time(text, now_s=START_S, option="--until")


def test_parse_field_filter_exact_and_regex() -> None:
    """key=value is exact (the value may hold '='); key~=regex compiles the regex."""
    assert parse_field_filter("query=a=b") == FieldFilter("query", value="a=b")
    assert parse_field_filter(" plugin =") == FieldFilter("plugin", value="")
    found = parse_field_filter("plugin~=^wea")
    assert (found.key, found.value) == ("plugin", None)
    assert found.pattern is not None and found.pattern.pattern == "^wea"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task_id", "-f: expected key=value or key~=regex; got 'task_id'"),
        ("=42", "-f: the field name is empty in '=42'; write e.g. task_class=voice"),
        ("~=x", "-f: the field name is empty in '~=x'"),
        ("plugin~=[", "-f: bad regex '[' for 'plugin': unterminated character set"),
    ],
)
def test_parse_field_filter_refuses_bad_filters(text: str, message: str) -> None:
    """No '=', an empty key or a bad regex raise ValueError saying which."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_field_filter(text)


def test_field_filter_matches_the_text_of_a_field() -> None:
    """Exact on the JSON text (42, true, 12.5), regex search, a.b into nested objects; a
    missing field never matches."""
    fields = {"task_id": 42, "ok": True, "late_ms": 12.5, "plugin": "weather",
              "limits": {"rate": 2}, "a.b": "dotted"}  # fmt: skip
    assert FieldFilter("task_id", value="42").matches(fields)
    assert not FieldFilter("task_id", value="4").matches(fields)
    assert FieldFilter("ok", value="true").matches(fields)
    assert FieldFilter("late_ms", value="12.5").matches(fields)
    assert parse_field_filter("plugin~=ath").matches(fields)
    assert not parse_field_filter("plugin~=^ath").matches(fields)
    assert FieldFilter("limits.rate", value="2").matches(fields)
    assert FieldFilter("a.b", value="dotted").matches(fields)
    assert not FieldFilter("limits.burst", value="2").matches(fields)
    assert not FieldFilter("ok.x", value="2").matches(fields)
    assert not FieldFilter("missing", value="").matches(fields)


# -- the query --------------------------------------------------------------------------------


def test_query_level_actor_event_and_fields() -> None:
    """Level and above; any of the actors; any event substring, any case; all fields."""
    query = make_query(now_s=START_S, level="warning", actors=["cache", "quota"],
                       events=["Miss", "throttle"], fields=["namespace=response"])  # fmt: skip
    assert query.matches(line(level="error", actor="cache", event="cache MISS",
                              namespace="response"))  # fmt: skip
    assert not query.matches(line(level="info", actor="cache", event="cache miss",
                                  namespace="response"))  # fmt: skip
    assert not query.matches(line(level="error", actor="sampler", event="cache miss",
                                  namespace="response"))  # fmt: skip
    assert not query.matches(line(level="error", actor="cache", event="cache hit",
                                  namespace="response"))  # fmt: skip
    assert not query.matches(line(level="error", actor="cache", event="cache miss"))


def test_query_time_range_is_inclusive_and_excludes_untimed_lines() -> None:
    """since <= time <= until; a line without a time is outside any range, inside none."""
    query = make_query(now_s=START_S + 100, since="2027-01-15T08:00:10Z", until="1m")
    assert [query.matches(at(s)) for s in (9.999, 10, 40, 40.001)] == [False, True, True, False]
    assert not query.matches(line(timestamp="bad"))
    assert LogQuery().matches(line(timestamp="bad"))


def test_query_trace_matches_task_trace_and_request_ids_exactly() -> None:
    """--trace 42 matches task_id 42 (int or str), trace_id or request_id '42', not 420."""
    query = make_query(now_s=START_S, trace="42")
    assert query.matches(line(task_id=42))
    assert query.matches(line(task_id="42"))
    assert query.matches(line(trace_id="42"))
    assert query.matches(line(request_id=42))
    assert not query.matches(line(task_id=420))
    assert not query.matches(line(parent="42"))


def test_make_query_refuses_since_after_until() -> None:
    """A range that ends before it starts is a mistake: ValueError, swap them."""
    with pytest.raises(ValueError, match=r"--since '5m' is after --until '10m'; swap them"):
        make_query(now_s=START_S, since="5m", until="10m")


# -- rendering --------------------------------------------------------------------------------


def test_format_line_plain() -> None:
    """TIMESTAMP LEVEL ACTOR EVENT then key=value, quoting strings that would be ambiguous."""
    text = format_line(line(level="warning", actor="quota", event="plugin throttled",
                            plugin="weather", reason="rate limit", empty="", n=3,
                            ok=False, limits={"rate": 2}))  # fmt: skip
    assert text == (
        "2027-01-15T08:00:00.000Z WARNING  quota        plugin throttled  plugin=weather "
        'reason="rate limit" empty="" n=3 ok=false limits={"rate":2}'
    )


def test_format_line_puts_multi_line_values_below_and_an_offset_when_asked() -> None:
    """A traceback follows the line, indented; start_s adds the time since it."""
    text = format_line(at(1.25, exception="Traceback:\n  x\nValueError: bad"), start_s=START_S)
    assert text.splitlines() == [
        "2027-01-15T08:00:01.250Z +1.250s INFO     runtime      e",
        "exception:",
        "    Traceback:",
        "      x",
        "    ValueError: bad",
    ]
    assert format_offset(None, START_S) == "+?"


def test_format_line_colors_only_when_asked() -> None:
    """color=True adds ANSI styles (red for errors); stripped, it is the plain text."""
    parsed = line(level="error", task_id=1)
    colored = format_line(parsed, color=True)
    assert "\x1b[31mERROR" in colored
    assert ANSI.sub("", colored) == format_line(parsed)
    assert not ANSI.search(format_line(parsed))


def test_format_line_without_head_fields() -> None:
    """A line with no timestamp, level or actor shows dashes, not a crash."""
    parsed = LineParser().parse(b'{"event": "bare"}')
    assert parsed is not None
    assert format_line(parsed) == "- -        -            bare"


# -- statistics -------------------------------------------------------------------------------


def test_stats_count_by_level_event_and_actor() -> None:
    """Counts per level (most severe first, unknown last), event and actor."""
    stats = LogStats().add_all([
        at(0, level="info", actor="cache", event="hit"),
        at(1, level="error", actor="cache", event="miss"),
        at(2, level="info", actor="sampler", event="hit"),
        at(3, level="trace", actor="sampler", event="hit"),
    ])  # fmt: skip
    assert stats.total == 4
    assert stats.levels_by_severity() == [("error", 1), ("info", 2), ("trace", 1)]
    assert stats.by_event == {"hit": 3, "miss": 1}
    assert stats.by_actor == {"cache": 2, "sampler": 2}


@pytest.mark.parametrize(
    ("offsets_s", "width_s", "counts"),
    [
        ([0, 0.5, 2], 1, [2, 0, 1]),
        ([0, 95], 10, [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ([0, 30, 61, 900], 60, [2, 1, *[0] * 13, 1]),
        ([0, 3600 * 10], 3600, [1, *[0] * 9, 1]),
        ([0, 86400 * 3], 21600, [1, *[0] * 11, 1]),
        ([0, 86400 * 200], 604800, [1, *[0] * 27, 1]),
    ],
)
def test_histogram_picks_the_finest_bucket_that_fits(
    offsets_s: list[float], width_s: int, counts: list[int]
) -> None:
    """The finest width with at most 30 buckets; empty buckets are kept, as gaps."""
    histogram = LogStats().add_all(at(0) for _ in ()).histogram()
    assert histogram is None
    stats = LogStats()
    for offset_s in offsets_s:
        stats.times_s.append(START_S + offset_s)
    histogram = stats.histogram()
    assert histogram is not None
    assert (histogram.width_s, histogram.counts) == (width_s, counts)
    assert histogram.start_s <= START_S < histogram.start_s + width_s


def test_render_stats_tables_top_and_chart() -> None:
    """Totals, tables cut at ``top`` with the rest summed, and bars scaled to the peak."""
    stats = LogStats().add_all(
        [at(0, event="a")] * 4 + [at(1, event="b")] * 2 + [at(3, event="c"), at(3, event="d")]
    )
    text = render_stats(stats, top=2, width=8, bar="#")
    assert text.splitlines() == [
        "8 lines from 2027-01-15T08:00:00.000Z to 2027-01-15T08:00:03.000Z",
        "", "by level:", "  info  8",
        "", "by actor:", "  runtime  8",
        "", "by event:", "  a  4", "  b  2", "  ... 2 more (2 lines)",
        "", "lines per second:",
        "  08:00:00  4 ########", "  08:00:01  2 ####", "  08:00:02  0 ", "  08:00:03  2 ####",
    ]  # fmt: skip
    assert render_stats(LogStats()) == "no lines"


def test_render_stats_without_times_has_no_chart() -> None:
    """Lines with no timestamp are counted; there is no time range and no chart."""
    stats = LogStats().add_all([line(timestamp="?")])
    assert render_stats(stats).splitlines()[0] == "1 line"
    assert "lines per" not in render_stats(stats)
    assert stats.as_record()["histogram"] is None


def test_stats_as_record() -> None:
    """The JSON form: totals, first and last, counts most common first, the histogram."""
    stats = LogStats().add_all([at(0, level="error"), at(61), at(62)])
    assert stats.as_record() == {
        "lines": 3,
        "first": "2027-01-15T08:00:00.000Z",
        "last": "2027-01-15T08:01:02.000Z",
        "by_level": {"error": 1, "info": 2},
        "by_actor": {"runtime": 3},
        "by_event": {"e": 3},
        "histogram": {"bucket_s": 10, "start": "2027-01-15T08:00:00.000Z",
                      "counts": [1, 0, 0, 0, 0, 0, 2]},
    }  # fmt: skip


# -- files ------------------------------------------------------------------------------------


def touch(path: Path, data: bytes = b"") -> Path:
    path.write_bytes(data)
    return path


def test_log_files_lists_rotated_siblings_oldest_first(tmp_path: Path) -> None:
    """NAME.N and NAME.N.gz by N descending (gz first on a tie), NAME last; others ignored."""
    base = touch(tmp_path / "runtime.jsonl")
    for name in [
        "runtime.jsonl.1",
        "runtime.jsonl.10.gz",
        "runtime.jsonl.2",
        "runtime.jsonl.2.gz",
        "runtime.jsonl.bak",
        "other.jsonl.1",
        "runtime.jsonl.1.zip",
    ]:
        touch(tmp_path / name)
    (tmp_path / "runtime.jsonl.3").mkdir()
    assert [p.name for p in log_files(base)] == [
        "runtime.jsonl.10.gz", "runtime.jsonl.2.gz", "runtime.jsonl.2", "runtime.jsonl.1",
        "runtime.jsonl",
    ]  # fmt: skip
    assert log_files(base, rotated=False) == [base]


def test_log_files_refuses_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    """A missing path: FileNotFoundError; a directory: IsADirectoryError; both name it."""
    with pytest.raises(FileNotFoundError, match=r"log file '.*nope' not found"):
        log_files(tmp_path / "nope")
    with pytest.raises(IsADirectoryError, match="is a directory, not a file"):
        log_files(tmp_path)


def test_read_lines_plain_and_gzip_by_magic_bytes(tmp_path: Path) -> None:
    """A gzip file is read through gzip whatever its name; a last line may lack a newline."""
    plain = touch(tmp_path / "a.gz", b"one\ntwo")
    packed = touch(tmp_path / "b.log", gzip.compress(b"three\nfour\n"))
    assert (is_gzip(plain), is_gzip(packed)) == (False, True)
    assert list(read_lines(plain)) == [b"one\n", b"two"]
    assert list(read_lines(packed)) == [b"three\n", b"four\n"]


def test_read_lines_raises_on_a_damaged_archive(tmp_path: Path) -> None:
    """A corrupt header raises BadGzipFile (an OSError); a truncated archive EOFError."""
    data = gzip.compress(b"x\n" * 1000)
    with pytest.raises(gzip.BadGzipFile):
        list(read_lines(touch(tmp_path / "bad", data[:2] + b"\x00" + data[3:])))
    with pytest.raises(EOFError):
        list(read_lines(touch(tmp_path / "cut", data[: len(data) // 2])))


class Appender:
    """Writes to a log file the way a logger does, and rotates it the way runtime.logging does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, data: bytes) -> None:
        with self.path.open("ab") as file:
            file.write(data)

    def rotate(self) -> None:
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))


def test_tail_starts_at_the_end_or_the_start(tmp_path: Path) -> None:
    """By default a Tail skips what is there; from_start reads it."""
    path = touch(tmp_path / "log", b"old\n")
    tail, whole = Tail(path), Tail(path, from_start=True)
    Appender(path).write(b"new\n")
    assert (list(tail.read_new()), list(whole.read_new())) == ([b"new\n"], [b"old\n", b"new\n"])
    assert list(tail.read_new()) == []
    tail.close()
    whole.close()


def test_tail_waits_for_the_end_of_a_line(tmp_path: Path) -> None:
    """A line still being written is held back until its newline comes."""
    path = touch(tmp_path / "log")
    log, tail = Appender(path), Tail(path)
    log.write(b'{"event": "ha')
    assert list(tail.read_new()) == []
    log.write(b'lf"}\n{"event"')
    assert list(tail.read_new()) == [b'{"event": "half"}\n']
    tail.close()


def test_tail_follows_a_rotation(tmp_path: Path) -> None:
    """Renamed away: the rest of the old file first, then the new file from its start; while
    the new file does not exist yet, it keeps reading the old one."""
    path = touch(tmp_path / "log")
    log, tail = Appender(path), Tail(path)
    log.write(b"1\n")
    log.rotate()
    assert list(tail.read_new()) == [b"1\n"]
    with (tmp_path / "log.1").open("ab") as old:
        old.write(b"2\n")  # the writer still had the old file open
    assert list(tail.read_new()) == [b"2\n"]
    log.write(b"3\n")
    assert list(tail.read_new()) == [b"3\n"]
    log.write(b"4\n")
    assert list(tail.read_new()) == [b"4\n"]
    tail.close()


def test_tail_hands_over_a_partial_line_left_in_a_rotated_file(tmp_path: Path) -> None:
    """An old file that ended without a newline: that last piece is passed on, not lost."""
    path = touch(tmp_path / "log")
    log, tail = Appender(path), Tail(path)
    log.write(b"whole\ncut")
    log.rotate()
    log.write(b"next\n")
    assert list(tail.read_new()) == [b"whole\n", b"cut", b"next\n"]
    tail.close()


def test_tail_restarts_after_a_truncation(tmp_path: Path) -> None:
    """A file cut short in place is read again from its start."""
    path = touch(tmp_path / "log")
    log, tail = Appender(path), Tail(path)
    log.write(b"a long first line\n")
    assert list(tail.read_new()) == [b"a long first line\n"]
    path.write_bytes(b"b\n")
    assert list(tail.read_new()) == [b"b\n"]
    tail.close()


def test_follow_lines_polls_with_the_injected_sleep(tmp_path: Path) -> None:
    """follow_lines reads, then sleeps interval_s between reads, max_polls times."""
    path = touch(tmp_path / "log")
    log = Appender(path)
    slept: list[float] = []

    def sleep(interval_s: float) -> None:
        slept.append(interval_s)
        log.write(f"{len(slept)}\n".encode())

    tail = Tail(path)
    log.write(b"0\n")
    lines = list(follow_lines(tail, sleep=sleep, interval_s=0.5, max_polls=3))
    assert lines == [b"0\n", b"1\n", b"2\n", b"3\n"]
    assert slept == [0.5, 0.5, 0.5]
    tail.close()


def test_follow_lines_stops_when_sleep_raises(tmp_path: Path) -> None:
    """Ctrl-C during the sleep ends the iteration with KeyboardInterrupt, for the caller."""
    path = touch(tmp_path / "log")

    def interrupted(_interval_s: float) -> None:
        raise KeyboardInterrupt

    tail = Tail(path)
    with pytest.raises(KeyboardInterrupt):
        list(follow_lines(tail, sleep=interrupted))
    tail.close()


def test_stats_times_round_to_the_millisecond_across_a_second() -> None:
    """A time 0.4 ms before a second reads as that second, not the one before."""
    stats = LogStats()
    stats.times_s.append(START_S + 0.9996)
    assert stats.as_record()["first"] == "2027-01-15T08:00:01.000Z"
