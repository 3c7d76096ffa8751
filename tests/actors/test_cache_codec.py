"""Values as msgpack: what is refused, typed decoding, the compressed tier's framing."""

from __future__ import annotations

import zlib

import msgspec
import pytest

from actors.cache import codec


class Reply(msgspec.Struct, frozen=True):
    text: str
    tokens: int


def test_a_value_msgpack_cannot_carry_is_refused_naming_key_namespace_and_type() -> None:
    """An object of an unsupported type raises TypeError that names the key and the type."""
    with pytest.raises(
        TypeError, match=r"cannot cache the object value of key 'k' in namespace 'response'"
    ):
        codec.encode(object(), "k", "response")


def test_an_int_beyond_64_bits_is_refused_as_a_type_error() -> None:
    """msgpack's integer range is enforced at encoding, reported as a TypeError."""
    with pytest.raises(TypeError, match="int value of key 'big'"):
        codec.encode(2**70, "big", "embedding")


def test_a_struct_decodes_as_builtins_without_type_and_as_itself_with_it() -> None:
    """Untyped decoding gives a dict; ``type=`` gives the Struct back, validated."""
    data = codec.encode(Reply("hi", 2), "k", "response")
    assert codec.decode(data) == {"text": "hi", "tokens": 2}
    assert codec.decode(data, Reply) == Reply("hi", 2)


def test_decoding_into_a_type_the_data_does_not_match_raises_a_value_error() -> None:
    """A stored value of another shape is a ValueError (msgspec.ValidationError)."""
    with pytest.raises(ValueError, match="Expected `int`"):
        codec.decode(codec.encode("text", "k", "ns"), int)


def test_convert_keeps_a_value_of_the_type_and_converts_builtins() -> None:
    """An instance passes as is; a dict becomes the Struct; a mismatch raises ValueError."""
    reply = Reply("a", 1)
    assert codec.convert(reply, Reply) is reply
    assert codec.convert({"text": "a", "tokens": 1}, Reply) == reply
    assert codec.convert([1, 2], list[int]) == [1, 2]
    with pytest.raises(ValueError):
        codec.convert("x", Reply)


def test_none_encodes_as_the_negative_marker() -> None:
    """The "not found" value is msgpack nil, and decodes back to None."""
    assert codec.encode(None, "k", "ns") == codec.NEGATIVE
    assert codec.decode(codec.NEGATIVE) is None


def test_compression_is_used_only_when_it_makes_the_value_smaller() -> None:
    """A repetitive value is zlib-compressed; a short one is kept as is; both round-trip."""
    long_value = b"abc" * 1000
    short_value = b"x"
    packed = codec.compress(long_value, 1)
    assert len(packed) < len(long_value)
    assert codec.decompress(packed) == long_value
    assert codec.compress(short_value, 1) == b"\x00x"
    assert codec.decompress(codec.compress(short_value, 1)) == short_value


def test_a_compressed_value_with_an_unknown_header_or_bad_body_is_an_error() -> None:
    """Corrupt compressed bytes raise ValueError (header) or zlib.error (body)."""
    with pytest.raises(ValueError, match="unknown header byte"):
        codec.decompress(b"\x07abc")
    with pytest.raises(zlib.error):
        codec.decompress(b"\x01not zlib")
