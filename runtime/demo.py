"""``jarvis-runtime demo``: a simulated assistant under the runtime, and how it fared.

The workload (``runtime.demowork``) submits wake words, voice turns, commands, plugin calls
and background maintenance to a real ``Runtime`` for ``--duration`` seconds; a status line
shows the run as it goes; at the end a table (``runtime.demoreport``, ``runtime.demotable``)
sets each class's latency against its target, the cache's hit rate, CPU and memory against the
budget, alerts and restarts. The runtime logs to its ``logging.file`` only: console logging is
turned off for the demo, so it does not garble the status line.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import msgspec

from .exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .app import Runtime
    from .config import Config
    from .demoreport import Observer, Summary
    from .demowork import Workload

__all__ = ["DEFAULT_DURATION_S", "DemoOptions", "add_demo_command", "run_demo"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CONFIG = "config.yaml"
DEFAULT_DURATION_S = 20.0
NEEDED_CLASSES = ("wake_word", "voice", "command", "background")
NEEDED_NAMESPACES = ("response", "embedding")
GRACE_S = 10.0  # how long in-flight requests may finish after the arrivals stop

_DESCRIPTION = """\
Run a simulated voice assistant under the runtime for --duration seconds, then print a
table: each task class's p50/p95/p99 latency against its target, deadline misses, plugin
quotas, the cache's hit rate per namespace, CPU and memory against the budget, alerts fired
and actor restarts. Logs go to the config's logging.file (var/log/runtime.jsonl).

At load 1.0, per second on average (Poisson arrivals): 2 wake-word checks, 1.5 voice turns
(simulated STT, embedding and LLM calls, through the cache), 0.6 home-control commands and
0.8 plugin calls (blocking I/O in threads, the plugins under quotas), 0.5 background jobs of
100-300 ms of CPU in worker processes. --load 2 doubles every rate."""

_EPILOG = """\
exit codes: 0 the run completed (the PASS/FAIL marks are information, not the exit code),
1 runtime failure, 2 bad usage or bad configuration, 130 stopped early by Ctrl-C (the table
is still printed; a second Ctrl-C does not wait for the requests in flight)."""


class DemoOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the demo runs: ``config`` (shown as ``source``) for ``duration_s`` seconds at
    ``load`` times the base arrival rates, drawn from ``seed``."""

    config: Config
    source: str
    duration_s: float = DEFAULT_DURATION_S
    load: float = 1.0
    seed: int = 1


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the command line's subcommands."""
    parser = commands.add_parser(
        "demo",
        help="a simulated assistant under the runtime; a table of latency against targets",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--config",
        metavar="PATH",
        help=f"config file (default: {DEFAULT_CONFIG} if it exists, else the built-in defaults)",
    )
    add(
        "--duration",
        type=_positive,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help=f"seconds of arriving work (default {DEFAULT_DURATION_S:g})",
    )
    add(
        "--load",
        type=_positive,
        default=1.0,
        metavar="F",
        help="arrival rates times F (default 1.0: the rates above)",
    )
    add("--seed", type=int, default=1, metavar="N",
        help="seed of the random arrivals and work (default 1: runs repeat)")  # fmt: skip
    parser.set_defaults(command=_command)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _command(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_USAGE
    config, source = loaded
    options = DemoOptions(
        config=config, source=source, duration_s=args.duration, load=args.load, seed=args.seed
    )
    return run_demo(options)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(path: str | None) -> tuple[Config, str] | None:
    """The config (and what to call it), or None after printing why not."""
    from .config import load_config

    if path is None:
        if not Path(DEFAULT_CONFIG).exists():
            return load_config(None), "built-in defaults"
        path = DEFAULT_CONFIG
    if not Path(path).is_file():
        _say(f"error: --config {path!r}: no such file; give a config file, or leave --config out")
        return None
    try:
        return load_config(path), path
    except ConfigError as exc:
        for problem in exc.problems:
            _say(str(problem))
        _say(f"error: --config {path!r} is not valid (problems above)")
        return None


def demo_config_problems(config: Config) -> list[str]:
    """Why the demo cannot run on ``config`` (it needs the scheduler, the profiler, the four
    assistant classes, the two cache namespaces when the cache is on, and a log file it can
    write); empty when it can."""
    problems = [
        f"$.{section}.enabled: the demo needs the {section}; set it to true"
        for section in ("scheduler", "profiler")
        if not getattr(config, section).enabled
    ]
    missing = [name for name in NEEDED_CLASSES if name not in config.scheduler.classes]
    if missing:
        problems.append(
            f"$.scheduler.classes: the demo needs the classes {', '.join(NEEDED_CLASSES)}; "
            f"missing {', '.join(missing)}"
        )
    namespaces = [n for n in NEEDED_NAMESPACES if n not in config.cache.namespaces]
    if config.cache.enabled and namespaces:
        problems.append(
            f"$.cache.namespaces: the demo caches in {', '.join(NEEDED_NAMESPACES)}; "
            f"missing {', '.join(namespaces)}"
        )
    if config.logging.file is not None:
        problems.extend(_log_file_problems(config.logging.file))
    return problems


def _log_file_problems(file: str) -> list[str]:
    """Why the log file cannot be opened for appending, before the runtime tries (the
    runtime would fail with a bare OSError); its directory is created as the runtime would."""
    path = Path(file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return [f"$.logging.file: cannot open {file!r} for appending ({reason}); "
                "give a writable path, or null for no log file"]  # fmt: skip
    return []


def run_demo(options: DemoOptions, *, out: TextIO | None = None) -> int:
    """Run the demo and print its table to ``out`` (stdout); returns the exit code."""
    import anyio

    stream = out if out is not None else sys.stdout
    problems = demo_config_problems(options.config)
    for problem in problems:
        _say(problem)
    if problems:
        return EXIT_USAGE
    try:
        summary, interrupted = anyio.run(_demo, _quiet(options), stream)
    except ConfigError as exc:  # refused while starting, e.g. a log file it cannot open
        for config_problem in exc.problems:
            _say(str(config_problem))
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the demo was listening for it
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Exception:  # a crash: show where, since it is a bug to report
        traceback.print_exc()
        _say("error: the runtime failed during the demo (traceback above)")
        return EXIT_FAILURE
    from .demotable import Marks, render_summary

    print(render_summary(summary, Marks.for_stream(stream)), file=stream, flush=True)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _quiet(options: DemoOptions) -> DemoOptions:
    """The options with console logging off: the log file has it all, the terminal the demo."""
    config = options.config
    logging = msgspec.structs.replace(config.logging, console=False)
    return msgspec.structs.replace(options, config=msgspec.structs.replace(config, logging=logging))


async def _demo(options: DemoOptions, out: TextIO) -> tuple[Summary, bool]:
    """Run the workload under a Runtime; the summary, and whether Ctrl-C stopped it early."""
    import anyio

    from .app import Runtime
    from .demoreport import Observer, summarize
    from .demowork import Workload, register_plugins
    from .logging import get_logger

    log = get_logger("demo")
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Runtime(options.config) as rt:
            registered = register_plugins(rt)
            workload = Workload(rt, load=options.load, seed=options.seed)
            observer = Observer(rt)
            log.info("demo started", duration_s=options.duration_s, load=options.load,
                     seed=options.seed, plugins_registered=registered)  # fmt: skip
            _header(options, out)
            async with anyio.create_task_group() as helpers:
                stopped = _Stopped()
                helpers.start_soon(_stop_on_signal, signals, workload, stopped)
                helpers.start_soon(_show_progress, rt, observer, options, out)
                ran_s = await workload.run(options.duration_s, grace_s=GRACE_S)
                helpers.cancel_scope.cancel()
            _Display(out).clear()
            summary = summarize(rt, workload, observer, config=options.source,
                                duration_s=ran_s, load=options.load, seed=options.seed)  # fmt: skip
            observer.close()
            log.info("demo finished", arrivals_s=round(ran_s, 3), interrupted=stopped.early,
                     classes={r.name: round(r.p99_ms, 1) for r in summary.classes})  # fmt: skip
    return summary, stopped.early


class _Stopped:
    """Whether a signal stopped the demo before its duration."""

    early = False


async def _stop_on_signal(
    signals: AsyncIterator[int], workload: Workload, stopped: _Stopped
) -> None:
    """The first SIGINT or SIGTERM stops the arrivals and lets what is in flight finish; a
    second one cancels that too. The table is printed either way."""
    async for _signum in signals:
        workload.stop(now=stopped.early)
        stopped.early = True


def _header(options: DemoOptions, out: TextIO) -> None:
    from .demowork import STREAMS

    rates = ", ".join(f"{s.name} {s.rate_per_s * options.load:g}/s" for s in STREAMS)
    print(
        f"jarvis-runtime demo: {options.duration_s:g} s on {options.source}, load "
        f"{options.load:g}x (Ctrl-C stops early)\narrivals: {rates}\n"
        "status: [elapsed] the runtime's CPU | per class: tasks done/p99 ms",
        file=out,
        flush=True,
    )


class _Display:
    """One redrawn status line on a terminal; plain periodic lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()

    def show(self, line: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.out.write(f"\r{line[:width]}\033[K")
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def clear(self) -> None:
        if self.tty:
            self.out.write("\r\033[K")
            self.out.flush()


def _interval_s(tty: bool, duration_s: float) -> float:
    """Redraw twice a second on a terminal; else about four lines a run, 1 to 5 s apart."""
    return 0.5 if tty else max(1.0, min(5.0, duration_s / 4))


async def _show_progress(
    rt: Runtime, observer: Observer, options: DemoOptions, out: TextIO
) -> None:
    import anyio

    from .demotable import progress_line

    display = _Display(out)
    interval_s = _interval_s(display.tty, options.duration_s)
    started = anyio.current_time()
    while True:
        await anyio.sleep(interval_s)
        observer.poll()
        elapsed_s = min(anyio.current_time() - started, options.duration_s)
        done = {n: c.completed for n, c in rt.scheduler.statistics().classes.items()}
        p99_ms = {}
        for name in done:
            try:
                latency = rt.profiler.histogram(name, "end_to_end")
            except KeyError:  # no task of the class has been seen yet
                continue
            if latency.count:
                p99_ms[name] = latency.percentile(99) * 1000
        display.show(
            progress_line(elapsed_s, options.duration_s, done, p99_ms, observer.cpu_now_percent)
        )
