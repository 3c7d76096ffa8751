"""The Sample: one reading of the machine, the runtime's processes and the plugins' processes.

A ``Sample`` is a frozen msgspec Struct, so it crosses threads, subscribers and the SQLite
history unchanged (encoded with msgpack, never pickle). Every field has a default so that rows
written by an older version still decode when fields are added.

Percent figures are relative to the budget in force: with a cgroup v2 ``cpu.max`` or
``memory.max`` set, ``cpu_percent`` and ``memory_percent`` are shares of the container's
budget, otherwise of the host. Process CPU figures are percent of one core (a process using
two cores fully reads 200), as ``top`` and ``psutil`` report them.

Pure helpers: ``gauges`` names each figure for the metrics registry and ``average`` folds
samples into one (downsampling).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, get_args, get_type_hints

import msgspec

__all__ = ["PluginStats", "Sample", "average", "gauges"]


class PluginStats(msgspec.Struct, frozen=True, kw_only=True):
    """The processes watched for one plugin, summed. ``None``: forbidden for every one."""

    processes: int = 0
    rss_bytes: int = 0
    uss_bytes: int | None = None
    cpu_percent: float = 0.0
    threads: int = 0
    open_fds: int | None = None


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """One reading. ``timestamp`` is wall-clock seconds (Unix epoch)."""

    timestamp: float = 0.0
    # CPU: of the cgroup's quota when cpu.max sets one, else of all cores; per core of the host.
    cpu_percent: float = 0.0
    cpu_percent_per_core: tuple[float, ...] = ()
    cpu_count: int = 0
    cpu_limit_cores: float | None = None
    # Memory: the working set against memory.max when set, else the host's used memory.
    memory_percent: float = 0.0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    memory_limit_bytes: int | None = None
    swap_percent: float = 0.0
    swap_used_bytes: int = 0
    swap_total_bytes: int = 0
    # Disk usage of the configured path; I/O of every disk (counters since boot, and rates).
    disk_percent: float = 0.0
    disk_used_bytes: int = 0
    disk_free_bytes: int = 0
    disk_read_bytes_total: int = 0
    disk_write_bytes_total: int = 0
    disk_read_bytes_per_s: float = 0.0
    disk_write_bytes_per_s: float = 0.0
    net_sent_bytes_total: int = 0
    net_recv_bytes_total: int = 0
    net_sent_bytes_per_s: float = 0.0
    net_recv_bytes_per_s: float = 0.0
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    # The runtime's own process, and all its descendants summed.
    process_rss_bytes: int = 0
    process_uss_bytes: int | None = None
    process_cpu_percent: float = 0.0
    process_threads: int = 0
    process_open_fds: int | None = None
    children_count: int = 0
    children_rss_bytes: int = 0
    children_uss_bytes: int | None = None
    children_cpu_percent: float = 0.0
    # Processes registered with ``Sampler.watch``, by plugin name.
    plugins: dict[str, PluginStats] = msgspec.field(default_factory=dict)


_SCALARS: tuple[str, ...] = tuple(
    name
    for name in Sample.__struct_fields__
    if name not in ("timestamp", "cpu_percent_per_core", "plugins")
)
_PLUGIN_FIELDS: tuple[str, ...] = PluginStats.__struct_fields__


def _int_fields(struct: type[msgspec.Struct]) -> frozenset[str]:
    hints = get_type_hints(struct)
    return frozenset(n for n, h in hints.items() if h is int or int in get_args(h))


# Averages of these are rounded back to whole numbers (bytes, counts).
_INTS = _int_fields(Sample) | {f"plugin_{name}" for name in _int_fields(PluginStats)}
# Counters since boot: the newest value of a bucket is its value; an average would mean nothing.
_COUNTERS = frozenset(name for name in _SCALARS if name.endswith("_total"))


def gauges(sample: Sample) -> Iterator[tuple[str, float, dict[str, str]]]:
    """Every figure of ``sample`` as ``(gauge name, value, labels)``; ``None`` figures are left out.

    Fields keep their names; per-core CPU is ``cpu_percent{core="0"}``; plugin figures are
    ``plugin_<field>{plugin="weather"}``.
    """
    for name in _SCALARS:
        value = getattr(sample, name)
        if value is not None:
            yield name, value, {}
    for core, value in enumerate(sample.cpu_percent_per_core):
        yield "cpu_percent", value, {"core": str(core)}
    for plugin, stats in sample.plugins.items():
        for name in _PLUGIN_FIELDS:
            value = getattr(stats, name)
            if value is not None:
                yield f"plugin_{name}", value, {"plugin": plugin}


def average(samples: Sequence[Sample], *, timestamp: float) -> Sample:
    """One sample standing for ``samples``: figures averaged, counters at their newest value.

    A figure that is ``None`` in some samples is averaged over the others (``None`` if in all);
    per-core figures are averaged core by core; plugins over the samples they appear in.
    Raises ``ValueError`` when ``samples`` is empty.
    """
    if not samples:
        raise ValueError("samples must hold at least one Sample to average")
    ordered = sorted(samples, key=lambda s: s.timestamp)
    fields: dict[str, Any] = {name: _mean_of(ordered, name) for name in _SCALARS}
    fields["cpu_percent_per_core"] = _per_core(ordered)
    fields["plugins"] = _plugins(ordered)
    return Sample(timestamp=timestamp, **fields)


def _mean_of(samples: Sequence[Sample], name: str) -> Any:
    values = [v for s in samples if (v := getattr(s, name)) is not None]
    if not values:
        return None
    if name in _COUNTERS:
        return values[-1]
    mean = sum(values) / len(values)
    return round(mean) if name in _INTS else mean


def _per_core(samples: Sequence[Sample]) -> tuple[float, ...]:
    cores = len(samples[-1].cpu_percent_per_core)
    rows = [s.cpu_percent_per_core for s in samples if len(s.cpu_percent_per_core) == cores]
    return tuple(sum(column) / len(rows) for column in zip(*rows, strict=True)) if rows else ()


def _plugins(samples: Sequence[Sample]) -> dict[str, PluginStats]:
    seen: dict[str, list[PluginStats]] = {}
    for sample in samples:
        for plugin, stats in sample.plugins.items():
            seen.setdefault(plugin, []).append(stats)
    return {plugin: _average_stats(group) for plugin, group in seen.items()}


def _average_stats(group: Sequence[PluginStats]) -> PluginStats:
    fields: dict[str, Any] = {}
    for name in _PLUGIN_FIELDS:
        values = [v for s in group if (v := getattr(s, name)) is not None]
        if not values:
            fields[name] = None
            continue
        mean = sum(values) / len(values)
        fields[name] = round(mean) if f"plugin_{name}" in _INTS else mean
    return PluginStats(**fields)
