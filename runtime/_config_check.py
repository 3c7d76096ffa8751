"""A validator that walks decoded YAML against the config Structs and collects every problem.

msgspec stops at the first error; a person fixing a config file wants them all. The walker reads
field names, types and ``Meta`` constraints from ``msgspec.inspect.type_info`` so it follows the
schema without a line of its own per field.

It builds each Struct whose values are all valid and then runs that Struct's cross-field checks.
A Struct with an invalid value is not built (its contradictions are checked once the value is
fixed), but an invalid entry of a list or mapping is only left out, so the checks of the Struct
holding the collection still run on the valid entries: leaving entries out can hide a
contradiction, never invent one.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import msgspec.inspect as mi

__all__ = [
    "INVALID",
    "Checks",
    "Problem",
    "Segments",
    "Validator",
    "describe_value",
    "did_you_mean",
    "format_path",
    "parse_duration",
    "parse_rate",
]

Segments: TypeAlias = tuple[str | int, ...]
# A path is segments into the config, or a plain name (an environment variable).
Problem: TypeAlias = tuple[Segments | str, str]
# Cross-field checks: given a built Struct, yield (path relative to it, message).
Checks: TypeAlias = Mapping[type, Callable[[Any], Iterable[tuple[Segments, str]]]]


class _Invalid:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(segments: Segments) -> str:
    """``("cache", "tiers", 1, "path")`` -> ``$.cache.tiers[1].path``."""
    out = ["$"]
    for segment in segments:
        if isinstance(segment, int):
            out.append(f"[{segment}]")
        elif _IDENTIFIER.match(segment):
            out.append(f".{segment}")
        else:
            out.append(f"[{segment!r}]")
    return "".join(out)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")
_RATE_UNIT_S = {
    "ms": 0.001,
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``.

    Raises ``ValueError`` naming the text when it is not such a duration.
    """
    compact = text.strip()
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(
            f"{text!r} is not a duration: expected e.g. '30s', '5m', '1h30m', '250ms' or seconds"
        )
    return sum(float(number) * _DURATION_UNIT_S[unit] for number, unit in parts)


def parse_rate(text: str) -> float:
    """Calls per second in ``"10/s"``, ``"600/min"``, ``"5/h"``, ``"3/10s"``.

    Raises ``ValueError`` naming the text when it is not such a rate.
    """
    match = _RATE.match(text.lower())
    unit = match.group(3) if match else ""
    unit_s = _RATE_UNIT_S.get(unit) or _RATE_UNIT_S.get(unit.removesuffix("s"))
    if match is None or unit_s is None:
        raise ValueError(
            f"{text!r} is not a rate: expected calls per second or e.g. '10/s', '600/min', '5/h'"
        )
    per = float(match.group(2)) if match.group(2) else 1.0
    if per == 0:
        raise ValueError(f"{text!r} is not a rate: the period must not be zero")
    return float(match.group(1)) / (per * unit_s)


def describe_value(value: object) -> str:
    """A bad value for a message, as YAML spells it (shortened), with its kind."""
    if value is None:
        return "null"
    shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{shown} ({_kind(value)})"


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for a near miss, else the list of valid choices."""
    choices = list(choices)
    close = difflib.get_close_matches(str(word).lower(), choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of {', '.join(map(repr, choices))}"


def _kind(value: object) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kinds |= {dict: "mapping", list: "list"}
    return kinds.get(type(value), type(value).__name__)


_EXPECTED = {
    mi.IntType: "an integer",
    mi.FloatType: "a number",
    mi.StrType: "a string",
    mi.BoolType: "true or false",
    mi.NoneType: "null",
    mi.StructType: "a mapping",
    mi.DictType: "a mapping",
    mi.ListType: "a list",
    mi.LiteralType: "a string",
}


def _expected(info: mi.Type) -> str:
    if isinstance(info, mi.Metadata):
        kind = str((info.extra or {}).get("kind"))
        return {"duration": "a duration", "rate": "a rate"}.get(kind) or _expected(info.type)
    if isinstance(info, mi.UnionType):
        return " or ".join(_expected(member) for member in info.types)
    return _EXPECTED.get(type(info), type(info).__name__)


def _accepts(info: mi.Type, value: object) -> bool:
    """Whether ``value`` is of the right kind for ``info`` (its range is checked later)."""
    if isinstance(info, mi.Metadata):
        return _accepts(info.type, value) or (
            isinstance(value, str) and (info.extra or {}).get("kind") in ("duration", "rate")
        )
    if isinstance(value, bool):
        return isinstance(info, mi.BoolType)
    checks: dict[type, Callable[[object], bool]] = {
        mi.IntType: lambda v: isinstance(v, int),
        mi.FloatType: lambda v: isinstance(v, int | float),
        mi.StrType: lambda v: isinstance(v, str),
        mi.LiteralType: lambda v: isinstance(v, str),
        mi.NoneType: lambda v: v is None,
        mi.StructType: lambda v: isinstance(v, dict),
        mi.DictType: lambda v: isinstance(v, dict),
        mi.ListType: lambda v: isinstance(v, list),
    }
    check = checks.get(type(info))
    return check is not None and check(value)


class Validator:
    """Walks decoded data against a ``msgspec.inspect`` type; ``problems`` collects every fault."""

    def __init__(self, checks: Checks) -> None:
        self._checks = checks
        self.problems: list[Problem] = []
        # id of a list built without its invalid items -> the original index of each kept item
        self._kept_indices: dict[int, tuple[list[Any], list[int]]] = {}

    def validate(self, value: Any, info: mi.Type, path: Segments = ()) -> Any:
        """The value converted for ``info`` (Structs built), or ``INVALID`` after a problem."""
        if isinstance(info, mi.UnionType):
            return self._union(value, info, path)
        if not _accepts(info, value):
            return self._fail(path, f"expected {_expected(info)}, got {describe_value(value)}")
        if isinstance(info, mi.Metadata):
            return self._metadata(value, info, path)
        if isinstance(info, mi.StructType):
            return self._struct(value, info, path)
        if isinstance(info, mi.DictType):
            return self._dict(value, info, path)
        if isinstance(info, mi.ListType):
            return self._list(value, info, path)
        if isinstance(info, mi.LiteralType):
            return self._literal(value, info, path)
        if isinstance(info, mi.IntType | mi.FloatType):
            return self._number(value, info, path)
        if isinstance(info, mi.StrType):
            return self._string(value, info, path)
        return value  # bool and None need no more than the kind check

    def _fail(self, path: Segments, message: str) -> Any:
        self.problems.append((path, message))
        return INVALID

    def _union(self, value: object, info: mi.UnionType, path: Segments) -> Any:
        for member in info.types:
            if _accepts(member, value):
                return self.validate(value, member, path)
        return self._fail(path, f"expected {_expected(info)}, got {describe_value(value)}")

    def _metadata(self, value: object, info: mi.Metadata, path: Segments) -> Any:
        kind = (info.extra or {}).get("kind")
        if isinstance(value, str) and kind in ("duration", "rate"):
            try:
                value = parse_duration(value) if kind == "duration" else parse_rate(value)
            except ValueError as exc:
                return self._fail(path, str(exc))
        if isinstance(info.type, mi.StrType) and isinstance(value, str):
            return self._string(value, info.type, path, hint=(info.extra or {}).get("hint"))
        return self.validate(value, info.type, path)

    def _struct(self, value: dict[Any, Any], info: mi.StructType, path: Segments) -> Any:
        fields = {field.encode_name: field for field in info.fields}
        for key in value:
            if key not in fields:
                self._fail((*path, str(key)), f"unknown key {key!r}{did_you_mean(key, fields)}")
        kwargs: dict[str, Any] = {}
        for name, field in fields.items():
            if name in value:
                kwargs[field.name] = self.validate(value[name], field.type, (*path, name))
            elif field.required:
                self._fail((*path, name), f"missing required key {name!r}")
                kwargs[field.name] = INVALID
        if any(item is INVALID for item in kwargs.values()):
            return INVALID
        built = info.cls(**kwargs)
        check = self._checks.get(info.cls)
        for relative, message in check(built) if check else ():
            self.problems.append(((*path, *self._original_indices(kwargs, relative)), message))
        return built

    def _original_indices(self, kwargs: dict[str, Any], relative: Segments) -> Segments:
        """A check's path into a list that lost invalid items, renumbered as in the file."""
        if len(relative) < 2 or not isinstance(relative[1], int):
            return relative
        value = kwargs.get(str(relative[0]))
        built, kept = self._kept_indices.get(id(value), (None, []))
        if built is not value:
            return relative
        return (relative[0], kept[relative[1]], *relative[2:])

    def _dict(self, value: dict[Any, Any], info: mi.DictType, path: Segments) -> Any:
        if not self._length_ok(value, info, path):
            return INVALID
        out: dict[Any, Any] = {}
        for key, item in value.items():
            here = (*path, str(key))
            if not _accepts(info.key_type, key):
                self._fail(here, f"key {describe_value(key)} must be a string; quote it")
                out[key] = INVALID
                continue
            if self.validate(key, info.key_type, here) is INVALID:
                out[key] = INVALID
                continue
            out[key] = self.validate(item, info.value_type, here)
        valid = {key: item for key, item in out.items() if item is not INVALID}
        # All entries invalid: an empty mapping could trip a check that a real one would not.
        return INVALID if out and not valid else valid

    def _list(self, value: list[Any], info: mi.ListType, path: Segments) -> Any:
        if not self._length_ok(value, info, path):
            return INVALID
        out = [self.validate(item, info.item_type, (*path, i)) for i, item in enumerate(value)]
        kept = [index for index, item in enumerate(out) if item is not INVALID]
        if out and not kept:
            return INVALID
        valid = [out[index] for index in kept]
        if len(kept) < len(out):
            self._kept_indices[id(valid)] = (valid, kept)  # holding it keeps the id unique
        return valid

    def _length_ok(
        self, value: dict[Any, Any] | list[Any], info: mi.DictType | mi.ListType, path: Segments
    ) -> bool:
        if info.min_length is not None and len(value) < info.min_length:
            self._fail(path, f"needs at least {info.min_length} entry, got {len(value)}")
            return False
        return True

    def _literal(self, value: str, info: mi.LiteralType, path: Segments) -> Any:
        if value in info.values:
            return value
        choices = [str(choice) for choice in info.values]
        close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        valid = ", ".join(map(repr, choices))
        return self._fail(path, f"{value!r} is not one of {valid}{hint}")

    def _number(self, value: float, info: mi.IntType | mi.FloatType, path: Segments) -> Any:
        if isinstance(info, mi.IntType) and not isinstance(value, int):
            return self._fail(path, f"expected an integer, got {describe_value(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            return self._fail(path, f"expected a finite number, got {value!r}")
        bounds = _bounds_message(info)
        if bounds and not _in_bounds(value, info):
            return self._fail(path, f"must be {bounds}, got {value!r}")
        return float(value) if isinstance(info, mi.FloatType) else value

    def _string(
        self, value: str, info: mi.StrType, path: Segments, *, hint: str | None = None
    ) -> Any:
        if info.min_length and len(value) < info.min_length:
            return self._fail(path, "must not be empty")
        if info.pattern and not re.search(info.pattern, value):
            return self._fail(path, f"{value!r}: {hint or f'must match {info.pattern}'}")
        return value


def _in_bounds(value: float, info: mi.IntType | mi.FloatType) -> bool:
    return not (
        (info.ge is not None and value < info.ge)
        or (info.gt is not None and value <= info.gt)
        or (info.le is not None and value > info.le)
        or (info.lt is not None and value >= info.lt)
    )


def _bounds_message(info: mi.IntType | mi.FloatType) -> str:
    """``"between 0 and 9"``, ``">= 1"``, ``"> 0 and <= 100"``; empty without bounds."""
    if info.ge is not None and info.le is not None:
        return f"between {info.ge:g} and {info.le:g}"
    parts = [f"{op} {bound:g}" for op, bound in _bound_pairs(info) if bound is not None]
    return " and ".join(parts)


def _bound_pairs(info: mi.IntType | mi.FloatType) -> list[tuple[str, float | None]]:
    low = (">=", info.ge) if info.ge is not None else (">", info.gt)
    high = ("<=", info.le) if info.le is not None else ("<", info.lt)
    return [low, high]
