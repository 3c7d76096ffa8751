"""What crosses a worker's socket, and the worker's loop on the other side.

A worker is a fresh interpreter (``spawn``) that receives calls over its end of a socket pair,
runs each one and sends the outcome back, one call at a time. Everything travels in frames: an
8-byte big-endian length, then that many bytes. The parent sends ``encode_call``'s bytes and
reads one reply per call, which ``decode_reply`` turns back into a result or an exception:

* ``("ok", result)``
* ``("error", pickled_exception_or_None, traceback_text)``: the exception travels pickled on
  its own so that the parent can fall back to the traceback text when it cannot rebuild it.

A watched call is preceded by a LIMITS frame and answered with two more frames before its
reply (STARTED, USAGE): see ``_limits``. The worker says ``READY`` once after it started, and
leaves on an empty frame (``STOP``) or when the parent's end closes (the parent died). pickle
is only a transport between the pool and its own children here; nothing is ever stored.

Every worker imports this module at start, so it imports only the standard library; the
parent's waits are passed in (``Wait``).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from . import _limits

__all__ = [
    "HEADER",
    "READY",
    "STOP",
    "Gone",
    "Wait",
    "decode_reply",
    "describe",
    "encode_call",
    "receive_frame",
    "send_frame",
    "serve",
]

HEADER = struct.Struct("!Q")
READY = b"ready"
STOP = b""
Wait = Callable[[bool], Awaitable[None]]  # wait(writable): until the socket is ready, or Gone


class Gone(Exception):
    """The worker's end of the socket closed, or the worker process exited."""


# -- the parent's side -----------------------------------------------------------------------


def describe(fn: object) -> str:
    """``module.qualname`` of a function, for errors and logs."""
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def encode_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Serialize a call; ``TypeError`` says which part cannot be sent to a process and why."""
    try:
        return pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        try:
            pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as fn_exc:
            raise TypeError(
                f"{describe(fn)} cannot be sent to a worker process ({fn_exc}); use a function "
                "defined at module level, not a lambda, closure or local function"
            ) from fn_exc
        raise TypeError(
            f"the arguments of {describe(fn)} cannot be sent to a worker process ({exc}); pass "
            "plain data, not open files, locks, sockets, generators or lambdas"
        ) from exc


def decode_reply(reply: bytes, name: str, pid: int) -> Any:
    """The result of call ``name`` run by worker ``pid``, or raise what it raised: the child's
    exception (with the remote traceback as a note) when it can be rebuilt here, else a
    ``RuntimeError`` carrying the traceback text."""
    try:
        message = pickle.loads(reply)
    except Exception as exc:
        raise RuntimeError(
            f"the result of {name} from worker {pid} cannot be loaded here: {exc}"
        ) from exc
    if message[0] == "ok":
        return message[1]
    _, blob, text = message
    try:
        error = pickle.loads(blob) if blob is not None else None
    except Exception:
        error = None
    if isinstance(error, BaseException):
        error.add_note(f"raised in worker process {pid}; remote traceback:\n{text}")
        raise error
    raise RuntimeError(
        f"{name} raised in worker process {pid} an exception that cannot be sent back; "
        f"remote traceback:\n{text}"
    )


async def send_frame(sock: socket.socket, payload: bytes, wait: Wait) -> None:
    """Send one frame on a non-blocking socket; raises ``Gone`` if the worker is."""
    for part in (HEADER.pack(len(payload)), payload):
        view = memoryview(part)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await wait(True)
                continue
            except OSError:  # EPIPE, ECONNRESET
                raise Gone from None
            view = view[sent:]


async def receive_frame(sock: socket.socket, wait: Wait) -> bytes:
    """Receive one frame from a non-blocking socket; raises ``Gone`` if the worker is."""
    (size,) = HEADER.unpack(await _receive_exactly(sock, HEADER.size, wait))
    return await _receive_exactly(sock, size, wait)


async def _receive_exactly(sock: socket.socket, size: int, wait: Wait) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(view[got:])
        except BlockingIOError:
            await wait(False)
            continue
        except OSError:
            raise Gone from None
        if n == 0:
            raise Gone
        got += n
    return bytes(buffer)


# -- the worker's side -----------------------------------------------------------------------


def serve(sock: socket.socket, niceness: int) -> None:
    """Run calls received on ``sock`` until told to stop or the parent goes away."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness > 0:
        os.nice(niceness)
    with sock:
        _send_frame_blocking(sock, READY)
        limits: _limits.Limits | None = None  # for the next call (a watched one)
        while (payload := _receive_frame_blocking(sock)) is not None and payload != STOP:
            if _limits.is_limits(payload):
                limits = _limits.decode_limits(payload)
            elif limits is None:
                _send_frame_blocking(sock, execute(payload))
            else:
                _execute_watched(sock, payload, limits)
                limits = None


def _execute_watched(sock: socket.socket, payload: bytes, limits: _limits.Limits) -> None:
    """Run a call under ``limits``, telling the parent its memory at the start and its usage."""
    meter = _limits.Meter()
    _send_frame_blocking(sock, meter.started_frame())
    reply = execute(payload, limits)
    _send_frame_blocking(sock, meter.usage_frame())
    _send_frame_blocking(sock, reply)


def execute(payload: bytes, limits: _limits.Limits | None = None) -> bytes:
    """Run one encoded call and return the encoded reply (never raises an ``Exception``).

    ``limits`` hold the process while the function runs, not while its result is encoded.
    """
    try:
        fn, args, kwargs = pickle.loads(payload)
    except Exception as exc:
        exc.add_note("(while loading the call in the worker process)")
        return _error_reply(exc)
    try:
        with _limits.applied(limits):
            result = fn(*args, **kwargs)
    except Exception as exc:
        return _error_reply(exc)
    try:
        return pickle.dumps(("ok", result), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return _error_reply(
            TypeError(
                f"the result of {getattr(fn, '__qualname__', fn)!s} (a {type(result).__name__}) "
                f"cannot be sent back from the worker process: {exc}; return plain data instead"
            )
        )


def _error_reply(exc: Exception) -> bytes:
    text = "".join(traceback.format_exception(exc))
    blob: bytes | None
    try:
        blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)  # some exceptions pickle but cannot be rebuilt (custom __init__)
    except Exception:
        blob = None
    reply: tuple[Any, ...] = ("error", blob, text)
    return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)


def _send_frame_blocking(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(HEADER.pack(len(payload)))
    sock.sendall(payload)


def _receive_frame_blocking(sock: socket.socket) -> bytes | None:
    """The next frame, or None once the parent's end is closed."""
    header = _receive_exactly_blocking(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    return _receive_exactly_blocking(sock, size)


def _receive_exactly_blocking(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buffer)
