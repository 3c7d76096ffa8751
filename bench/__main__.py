"""Run the benchmarks: ``python -m bench [--quick] [NAME ...]``.

Every module ``bench.<name>`` with a ``main()`` is a benchmark; without names all of them run,
in alphabetical order. Everything from the first option on (e.g. ``--quick``) goes to each
benchmark whose ``main`` takes an ``argv`` list. Exit status: 0 when every benchmark met its
targets, 1 when one missed, 2 for an unknown name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def available() -> list[str]:
    """The names of the benchmark modules next to this file (private ones excluded)."""
    here = str(Path(__file__).parent)
    return sorted(
        info.name
        for info in pkgutil.iter_modules([here])
        if not info.name.startswith("_") and not info.ispkg
    )


def load_main(name: str) -> Callable[..., Any] | None:
    """``bench.<name>.main``, or ``None`` when the module has none (a helper module)."""
    module = importlib.import_module(f"bench.{name}")
    main = getattr(module, "main", None)
    return main if callable(main) else None


def run_one(main: Callable[..., Any], options: list[str]) -> int:
    """Call a benchmark's ``main``, with the options when it accepts an ``argv``."""
    takes_argv = bool(inspect.signature(main).parameters)
    outcome = main(options) if takes_argv else main()
    return outcome if isinstance(outcome, int) else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Names first; everything from the first option on is for the benchmarks (``--rounds 3``).
    split = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, options = args[:split], args[split:]
    known = available()
    unknown = [n for n in names if n not in known]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in names or known:
        bench_main = load_main(name)
        if bench_main is None:
            continue
        print(f"== bench.{name}", flush=True)
        status = max(status, run_one(bench_main, options))
    return status


if __name__ == "__main__":
    sys.exit(main())
