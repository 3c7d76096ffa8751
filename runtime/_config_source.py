"""Where config values come from: the YAML text (with line numbers) and environment overrides.

Both record an *origin* per path (``"line 12"``, ``"from JARVIS_RUNTIME__SAMPLER__INTERVAL_MS"``)
so a problem found later by the validator can say where the bad value was written.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, NamedTuple

import msgspec
import msgspec.inspect as mi
import yaml

from ._config_check import Problem, Segments, did_you_mean, format_path
from .exceptions import ConfigError, ConfigProblem

__all__ = [
    "Document",
    "apply_env_overrides",
    "config_error",
    "describe_read_error",
    "read_yaml",
]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
Origins = MutableMapping[Segments, str]


class Document(NamedTuple):
    """Decoded YAML (None when empty or unreadable), its problems and the line of each path."""

    data: Any
    problems: list[Problem]
    origins: dict[Segments, str]


def read_yaml(text: str) -> Document:
    """Decode YAML safely (no arbitrary objects); never raises for bad input.

    A syntax error gives ``data=None`` and one problem at ``$`` with its line and column.
    Duplicate keys (which YAML loaders silently collapse) are problems too.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, [], {})
        origins: dict[Segments, str] = {}
        problems: list[Problem] = []
        # Map lines before constructing: construction flattens merge keys in place.
        _map_lines(node, (), origins, problems, set())
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        return Document(None, [((), _syntax_message(exc))], {})
    finally:
        loader.dispose()
    return Document(data, problems, origins)


def _syntax_message(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}invalid YAML: {exc.problem or 'syntax error'}{context}"


def _map_lines(
    node: yaml.Node, path: Segments, origins: Origins, problems: list[Problem], seen: set[int]
) -> None:
    """Record the line of every key and list item; report duplicate keys."""
    if id(node) in seen:  # an alias: map each node once, so anchors cannot blow up the walk
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            here = (*path, key)
            if key in first_line:
                problems.append((here, f"duplicate key {key!r}, first on line {first_line[key]}"))
            first_line.setdefault(key, line)
            origins[here] = f"line {line}"
            _map_lines(value_node, here, origins, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            origins[(*path, index)] = f"line {item.start_mark.line + 1}"
            _map_lines(item, (*path, index), origins, problems, seen)


def apply_env_overrides(
    data: dict[Any, Any],
    env: Mapping[str, str],
    schema: mi.Type,
    origins: Origins,
    prefix: str,
) -> list[Problem]:
    """Set ``PREFIX_SECTION__KEY[__SUBKEY...]`` values (parsed as YAML) into ``data`` in place.

    Names match keys case-insensitively; a list item is named by its index. Returns a problem,
    whose path is the variable's name, for each variable that names no key or cannot be parsed.
    """
    problems: list[Problem] = []
    for name in sorted(env):
        if not name.startswith(prefix):
            continue
        try:
            value = yaml.load(env[name], Loader=_Loader)
        except yaml.YAMLError as exc:
            problems.append((name, f"{env[name]!r} is not a YAML value: {_syntax_message(exc)}"))
            continue
        segments = name[len(prefix) :].split("__")
        error = _set_path(data, segments, value, schema, origins, name)
        if error:
            problems.append((name, error))
    return problems


def _set_path(
    data: dict[Any, Any],
    segments: list[str],
    value: object,
    schema: mi.Type,
    origins: Origins,
    name: str,
) -> str | None:
    """Set one override; returns what is wrong with the variable's name, or None."""
    container: Any = data
    info: mi.Type = schema
    path: Segments = ()
    for position, segment in enumerate(segments):
        if not segment:
            return "empty key in the variable name (a '__' too many?)"
        step = _step(container, _unwrap(info), segment, path)
        if isinstance(step, str):
            return step
        key, info, default = step
        path = (*path, key)
        if position == len(segments) - 1:
            container[key] = value
            for known in [p for p in origins if p[: len(path)] == path]:
                del origins[known]  # lines in the file no longer say where these values are
            origins[path] = f"from {name}"
            return None
        container = _enter(container, key, info, default, path, segments[position + 1])
        if isinstance(container, str):
            return container
    return None


def _enter(
    container: Any, key: Any, info: mi.Type, default: Any, path: Segments, next_key: str
) -> Any:
    """The child at ``key`` to set a key inside (made from its default if absent), or why not."""
    kind = _unwrap(info)
    if not isinstance(kind, mi.StructType | mi.DictType | mi.ListType):
        return f"{format_path(path)} is a single value; it has no key {next_key.lower()!r}"
    if isinstance(container, dict) and container.get(key) is None:
        container[key] = default()
    child = container[key]
    if not isinstance(child, list if isinstance(kind, mi.ListType) else dict):
        return f"{format_path(path)} is {child!r}; cannot override a key inside it"
    return child


def _step(container: Any, info: mi.Type, segment: str, path: Segments) -> Any:
    """(key, type of the child, factory for a missing child) or a message saying what is wrong."""
    where = format_path(path) if path else "the top level"
    if isinstance(info, mi.StructType):
        fields = {field.encode_name.lower(): field for field in info.fields}
        field = fields.get(segment.lower())
        if field is None:
            return f"unknown key {segment.lower()!r} in {where}{did_you_mean(segment, fields)}"
        return field.encode_name, field.type, lambda: _default_builtins(field)
    if isinstance(info, mi.DictType):
        existing = {str(key).lower(): key for key in container}
        return existing.get(segment.lower(), segment.lower()), info.value_type, dict
    assert isinstance(info, mi.ListType)  # _set_path enters nothing but containers
    if not segment.isdigit() or int(segment) >= len(container):
        return f"{segment!r} is not an index of {where} (it has {len(container)} items)"
    return int(segment), info.item_type, dict


def _unwrap(info: mi.Type) -> mi.Type:
    """The container type behind ``Annotated`` or ``X | None``, if there is one."""
    if isinstance(info, mi.Metadata):
        return _unwrap(info.type)
    if isinstance(info, mi.UnionType):
        for member in info.types:
            if isinstance(_unwrap(member), mi.StructType | mi.DictType | mi.ListType):
                return _unwrap(member)
    return info


def _default_builtins(field: mi.Field) -> Any:
    """A field's default as plain data, so an override can change one key inside it."""
    if field.default is not msgspec.NODEFAULT:
        return msgspec.to_builtins(field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return msgspec.to_builtins(field.default_factory())
    return {}


def config_error(
    problems: list[Problem], origins: Mapping[Segments, str], source: str
) -> ConfigError:
    """One ConfigError; each message ends with where the value came from when known."""
    out = []
    for segments, message in problems:
        origin = _origin_of(segments, origins)
        suffix = f" ({origin})" if origin else ""
        path = segments if isinstance(segments, str) else format_path(segments)
        out.append(ConfigProblem(path, " ".join(f"{message}{suffix}".split("\n"))))
    return ConfigError(out, source=source)


def _origin_of(segments: Segments | str, origins: Mapping[Segments, str]) -> str | None:
    """The line or variable behind the longest known prefix of a path."""
    if isinstance(segments, str):
        return None
    for end in range(len(segments), 0, -1):
        origin = origins.get(segments[:end])
        if origin is not None:
            return origin
    return None


def describe_read_error(exc: OSError | UnicodeDecodeError) -> str:
    """Why a config file could not be read, in a few words."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return exc.strerror or type(exc).__name__
