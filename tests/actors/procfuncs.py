"""Functions the process-pool tests run in worker processes.

They live at module level in an importable module so that a ``spawn`` child can load them.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import NoReturn


def square(x: int) -> int:
    return x * x


def whoami() -> int:
    return os.getpid()


def echo(data: bytes) -> bytes:
    return data


def fail_with(message: str) -> NoReturn:
    raise ValueError(message)


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be rebuilt: its __init__ wants two arguments, args holds one."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}+{right}")


def raise_unrebuildable() -> NoReturn:
    raise NeedsTwoArgs("left", "right")


def return_lock() -> threading.Lock:
    return threading.Lock()


def explode(message: str) -> NoReturn:
    raise ValueError(message)


class ExplodesOnLoad:
    """Pickles fine; loading it raises (wherever that happens)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return explode, ("exploded while loading",)


def identity(value: object) -> object:
    return value


def make_unloadable() -> ExplodesOnLoad:
    return ExplodesOnLoad()


def spin_until(path: str, value: int) -> int:
    """Burn CPU until ``path`` exists, then return ``2 * value``."""
    while not os.path.exists(path):
        pass
    return 2 * value


def spin_then_touch(gate: str, done: str, value: int) -> int:
    """Burn CPU until ``gate`` exists, create ``done``, then return ``value``."""
    while not os.path.exists(gate):
        pass
    with open(done, "x"):
        pass
    return value


def exit_now(code: int) -> NoReturn:
    os._exit(code)


def die_at_start(sock: socket.socket, niceness: int) -> NoReturn:
    """Stands in for the worker loop: a worker that dies before it is ready."""
    os._exit(3)
