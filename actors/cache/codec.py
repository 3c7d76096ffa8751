"""How cached values become bytes and back: msgspec's MessagePack, never pickle.

A persistent or shared tier must not be a code-execution hole, so values are limited to what
msgpack can carry: ``None``, bools, ints (64-bit), floats, str, bytes, lists, tuples, dicts,
sets, and msgspec Structs (with dataclasses, enums, datetimes, UUIDs and decimals). Without a
``type``, decoding gives builtins (a Struct comes back as a dict, a tuple as a list); with one
(``type=MyStruct``, ``type=list[float]``) it gives that type, validated.

``None`` is the "not found" value of negative caching: its encoding, ``NEGATIVE``, is a single
byte that no other value has.

The compressed tier's bytes carry a one-byte header: zlib-compressed, or stored as is when
compression would not make them smaller (short values).
"""

from __future__ import annotations

import builtins
import zlib
from typing import Any

import msgspec

__all__ = ["NEGATIVE", "compress", "convert", "decode", "decompress", "encode"]

NEGATIVE = b"\xc0"  # msgpack nil: the encoding of None, "not found"
_RAW, _ZLIB = b"\x00", b"\x01"
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode(value: Any, key: str, namespace: str) -> bytes:
    """``value`` as msgpack. Raises ``TypeError`` naming the key and the type it cannot encode."""
    try:
        return _encoder.encode(value)
    except (TypeError, OverflowError) as exc:
        raise TypeError(
            f"cannot cache the {builtins.type(value).__name__} value of key {key!r} in namespace "
            f"{namespace!r}: {exc}; cache builtins (str, bytes, numbers, lists, dicts) or "
            "msgspec Structs"
        ) from None


def decode(data: bytes, type: Any = None) -> Any:
    """Decode msgpack ``data``, as ``type`` when given.

    Raises ``msgspec.DecodeError`` (a ``ValueError``) for malformed data or a value that does
    not match ``type``.
    """
    if type is None:
        return _decoder.decode(data)
    return msgspec.msgpack.decode(data, type=type)


def convert(value: Any, type: Any) -> Any:
    """``value`` as ``type`` (a decoded dict as its Struct, ...); as is when it already is one.

    Raises ``msgspec.ValidationError`` (a ``ValueError``) when it does not match.
    """
    if type is None or (isinstance(type, builtins.type) and isinstance(value, type)):
        return value
    return msgspec.convert(value, type)


def compress(data: bytes, level: int) -> bytes:
    """``data`` with a header: zlib at ``level`` when that is smaller, else as is."""
    packed = zlib.compress(data, level)
    if len(packed) < len(data):
        return _ZLIB + packed
    return _RAW + data


def decompress(stored: bytes) -> bytes:
    """The bytes ``compress`` was given. Raises ``zlib.error`` or ``ValueError`` if corrupt."""
    header, body = stored[:1], stored[1:]
    if header == _ZLIB:
        return zlib.decompress(body)
    if header == _RAW:
        return body
    raise ValueError(f"compressed value has an unknown header byte {header!r}")
