"""The ``jarvis-runtime`` command line (also ``python -m runtime``).

Commands: ``run`` supervises until SIGINT/SIGTERM (SIGHUP reloads the config),
``check-config`` validates a file, ``logs`` reads the JSON log (``runtime.logcmd``), ``top``
shows a running runtime from its metrics endpoint (``runtime.top``), ``demo`` runs a simulated
assistant and prints its latency against the targets (``runtime.demo``). Exit codes:
0 success, 1 runtime failure, 2 bad usage or bad configuration. Heavy modules (the runtime
itself, anyio) are imported by the command that needs them, so ``check-config`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .exceptions import ConfigError

if TYPE_CHECKING:
    from .app import Runtime
    from .config import Config

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's convention for "stopped by SIGINT" before we could catch it
DEFAULT_CONFIG = "config.yaml"

Command = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command: Command = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jarvis-runtime",
        description="Runtime supervisor for a voice assistant.",
        epilog="exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration",
    )
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="supervise until SIGINT/SIGTERM; SIGHUP reloads")
    run.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH", help="config file")
    run.set_defaults(command=_run)
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG, metavar="PATH")
    check.set_defaults(command=_check_config)
    from .logcmd import add_logs_command  # here: logcmd reads the exit codes from this module

    add_logs_command(commands)
    from .top import add_top_command

    add_top_command(commands)
    from .demo import add_demo_command

    add_demo_command(commands)
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(path: str) -> Config | None:
    """The config at ``path``, or None after printing why not (one line per problem)."""
    from .config import load_config

    if not Path(path).exists():
        _say(f"error: config file {path!r} not found")
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            _say(str(problem))
        return None


def _check_config(args: argparse.Namespace) -> int:
    """Exit 0 and ``ok: PATH`` when the file is valid; else 2 and each problem on stderr."""
    if _load(args.path) is None:
        return EXIT_USAGE
    print(f"ok: {args.path}", flush=True)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    """Supervise until a stop signal: 0 on a clean stop, 1 if the runtime failed, 2 for a bad
    config, 130 for a SIGINT that came before the signal handlers were in place."""
    import anyio

    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        anyio.run(_serve, config, args.config)
    except ConfigError as exc:  # refused while starting, e.g. a file it could not open
        for problem in exc.problems:
            _say(str(problem))
        return EXIT_USAGE
    except KeyboardInterrupt:  # SIGINT before the signal receiver was open
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Exception:  # a crash: show where, since it is a bug to report
        traceback.print_exc()
        _say("error: the runtime failed (traceback above)")
        return EXIT_FAILURE
    return EXIT_OK


def _stop_signals() -> list[signal.Signals]:
    wanted = ["SIGINT", "SIGTERM", "SIGHUP"]
    return [getattr(signal, name) for name in wanted if hasattr(signal, name)]


async def _serve(config: Config, path: str) -> None:
    """Run the runtime until SIGINT or SIGTERM; on SIGHUP reload the config file.

    The Runtime logs its own start, stop and reloads (a refused reload with its problems).
    """
    import anyio

    from .app import Runtime
    from .logging import get_logger

    # Open the receiver first, so a signal during start-up is queued, not a KeyboardInterrupt.
    with anyio.open_signal_receiver(*_stop_signals()) as signals:
        async with Runtime(config, config_path=path) as rt:
            log = get_logger("cli")
            async for signum in signals:
                name = signal.Signals(signum).name
                log.info("signal received", signal=name)
                if signum != getattr(signal, "SIGHUP", None):
                    break
                await _reload(rt)


async def _reload(rt: Runtime) -> None:
    """Reload the config; an invalid file leaves the runtime running on the config it has."""
    with contextlib.suppress(ConfigError):  # the Runtime logged the problems and changed nothing
        await rt.reload()
