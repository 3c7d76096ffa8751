"""The stack of another thread, as plain data, with the event loop's own machinery left out.

``capture_stack(thread_id)`` reads ``sys._current_frames()`` (CPython's snapshot of every
thread's innermost frame; it works whatever the loop: asyncio, uvloop) and copies out
function, file and line, innermost first, so no frame object outlives the call.

The loop's machinery (asyncio, anyio, uvloop, selectors, threading) says nothing
about who blocked the loop, so ``short_stack`` drops it; ``culprit`` is the innermost frame that
is neither machinery nor the standard library: for ``time.sleep`` it is the line that called it.
``in_loop_code`` tells a stack caught in the loop's own code (idle in its selector, starved of
CPU by other processes, or between callbacks): nobody's call is blocking it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from collections.abc import Sequence

import msgspec

__all__ = [
    "StackFrame",
    "capture_stack",
    "culprit",
    "format_stack",
    "in_loop_code",
    "is_machinery",
    "is_stdlib",
    "short_stack",
]

UNKNOWN_FRAME_FUNCTION = "<unknown>"


class StackFrame(msgspec.Struct, frozen=True):
    """One frame: the function's qualified name, its file and the line being run."""

    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


def _package_dir(name: str) -> str | None:
    """The directory of package ``name`` without importing it (``None`` if not installed)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), "")


def _dirs(*names: str) -> tuple[str, ...]:
    found = [_package_dir(name) for name in names]
    return tuple(d for d in found if d)


def _stdlib_file(name: str) -> str:
    return os.path.join(sysconfig.get_paths()["stdlib"], name)


# The loop's own code: when the innermost frame is here, no user code is running.
_LOOP_DIRS = _dirs("asyncio", "anyio", "uvloop", "sniffio")
_LOOP_FILES = frozenset({_stdlib_file("selectors.py")})
_MACHINERY_DIRS = (*_LOOP_DIRS, *_dirs("concurrent"))
_MACHINERY_FILES = _LOOP_FILES | {_stdlib_file(f) for f in ("threading.py", "runpy.py")}
_STDLIB_DIRS = tuple(
    os.path.join(sysconfig.get_paths()[key], "") for key in ("stdlib", "platstdlib")
)


def is_machinery(file: str) -> bool:
    """Whether ``file`` belongs to the event loop's machinery."""
    return file in _MACHINERY_FILES or file.startswith(_MACHINERY_DIRS)


def in_loop_code(frames: Sequence[StackFrame]) -> bool:
    """Whether the thread runs the event loop's own code (innermost frame first): idle in its
    selector, or between callbacks. No stack at all counts too: no Python code is running."""
    return not frames or frames[0].file in _LOOP_FILES or frames[0].file.startswith(_LOOP_DIRS)


def is_stdlib(file: str) -> bool:
    """Whether ``file`` is in the standard library (installed packages are not)."""
    if "site-packages" in file or "dist-packages" in file:
        return False
    return file.startswith(_STDLIB_DIRS) or file.startswith("<frozen ")


def capture_stack(thread_id: int, *, limit: int = 64) -> list[StackFrame]:
    """The ``limit`` innermost frames of thread ``thread_id``, innermost first; empty when
    the thread is not running Python code (or does not exist)."""
    frame = sys._current_frames().get(thread_id)
    frames: list[StackFrame] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        frames.append(StackFrame(code.co_qualname, code.co_filename, frame.f_lineno or 0))
        frame = frame.f_back
    return frames


def short_stack(frames: Sequence[StackFrame], *, depth: int = 12) -> list[StackFrame]:
    """The ``depth`` innermost frames that are not loop machinery, innermost first."""
    kept = [f for f in frames if not is_machinery(f.file)]
    return kept[:depth]


def culprit(frames: Sequence[StackFrame]) -> StackFrame:
    """The frame to blame: the innermost one outside the machinery and the standard library,
    else the innermost outside the machinery, else the innermost; a placeholder for none."""
    if not frames:
        return StackFrame(UNKNOWN_FRAME_FUNCTION, "<unknown>", 0)
    outside = [f for f in frames if not is_machinery(f.file)]
    for frame in outside:
        if not is_stdlib(frame.file):
            return frame
    return outside[0] if outside else frames[0]


def format_stack(frames: Sequence[StackFrame]) -> str:
    """One ``file:line in function`` per line, in the order given."""
    return "\n".join(str(f) for f in frames)
