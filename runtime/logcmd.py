"""``jarvis-runtime logs``: filter, follow, trace and count the runtime's JSON log.

FILE defaults to ``logging.file`` of the config (``--config``, else ``config.yaml`` when it
exists), else ``var/log/runtime.jsonl``. The whole history is read by default: the rotated
files (``FILE.N`` and ``FILE.N.gz``, oldest first), then FILE; ``--no-rotated`` reads FILE
alone. Lines that are not JSON objects are skipped and counted on stderr at the end.

``--follow`` prints lines as they are appended to FILE (across a rotation) until Ctrl-C; with
``--since`` it first prints the history since then. ``--trace ID`` prints one task's lines in
time order with the time since its first line. ``--stats`` counts instead of printing.

Exit codes: 0 (also when nothing matched, and on Ctrl-C while following), 2 for bad input: a
missing or unreadable file, a bad option value, an invalid config. This module only parses
options at import; the readers are imported when the command runs, so other commands start
fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from .logview import LineParser, LogLine, LogQuery

__all__ = [
    "DEFAULT_LOG_FILE",
    "FOLLOW_INTERVAL_S",
    "add_logs_command",
    "parse_logs_args",
    "run_logs",
]

DEFAULT_LOG_FILE = "var/log/runtime.jsonl"
DEFAULT_CONFIG = "config.yaml"
FOLLOW_INTERVAL_S = 0.25

_DESCRIPTION = f"""\
Read the runtime's JSON log: filter it, follow it, trace one task, count.

FILE defaults to logging.file of the config (--config, else {DEFAULT_CONFIG} when it exists),
else {DEFAULT_LOG_FILE}. The whole history is read: the rotated files (FILE.N, FILE.N.gz,
oldest first), then FILE; --no-rotated reads FILE alone. Times are UTC unless they carry an
offset. Lines that are not JSON objects are skipped and counted on stderr.
"""
_EXAMPLES = """examples:
  jarvis-runtime logs --level error --since 10m     errors of the last 10 minutes
  jarvis-runtime logs --trace 42                    task 42's story, across actors
  jarvis-runtime logs --stats --since 1h            counts and a histogram of the last hour
  jarvis-runtime logs -f task_class=voice -f 'plugin~=^weather' --follow
"""


def add_logs_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``logs`` to the command line's subcommands; it runs ``run_logs``."""
    parser = commands.add_parser(
        "logs",
        parents=[_arguments()],
        help="filter, follow, trace and count the JSON log",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command=run_logs)


def parse_logs_args(argv: list[str]) -> argparse.Namespace:
    """``logs``' options from ``argv`` (without the word ``logs``), for ``run_logs``."""
    parser = argparse.ArgumentParser(prog="jarvis-runtime logs", parents=[_arguments()])
    return parser.parse_args(argv)


def _arguments() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    add = options.add_argument
    add(
        "file",
        nargs="?",
        metavar="FILE",
        help=f"the log (default: logging.file, else {DEFAULT_LOG_FILE})",
    )
    add("--config", metavar="PATH", help=f"config whose logging.file to read ({DEFAULT_CONFIG})")
    add("--no-rotated", action="store_true", help="read FILE only, not FILE.1, FILE.2.gz, ...")
    _add_filters(options)
    add("--stats", action="store_true", help="counts by level, actor, event; a time histogram")
    add("--follow", action="store_true", help="print lines as they are appended, until Ctrl-C")
    add("--json", action="store_true", help="the original JSON lines (or the stats as JSON)")
    add(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="color the output (auto: on a terminal, unless NO_COLOR is set)",
    )
    return options


def _add_filters(options: argparse.ArgumentParser) -> None:
    add = options.add_argument
    add("--level", metavar="L", help="this level and above: debug, info, warning, error, critical")
    add("--actor", action="append", default=[], metavar="A", help="this actor (repeat: any)")
    add(
        "--event",
        action="append",
        default=[],
        metavar="E",
        help="event containing E, any case (repeat: any); exact: -f event=...",
    )
    add(
        "-f",
        "--field",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="field equal to VALUE, or KEY~=REGEX to search it; a.b for nested (repeat: all)",
    )
    add("--since", metavar="T", help="from T: 10m, 2h, 1d, 2027-01-15T08:30Z, 08:30 (UTC)")
    add("--until", metavar="T", help="up to T, same forms as --since")
    add("--trace", metavar="ID", help="one task's story: task_id, trace_id or request_id = ID")


def run_logs(
    args: argparse.Namespace,
    *,
    now_s: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``logs`` with parsed ``args``; ``now_s`` anchors relative times and ``sleep`` paces
    ``--follow`` (a test passes its own to drive the loop). Returns the exit code."""
    from .logview import make_query

    try:
        query = make_query(
            now_s=now_s(), level=args.level, actors=args.actor, events=args.event,
            fields=args.field, since=args.since, until=args.until, trace=args.trace,
        )  # fmt: skip
        files = _files(args)
    except (ValueError, OSError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    return _read(args, query, files, sleep)


def _read(
    args: argparse.Namespace,
    query: LogQuery,
    files: list[Path],
    sleep: Callable[[float], None],
) -> int:
    """Show what ``query`` selects from ``files``; the exit code."""
    from .logview import LineParser

    parser = LineParser()
    output = _Output(sys.stdout, args)
    try:
        _show(args, query, files, parser, output, sleep)
        output.finish(query)
    except KeyboardInterrupt:  # Ctrl-C while reading a long history
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:
        with contextlib.suppress(OSError):
            sys.stdout.flush()  # the lines read before the failure come before its message
        _say(f"error: {exc}")
        return EXIT_USAGE
    finally:
        if parser.skipped:
            _say(f"skipped {_count(parser.skipped, 'line')} that are not JSON objects")
    return EXIT_OK


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; on a closed pipe that would print a second error.
    with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# -- which files ------------------------------------------------------------------------------


def _files(args: argparse.Namespace) -> list[Path]:
    """The files to read, oldest first. Raises ``ValueError`` or ``OSError`` with a message."""
    from .logfiles import is_gzip, log_files

    if args.stats and args.follow:
        raise ValueError("--stats counts a finished log; it cannot be combined with --follow")
    path, origin = _log_path(args)
    try:
        files = log_files(path, rotated=not args.no_rotated)
    except FileNotFoundError as exc:
        if not origin:
            raise
        raise FileNotFoundError(f"{exc} ({origin}); pass FILE, or start the runtime") from None
    if args.follow and is_gzip(path):
        raise ValueError(f"--follow needs a plain file that grows; {str(path)!r} is gzip")
    return files


def _log_path(args: argparse.Namespace) -> tuple[Path, str]:
    """The log file and where its name came from (empty when FILE was given)."""
    if args.file is not None:
        return Path(args.file), ""
    config = args.config
    if config is None and Path(DEFAULT_CONFIG).is_file():
        config = DEFAULT_CONFIG
    if config is None:
        return Path(DEFAULT_LOG_FILE), "the default, as there is no config.yaml here"
    return Path(_configured_file(config)), f"logging.file in {config!r}"


def _configured_file(config_path: str) -> str:
    """``logging.file`` of the config at ``config_path``. Raises ``ValueError`` if it is
    missing, invalid or logs to no file."""
    from .config import load_config
    from .exceptions import ConfigError

    if not Path(config_path).is_file():
        raise ValueError(f"--config: config file {config_path!r} not found")
    try:
        file = load_config(config_path).logging.file
    except ConfigError as exc:
        problems = "\n".join(str(problem) for problem in exc.problems)
        raise ValueError(f"cannot read logging.file from {config_path!r}:\n{problems}") from None
    if file is None:
        raise ValueError(f"{config_path!r} sets logging.file to null (no log file); pass FILE")
    return file


# -- reading and showing ----------------------------------------------------------------------


def _records(files: Iterable[Path], parser: LineParser) -> Iterator[LogLine]:
    """Every record of ``files`` in order. Raises ``OSError`` naming a file it cannot read."""
    from .logfiles import read_lines

    for path in files:
        try:
            yield from parser.parse_all(read_lines(path))
        except (OSError, EOFError) as exc:
            raise OSError(f"cannot read {str(path)!r}: {exc}") from exc


def _show(
    args: argparse.Namespace,
    query: LogQuery,
    files: list[Path],
    parser: LineParser,
    output: _Output,
    sleep: Callable[[float], None],
) -> None:
    from .logview import in_time_order

    if args.follow:
        _follow(args, query, files, parser, output, sleep)
        return
    matching = (line for line in _records(files, parser) if query.matches(line))
    if args.stats:
        output.stats(matching)
    elif args.trace is not None:
        output.lines(in_time_order(matching))
    else:
        output.lines(matching)


def _follow(
    args: argparse.Namespace,
    query: LogQuery,
    files: list[Path],
    parser: LineParser,
    output: _Output,
    sleep: Callable[[float], None],
) -> None:
    """The history since ``--since`` (if given), then new lines until Ctrl-C."""
    from .logfiles import Tail, follow_lines

    tail = Tail(files[-1], from_start=args.since is not None)
    try:
        if args.since is not None:
            output.lines(line for line in _records(files[:-1], parser) if query.matches(line))
        new = parser.parse_all(follow_lines(tail, sleep=sleep, interval_s=FOLLOW_INTERVAL_S))
        output.lines((line for line in new if query.matches(line)), flush=True)
    except KeyboardInterrupt:  # Ctrl-C is how a follow ends
        pass
    finally:
        tail.close()


class _Output:
    """Writes lines (text or JSON) and the closing notes; counts what it showed."""

    def __init__(self, out: TextIO, args: argparse.Namespace) -> None:
        self._out = out
        self._json = bool(args.json)
        self._color = _use_color(args.color, out)
        self._trace = args.trace
        self._first_s: float | None = None
        self._last_s: float | None = None
        self._actors: set[str] = set()
        self.shown = 0

    def lines(self, lines: Iterable[LogLine], *, flush: bool = False) -> None:
        from .logrender import format_line

        for line in lines:
            if self._trace is not None and self._first_s is None:
                self._first_s = line.time_s
            start_s = self._first_s if self._trace is not None else None
            text = line.raw if self._json else format_line(line, color=self._color, start_s=start_s)
            self._out.write(text + "\n")
            if flush:
                self._out.flush()
            self.shown += 1
            self._last_s = line.time_s if line.time_s is not None else self._last_s
            self._actors.add(line.actor)

    def stats(self, lines: Iterable[LogLine]) -> None:
        import msgspec

        from .logrender import LogStats, render_stats

        stats = LogStats().add_all(lines)
        if self._json:
            self._out.write(msgspec.json.encode(stats.as_record()).decode() + "\n")
        else:
            bar = "█" if _can_encode(self._out, "█") else "#"
            self._out.write(render_stats(stats, color=self._color, bar=bar) + "\n")

    def finish(self, query: LogQuery) -> None:
        """A trace's summary (text output only), or a note on stderr when it found nothing."""
        from .logview import TRACE_FIELDS

        if query.trace_id is not None and self.shown > 0 and not self._json:
            self._out.write(self._trace_summary(query.trace_id) + "\n")
        self._out.flush()  # before any note on stderr, for readers of both streams
        if query.trace_id is not None and self.shown == 0:
            _say(f"no lines with {', '.join(TRACE_FIELDS)} = {query.trace_id!r}")

    def _trace_summary(self, trace_id: str) -> str:
        actors = ", ".join(sorted(self._actors))
        text = (
            f"trace {trace_id}: {_count(self.shown, 'line')} from "
            f"{_count(len(self._actors), 'actor')} ({actors})"
        )
        if self._first_s is not None and self._last_s is not None:
            text += f" over {self._last_s - self._first_s:.3f} s"
        return text


def _use_color(choice: str, out: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
