"""Stacks of other threads as data: which frames are machinery, which frame to blame."""

from __future__ import annotations

import asyncio
import os
import selectors
import sysconfig
import threading

import anyio

from actors.profiler.stacks import (
    StackFrame,
    capture_stack,
    culprit,
    format_stack,
    in_loop_code,
    is_machinery,
    is_stdlib,
    short_stack,
)

STDLIB = sysconfig.get_paths()["stdlib"]
ASYNCIO = os.path.join(os.path.dirname(asyncio.__file__), "base_events.py")
ANYIO = os.path.join(os.path.dirname(anyio.__file__), "_core", "_synchronization.py")
THREADING = threading.__file__
SOCKET = os.path.join(STDLIB, "socket.py")
USER = "/home/me/assistant/skills/weather.py"
PLUGIN = "/venv/lib/python3.11/site-packages/weather_plugin/api.py"


def frame(file: str, function: str = "f", line: int = 1) -> StackFrame:
    return StackFrame(function, file, line)


def test_loop_machinery_is_recognised() -> None:
    """asyncio, anyio, selectors and threading are machinery; user code and the rest of the
    standard library are not."""
    assert all(is_machinery(f) for f in (ASYNCIO, ANYIO, selectors.__file__, THREADING))
    assert not any(is_machinery(f) for f in (USER, PLUGIN, SOCKET))


def test_the_standard_library_is_recognised_but_installed_packages_are_not() -> None:
    """Files under the stdlib directory are stdlib, site-packages under it are not."""
    assert is_stdlib(SOCKET) and is_stdlib("<frozen importlib._bootstrap>")
    assert not is_stdlib(USER) and not is_stdlib(PLUGIN)
    assert not is_stdlib(os.path.join(STDLIB, "site-packages", "requests", "api.py"))


def test_the_culprit_is_the_innermost_frame_outside_machinery_and_stdlib() -> None:
    """A blocking socket read called by user code blames the user's line, not socket.py."""
    frames = [
        frame(SOCKET, "socket.recv_into", 700),
        frame(USER, "fetch_forecast", 31),
        frame(USER, "handle", 12),
        frame(ASYNCIO, "BaseEventLoop._run_once", 1922),
    ]
    assert culprit(frames) == frame(USER, "fetch_forecast", 31)


def test_an_installed_package_can_be_the_culprit() -> None:
    """A plugin installed in site-packages is code like any other: it can be blamed."""
    frames = [frame(PLUGIN, "slow_call", 5), frame(USER, "handle", 12)]
    assert culprit(frames).file == PLUGIN


def test_without_user_frames_the_culprit_falls_back() -> None:
    """Only stdlib outside the machinery: the innermost such frame; only machinery: the
    innermost frame; no frames: a placeholder."""
    assert culprit([frame(THREADING, "wait"), frame(SOCKET, "recv", 3)]) == frame(SOCKET, "recv", 3)
    assert culprit([frame(ASYNCIO, "run", 9)]) == frame(ASYNCIO, "run", 9)
    assert culprit([]) == StackFrame("<unknown>", "<unknown>", 0)


def test_the_short_stack_leaves_out_machinery_and_keeps_the_innermost() -> None:
    """short_stack drops machinery frames and keeps at most ``depth``, innermost first."""
    frames = [
        frame(USER, "a"),
        frame(ASYNCIO),
        frame(USER, "b"),
        frame(THREADING),
        frame(USER, "c"),
    ]
    assert [f.function for f in short_stack(frames)] == ["a", "b", "c"]
    assert [f.function for f in short_stack(frames, depth=2)] == ["a", "b"]


def test_a_stack_in_the_loops_own_code_means_no_call_is_running() -> None:
    """Innermost in the selector or asyncio (or no Python frames): the loop's own code runs;
    innermost in threading (a user's queue.get on the loop) is a blocking call."""
    assert in_loop_code([frame(selectors.__file__, "select"), frame(USER)])
    assert in_loop_code([frame(ASYNCIO), frame(USER)])
    assert in_loop_code([])
    assert not in_loop_code([frame(THREADING, "Condition.wait"), frame(USER, "handle")])
    assert not in_loop_code([frame(USER, "handle"), frame(ASYNCIO)])


def test_frames_format_one_per_line() -> None:
    """A frame reads ``file:line in function``; a stack is one per line."""
    frames = [frame(USER, "fetch", 31), frame(USER, "handle", 12)]
    assert format_stack(frames) == f"{USER}:31 in fetch\n{USER}:12 in handle"


def test_capture_stack_reads_another_threads_frames() -> None:
    """capture_stack(thread id) gives that thread's frames innermost first, with qualified
    names and the line being run; an unknown thread gives none."""
    ready, done = threading.Event(), threading.Event()

    def parked() -> None:
        ready.set()
        done.wait(10.0)

    thread = threading.Thread(target=parked)
    thread.start()
    try:
        ready.wait(10.0)
        assert thread.ident is not None
        frames = capture_stack(thread.ident)
    finally:
        done.set()
        thread.join()
    names = [f.function for f in frames]
    assert names.index("Event.wait") < names.index(parked.__qualname__)
    parked_frame = frames[names.index(parked.__qualname__)]
    assert parked_frame.file == __file__
    assert parked_frame.line == parked.__code__.co_firstlineno + 2
    assert capture_stack(thread.ident) == []
    assert len(capture_stack(threading.get_ident(), limit=3)) == 3
