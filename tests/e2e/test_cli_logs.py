"""`jarvis-runtime logs` on real log files written by runtime.logging: filters, trace, stats,
follow across a rotation, rotated and gzip files, and every bad input (exit 2, no traceback)."""

from __future__ import annotations

import gzip
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from runtime.cli import main
from runtime.clock import FakeClock
from runtime.logcmd import parse_logs_args, run_logs
from runtime.logging import configure_logging, get_logger, reset_logging

ROOT = Path(__file__).resolve().parents[2]
START_S = 1_800_000_000.0  # 2027-01-15T08:00:00Z
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The story the sample log tells: (seconds after START_S, actor, level, event, context).
STORY: list[tuple[float, str, str, str, dict[str, Any]]] = [
    (0.0, "runtime", "info", "runtime started", {}),
    (1.0, "supervisor", "info", "child started", {"child": "scheduler"}),
    (2.0, "sampler", "debug", "sample taken", {"cpu_percent": 12.5}),
    (5.0, "scheduler", "info", "task queued", {"task_id": 42, "task_class": "voice"}),
    (5.01, "scheduler", "info", "task started", {"task_id": 42, "task_class": "voice"}),
    (5.02, "cache", "info", "cache miss", {"task_id": 42, "namespace": "response"}),
    (5.1, "quota", "warning", "plugin throttled",
     {"task_id": 42, "plugin": "weather", "limits": {"rate": 2, "burst": 4}}),
    (5.25, "scheduler", "error", "deadline missed",
     {"task_id": 42, "task_class": "voice", "late_ms": 50.0}),
    (6.0, "scheduler", "info", "task queued", {"task_id": 420, "task_class": "background"}),
    (60.0, "sampler", "debug", "sample taken", {"cpu_percent": 40.0}),
    (120.0, "supervisor", "error", "actor crashed", {"child": "cache"}),
    (121.0, "supervisor", "warning", "actor restarted", {"child": "cache", "restarts": 1}),
    (300.0, "plugins", "info", "plugin call", {"plugin": "weather", "ok": True}),
    (600.0, "runtime", "info", "config reloaded", {"changed": ["sampler"]}),
    (900.0, "scheduler", "critical", "worker pool lost", {"pool": "process"}),
]  # fmt: skip
TASK_42 = ["task queued", "task started", "cache miss", "plugin throttled", "deadline missed"]
NOT_JSON = [b"Traceback (most recent call last):\n", b'{"timestamp": "2027-01-15T08:1\n']


@dataclass(frozen=True)
class Sample:
    """A log directory: ``path`` is the current file, ``files`` every file oldest first."""

    path: Path
    files: list[Path]

    def raw_lines(self) -> list[str]:
        """Every JSON line of every file, oldest first, as written."""
        lines: list[str] = []
        for file in self.files:
            data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
            lines += [line for line in data.decode().splitlines() if line.startswith('{"time')]
        return [line for line in lines if line.endswith("}")]


def log_story(path: Path, *, max_bytes: int = 700, backups: int = 20) -> None:
    """Write STORY with the real logging module on a fake clock (it rotates on the way)."""

    async def write() -> None:
        clock = FakeClock(wall_start=START_S)
        configure_logging(
            level="debug", file=path, console=False, max_bytes=max_bytes, backups=backups,
            clock=clock,
        )  # fmt: skip
        for offset_s, actor, level, event, context in STORY:
            await clock.advance_to(offset_s)
            log = get_logger(actor)
            if event == "actor crashed":
                try:
                    raise RuntimeError("cache tier failed")
                except RuntimeError:
                    log.exception(event, **context)
            else:
                getattr(log, level)(event, **context)

    try:
        anyio.run(write)
    finally:
        reset_logging()  # closes the sink: every line is on disk


def make_sample(directory: Path) -> Sample:
    """STORY in runtime.jsonl and its rotated files, the oldest gzipped, plus stray lines."""
    path = directory / "var" / "log" / "runtime.jsonl"
    log_story(path)
    rotated = sorted(path.parent.glob("runtime.jsonl.*"), key=lambda p: int(p.suffix[1:]))
    assert len(rotated) >= 3, "the sample must rotate a few times"
    oldest = rotated[-1]
    gzipped = oldest.with_name(oldest.name + ".gz")
    gzipped.write_bytes(gzip.compress(oldest.read_bytes()))
    oldest.unlink()
    with path.open("ab") as file:
        file.writelines(NOT_JSON)
    return Sample(path, [gzipped, *reversed(rotated[:-1]), path])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """One sample log shared by the tests that only read it."""
    return make_sample(tmp_path_factory.mktemp("logs"))


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see no JARVIS_RUNTIME__ variables from the developer's shell."""
    for name in [n for n in os.environ if n.startswith("JARVIS_RUNTIME__")]:
        monkeypatch.delenv(name)


def logs(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``jarvis-runtime logs ARGV`` in process: (exit code, stdout, stderr)."""
    code = main(["logs", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def events(out: str) -> list[str]:
    """The event of each output line (text output: after timestamp, level and actor)."""
    rows = [row for row in out.splitlines() if row.startswith("2027-")]
    return [re.split(r"\s{2,}", row.split(None, 3)[3])[0] for row in rows]


# -- reading the whole history ----------------------------------------------------------------


def test_reads_rotated_and_gzip_files_oldest_first(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default every file is read, the gzipped oldest first; stray lines are counted."""
    code, out, err = logs(capsys, str(sample.path))
    assert code == 0
    assert events(out) == [event for _, _, _, event, _ in STORY]
    assert err == "skipped 2 lines that are not JSON objects\n"


def test_no_rotated_reads_the_current_file_only(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-rotated shows only the newest lines: the tail of the story."""
    code, out, _ = logs(capsys, str(sample.path), "--no-rotated")
    shown = events(out)
    assert code == 0
    assert 0 < len(shown) < len(STORY)
    assert shown == [event for _, _, _, event, _ in STORY][-len(shown) :]


def test_json_prints_the_original_lines(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    """--json writes each matching line exactly as it is in the file."""
    code, out, _ = logs(capsys, str(sample.path), "--json")
    assert code == 0
    assert out.splitlines() == sample.raw_lines()
    assert len(out.splitlines()) == len(STORY)


def test_text_output_shows_fields_and_an_indented_traceback(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line reads TIMESTAMP LEVEL ACTOR EVENT key=value; a traceback follows, indented."""
    _, out, _ = logs(capsys, str(sample.path), "--event", "crashed")
    first, *rest = out.splitlines()
    assert re.fullmatch(
        r"2027-01-15T08:02:00\.000Z ERROR +supervisor +actor crashed  child=cache", first
    )
    assert rest[0] == "exception:"
    assert rest[-1] == "    RuntimeError: cache tier failed"


def test_color_only_when_asked(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a terminal: plain text; --color=always: ANSI colors; the text is the same."""
    _, plain, _ = logs(capsys, str(sample.path), "--level", "error")
    _, colored, _ = logs(capsys, str(sample.path), "--level", "error", "--color", "always")
    assert not ANSI.search(plain)
    assert "\x1b[31mERROR" in colored
    assert ANSI.sub("", colored) == plain


# -- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--level", "warning"],
         ["plugin throttled", "deadline missed", "actor crashed", "actor restarted",
          "worker pool lost"]),
        (["--level", "ERROR"], ["deadline missed", "actor crashed", "worker pool lost"]),
        (["--actor", "cache", "--actor", "quota"], ["cache miss", "plugin throttled"]),
        (["--event", "TASK"], ["task queued", "task started", "task queued"]),
        (["--event", "crash", "--event", "restart"], ["actor crashed", "actor restarted"]),
        (["-f", "task_class=background"], ["task queued"]),
        (["-f", "task_id=42", "-f", "task_class=voice"],
         ["task queued", "task started", "deadline missed"]),
        (["-f", "plugin~=^wea", "--level", "warning"], ["plugin throttled"]),
        (["-f", "late_ms=50.0"], ["deadline missed"]),
        (["-f", "ok=true"], ["plugin call"]),
        (["-f", "limits.rate=2"], ["plugin throttled"]),
        (["-f", "event=task queued", "--actor", "scheduler"], ["task queued", "task queued"]),
        (["--since", "2027-01-15T08:00:05.100Z", "--until", "2027-01-15T08:00:06Z"],
         ["plugin throttled", "deadline missed", "task queued"]),
        (["--since", "2027-01-15 08:05", "--level", "info"],
         ["plugin call", "config reloaded", "worker pool lost"]),
        (["--until", "2027-01-15T08:00:01"], ["runtime started", "child started"]),
        (["--since", "2027-01-16"], []),
    ],
)  # fmt: skip
def test_filters(
    sample: Sample, capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]
) -> None:
    """Level and above, actors (any), event substrings (any), fields (all), a time range."""
    code, out, _ = logs(capsys, str(sample.path), *argv)
    assert code == 0
    assert events(out) == expected


def test_since_a_duration_counts_back_from_now(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since 10m and --until 2m are relative to the clock run_logs is given."""
    args = parse_logs_args([str(sample.path), "--since", "10m", "--until", "2m"])
    assert run_logs(args, now_s=lambda: START_S + 1000) == 0  # lines from 400 s to 880 s
    assert events(capsys.readouterr().out) == ["config reloaded"]


# -- one task's story -------------------------------------------------------------------------


def test_trace_tells_one_tasks_story_across_files_and_actors(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trace 42: its lines in time order, offsets from its first line, and a summary;
    task 420 is another task."""
    code, out, _ = logs(capsys, str(sample.path), "--trace", "42")
    *rows, summary = out.splitlines()
    assert code == 0
    assert [re.split(r"\s{2,}", row.split(None, 4)[4])[0] for row in rows] == TASK_42
    assert [row.split()[1] for row in rows] == [
        "+0.000s",
        "+0.010s",
        "+0.020s",
        "+0.100s",
        "+0.250s",
    ]
    assert summary == "trace 42: 5 lines from 3 actors (cache, quota, scheduler) over 0.250 s"


def test_trace_reads_lines_out_of_order_into_time_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lines of one task written out of order (two processes, one file) come out sorted."""
    path = tmp_path / "runtime.jsonl"
    log_story(path, max_bytes=10_000_000)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(reversed(lines)))
    code, out, _ = logs(capsys, str(path), "--trace", "42", "--json")
    assert code == 0
    assert [msgspec.json.decode(row)["event"] for row in out.splitlines()] == TASK_42


def test_trace_with_no_lines_says_so(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    """An id no line carries: nothing on stdout, a note naming the fields, exit 0."""
    code, out, err = logs(capsys, str(sample.path), "--trace", "4")
    assert (code, out) == (0, "")
    assert "no lines with task_id, trace_id, request_id = '4'\n" in err


# -- statistics -------------------------------------------------------------------------------


def test_stats_counts_by_level_actor_event_with_a_histogram(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    """--stats: the totals, counts by level (most severe first), actor and event, and a chart
    of lines per minute over the 15 minutes of the story."""
    code, out, _ = logs(capsys, str(sample.path), "--stats")
    assert code == 0
    assert out.startswith("15 lines from 2027-01-15T08:00:00.000Z to 2027-01-15T08:15:00.000Z\n")
    assert (
        "by level:\n  critical  1\n  error     2\n  warning   2\n  info      8\n  debug     2\n"
    ) in out
    assert "  scheduler   5\n" in out
    assert "  task queued       2\n" in out
    chart = out.split("lines per minute:\n")[1].splitlines()
    assert len(chart) == 16
    assert chart[0] == "  08:00  9 " + "█" * 40
    assert chart[1] == "  08:01  1 " + "█" * 5
    assert chart[3] == "  08:03  0 "


def test_stats_json_and_filters(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    """--stats --json is one JSON object; the filters apply before counting."""
    code, out, _ = logs(capsys, str(sample.path), "--stats", "--json", "--actor", "scheduler")
    stats = msgspec.json.decode(out)
    assert code == 0
    assert stats["lines"] == 5
    assert stats["by_level"] == {"critical": 1, "error": 1, "info": 3}
    assert stats["by_event"]["task queued"] == 2
    assert sum(stats["histogram"]["counts"]) == 5


def test_stats_with_nothing_matching(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    """No line matches: 'no lines', exit 0."""
    assert logs(capsys, str(sample.path), "--stats", "--actor", "nobody")[:2] == (0, "no lines\n")


# -- which file -------------------------------------------------------------------------------


def test_file_comes_from_the_configs_logging_file(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without FILE, --config's logging.file is read."""
    config = tmp_path / "c.yaml"
    config.write_text(f"logging: {{file: {sample.path}}}\n")
    code, out, _ = logs(capsys, "--config", str(config), "--level", "critical")
    assert (code, events(out)) == (0, ["worker pool lost"])


def test_file_comes_from_config_yaml_in_the_working_directory(
    sample: Sample,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without FILE or --config, ./config.yaml names the log."""
    (tmp_path / "config.yaml").write_text(f"logging: {{file: {sample.path}}}\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = logs(capsys, "--level", "critical")
    assert (code, events(out)) == (0, ["worker pool lost"])


def test_file_defaults_to_var_log_runtime_jsonl(
    sample: Sample, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without FILE and with no config.yaml here, var/log/runtime.jsonl is read."""
    monkeypatch.chdir(sample.path.parents[2])
    code, out, _ = logs(capsys, "--level", "critical")
    assert (code, events(out)) == (0, ["worker pool lost"])


# -- follow -----------------------------------------------------------------------------------


class Script:
    """A ``sleep`` for run_logs: each call runs the next step; then it is Ctrl-C."""

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)
        self.intervals_s: list[float] = []

    def __call__(self, interval_s: float) -> None:
        self.intervals_s.append(interval_s)
        if not self.steps:
            raise KeyboardInterrupt
        self.steps.pop(0)()


@pytest.fixture
def live_log(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], None]]]:
    """A log the real logging module is writing to (rotating every few lines) and a function
    that logs one event and waits until it is on disk."""
    path = tmp_path / "runtime.jsonl"
    sink = configure_logging(
        level="debug", file=path, console=False, max_bytes=400, backups=2,
        clock=FakeClock(wall_start=START_S),
    )  # fmt: skip
    log = get_logger("scheduler")

    def write(event: str) -> None:
        log.info(event, task_class="voice")
        assert sink.flush(timeout_s=10)

    try:
        yield path, write
    finally:
        reset_logging()


def write_many(write: Callable[[str], None], *names: str) -> Callable[[], None]:
    """A step that logs each of ``names``."""

    def step() -> None:
        for name in names:
            write(name)

    return step


def test_follow_prints_new_lines_across_rotations_until_ctrl_c(
    live_log: tuple[Path, Callable[[str], None]], capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow starts at the end, prints each new matching line once while the file rotates
    under it, and Ctrl-C ends it with exit 0."""
    path, write = live_log
    write_many(write, "old 1", "old 2")()
    batches = [[f"new {i}.{j}" for j in range(3)] for i in range(4)]
    script = Script(*(write_many(write, *batch) for batch in batches))
    args = parse_logs_args([str(path), "--follow"])
    assert run_logs(args, sleep=script) == 0
    out, err = capsys.readouterr()
    assert events(out) == [name for batch in batches for name in batch]
    assert len(list(path.parent.glob("runtime.jsonl.*"))) == 2, "it rotated meanwhile"
    assert script.intervals_s == [0.25] * 5
    assert err == ""


def test_follow_since_prints_the_history_first(
    live_log: tuple[Path, Callable[[str], None]], capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow --since: the matching history (rotated files too), then the new lines."""
    path, write = live_log
    write_many(write, *(f"old {i}" for i in range(6)))()
    assert (path.parent / "runtime.jsonl.1").exists()
    args = parse_logs_args([str(path), "--follow", "--since", "1h", "--json"])
    assert run_logs(args, now_s=lambda: START_S, sleep=Script(write_many(write, "new"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [msgspec.json.decode(line)["event"] for line in lines] == [
        *(f"old {i}" for i in range(6)),
        "new",
    ]


def test_follow_survives_a_truncation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With backups 0 the logging module starts the same file over; the follow goes on."""
    path = tmp_path / "runtime.jsonl"
    sink = configure_logging(
        level="info", file=path, console=False, max_bytes=300, backups=0,
        clock=FakeClock(wall_start=START_S),
    )  # fmt: skip
    log = get_logger("cache")
    try:

        def step(i: int) -> Callable[[], None]:
            def write() -> None:
                log.info(f"hit {i}", namespace="response")
                assert sink.flush(timeout_s=10)

            return write

        args = parse_logs_args([str(path), "--follow"])
        assert run_logs(args, sleep=Script(*(step(i) for i in range(8)))) == 0
    finally:
        reset_logging()
    assert events(capsys.readouterr().out) == [f"hit {i}" for i in range(8)]


# -- bad input: exit 2, a message, no traceback -----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "error: --since: cannot read 'yesterday' as a time; use a "
         "duration before now such as 10m, 2h or 1d, or an ISO time such as "
         "2027-01-15T08:30:00Z (UTC unless it has an offset)\n"),
        (["--until", "10x"], "error: --until: cannot read '10x' as a time"),
        (["--since", "2027-01-15T09:00Z", "--until", "2027-01-15T08:00Z"],
         "error: --since '2027-01-15T09:00Z' is after --until '2027-01-15T08:00Z'; swap them\n"),
        (["-f", "task_id"], "error: -f: expected key=value or key~=regex; got 'task_id'\n"),
        (["-f", "=42"], "error: -f: the field name is empty in '=42'"),
        (["-f", "plugin~=wea(ther"], "error: -f: bad regex 'wea(ther' for 'plugin': missing )"),
        (["--level", "loud"], "error: --level must be one of debug, info, warning, error, "
         "critical; got 'loud'\n"),
        (["--stats", "--follow"], "error: --stats counts a finished log; it cannot be "
         "combined with --follow\n"),
        (["--color", "sometimes"], "argument --color: invalid choice: 'sometimes'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)  # fmt: skip
def test_bad_options_exit_2(
    sample: Sample, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A bad option value: exit 2, a message naming the option and the value, no output."""
    code, out, err = logs(capsys, str(sample.path), *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FILE that does not exist: exit 2 and its name."""
    missing = tmp_path / "nope.jsonl"
    assert logs(capsys, str(missing)) == (2, "", f"error: log file {str(missing)!r} not found\n")


def test_missing_default_file_says_where_the_name_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No FILE, and config.yaml's logging.file does not exist: exit 2 naming both."""
    (tmp_path / "config.yaml").write_text("logging: {file: var/log/x.jsonl}\n")
    monkeypatch.chdir(tmp_path)
    assert logs(capsys) == (
        2, "", "error: log file 'var/log/x.jsonl' not found (logging.file in 'config.yaml'); "
        "pass FILE, or start the runtime\n",
    )  # fmt: skip


def test_a_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory as FILE: exit 2 and why."""
    assert logs(capsys, str(tmp_path)) == (
        2,
        "",
        f"error: log file {str(tmp_path)!r} is a directory, not a file\n",
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "error: --config: config file '{path}' not found\n"),
        ("logging: {level: loud}\n",
         "error: cannot read logging.file from '{path}':\n$.logging.level: "),
        ("logging: {file: null}\n",
         "error: '{path}' sets logging.file to null (no log file); pass FILE\n"),
    ],
)  # fmt: skip
def test_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str | None, message: str
) -> None:
    """--config missing, invalid, or with no log file: exit 2 and the reason."""
    path = tmp_path / "c.yaml"
    if config is not None:
        path.write_text(config)
    code, out, err = logs(capsys, "--config", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(message.format(path=path))


def test_follow_on_a_gzip_file_exits_2(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    """A gzip file does not grow: --follow on it is refused."""
    gz = sample.files[0]
    assert logs(capsys, str(gz), "--follow") == (
        2,
        "",
        f"error: --follow needs a plain file that grows; {str(gz)!r} is gzip\n",
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:2] + b"\x00" + data[3:], "Unknown compression method"),
        (lambda data: data[: len(data) // 2], "Compressed file ended before"),
    ],
    ids=["corrupt", "truncated"],
)
def test_a_damaged_gzip_file_exits_2(
    sample: Sample,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[bytes], bytes],
    reason: str,
) -> None:
    """A damaged archive among the files: exit 2 naming it and why."""
    path = tmp_path / "runtime.jsonl"
    path.write_bytes(sample.path.read_bytes())
    bad = tmp_path / "runtime.jsonl.1.gz"
    bad.write_bytes(damage(sample.files[0].read_bytes()))
    code, _, err = logs(capsys, str(path))
    assert code == 2
    assert err.startswith(f"error: cannot read {str(bad)!r}: {reason}")


def test_ctrl_c_while_reading_exits_130(
    sample: Sample, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during a long read (not a follow) stops quietly with the shell's 130."""

    def interrupted(path: Path) -> Iterator[bytes]:
        raise KeyboardInterrupt
        yield b""  # a generator, like the real one

    monkeypatch.setattr("runtime.logfiles.read_lines", interrupted)
    assert logs(capsys, str(sample.path)) == (130, "", "")


def test_help_lists_the_options_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """`logs --help` exits 0 and shows the examples."""
    code, out, _ = logs(capsys, "--help")
    assert code == 0
    assert "--trace ID" in out
    assert "jarvis-runtime logs --level error --since 10m" in out


# -- as a real process ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m runtime ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.slow
def test_subprocess_reads_and_fails_like_in_process(sample: Sample) -> None:
    """The entry point: errors of a file, and a missing file exits 2 with no traceback."""
    ok = run_cli("logs", str(sample.path), "--level", "error", "--json")
    assert ok.returncode == 0
    assert [msgspec.json.decode(line)["event"] for line in ok.stdout.splitlines()] == [
        "deadline missed",
        "actor crashed",
        "worker pool lost",
    ]
    missing = run_cli("logs", str(sample.path) + ".nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: log file") and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_subprocess_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`logs | head -1`: the reader goes away; no BrokenPipeError traceback, exit 0."""
    path = tmp_path / "runtime.jsonl"
    configure_logging(file=path, console=False)
    try:
        for i in range(3000):
            get_logger("sampler").info("sample taken", index=i)
    finally:
        reset_logging()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "logs", str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert b"sample taken" in proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()


@pytest.mark.slow
def test_subprocess_follow_stops_on_sigint(tmp_path: Path) -> None:
    """A real `logs --follow` prints an appended line and exits 0 on SIGINT.

    --since reads the file from its start, so the line shows whether it is appended before or
    after the follower opens the file."""
    path = tmp_path / "runtime.jsonl"
    path.write_bytes(b"")
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "runtime", "logs", str(path), "--follow", "--json",
         "--since", "2000-01-01"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = b'{"timestamp":"2027-01-15T08:00:00.000Z","level":"info","event":"hi"}\n'
        with path.open("ab") as file:
            file.write(line)
        assert proc.stdout.readline() == line  # blocks until the follower saw it
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (0, b"", b"")


class Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "colored"), [(False, True), (True, False)])
def test_color_auto_on_a_terminal_unless_no_color(
    sample: Sample, monkeypatch: pytest.MonkeyPatch, no_color: bool, colored: bool
) -> None:
    """--color=auto (the default) colors a terminal's output, unless NO_COLOR is set."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    assert main(["logs", str(sample.path), "--level", "critical"]) == 0
    assert bool(ANSI.search(terminal.getvalue())) is colored


def test_stats_bars_are_ascii_where_the_output_cannot_encode_blocks(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an ASCII-only stdout the histogram's bars are '#'."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["logs", str(sample.path), "--stats"]) == 0
    stdout.flush()
    text = stdout.buffer.getvalue().decode("ascii")
    assert "  08:00  9 " + "#" * 40 + "\n" in text
