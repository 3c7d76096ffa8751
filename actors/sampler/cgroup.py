"""cgroup v2 limits: the container's memory and CPU budget, read from its interface files.

A process in a container sees the host's CPUs and memory through ``psutil``; its real budget is
in the cgroup v2 files ``memory.max``, ``memory.swap.max`` and ``cpu.max`` of its own cgroup and
of every ancestor (the tightest one binds). ``CgroupReader`` finds the process's cgroup from
``/proc/self/cgroup`` (the ``0::/path`` line) under a root that tests point at fixture files.

The parsers are pure and raise ``ValueError`` for text that is not in the kernel's format.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

__all__ = [
    "DEFAULT_ROOT",
    "CgroupLimits",
    "CgroupReader",
    "CgroupUsage",
    "own_cgroup_path",
    "parse_cpu_max",
    "parse_flat_keyed",
    "parse_limit",
]

DEFAULT_ROOT = Path("/sys/fs/cgroup")
_DEFAULT_PERIOD_US = 100_000  # the kernel's default cpu.max period


class _Parser(Protocol):
    def __call__(self, text: str, *, name: str) -> float | None: ...


def parse_limit(text: str, *, name: str = "limit") -> int | None:
    """A ``memory.max``-style value: bytes, or ``None`` for ``max`` (no limit).

    Raises ``ValueError`` for anything else (``name`` is the file, for the message).
    """
    value = text.strip()
    if value == "max":
        return None
    if not value.isdigit():
        raise ValueError(f"{name}: expected a byte count or 'max', got {value!r}")
    return int(value)


def parse_cpu_max(text: str, *, name: str = "cpu.max") -> float | None:
    """``cpu.max`` (``"$MAX $PERIOD"``) as a number of cores, or ``None`` for no quota.

    ``"max 100000"`` and ``"max"`` mean no quota; ``"50000 100000"`` is 0.5 cores; a lone
    number uses the kernel's default period of 100 ms. Raises ``ValueError`` for other text.
    """
    fields = text.split()
    if not 1 <= len(fields) <= 2:
        raise ValueError(f"{name}: expected '$MAX $PERIOD', got {text.strip()!r}")
    quota, period = fields[0], fields[1] if len(fields) == 2 else str(_DEFAULT_PERIOD_US)
    if not period.isdigit() or int(period) == 0:
        raise ValueError(f"{name}: period must be a positive integer, got {period!r}")
    if quota == "max":
        return None
    if not quota.isdigit():
        raise ValueError(f"{name}: quota must be an integer or 'max', got {quota!r}")
    return int(quota) / int(period)


def parse_flat_keyed(text: str, *, name: str = "stat") -> dict[str, int]:
    """A flat keyed file (``cpu.stat``, ``memory.stat``): ``key value`` per line.

    Raises ``ValueError`` for a line that is not a key and an integer.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{name}: expected 'key integer' lines, got {line!r}")
        values[fields[0]] = int(fields[1])
    return values


def own_cgroup_path(proc_self_cgroup: str) -> str | None:
    """The cgroup v2 path in ``/proc/self/cgroup`` text (its ``0::`` line), or ``None``."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


class CgroupLimits(NamedTuple):
    """The binding limits and where they are set (``None``: no limit on the way to the root)."""

    memory_max_bytes: int | None
    swap_max_bytes: int | None
    cpu_limit_cores: float | None
    memory_dir: Path | None
    swap_dir: Path | None
    cpu_dir: Path | None


class CgroupUsage(NamedTuple):
    """Usage of the cgroups whose limits bind (``None`` where there is no limit or no file)."""

    memory_current_bytes: int | None
    memory_inactive_file_bytes: int
    swap_current_bytes: int | None
    cpu_usage_us: int | None


class CgroupReader:
    """Reads the limits and usage of one cgroup v2 directory and its ancestors up to ``root``."""

    def __init__(self, root: Path, cgroup_path: str) -> None:
        self.root = root
        self.directory = root / cgroup_path.lstrip("/")

    @classmethod
    def discover(
        cls, root: Path = DEFAULT_ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")
    ) -> CgroupReader | None:
        """The reader for this process, or ``None`` when ``root`` is not a cgroup v2 mount
        (no ``cgroup.controllers``) or the process has no v2 cgroup. Blocking file I/O."""
        if not (root / "cgroup.controllers").is_file():
            return None
        try:
            path = own_cgroup_path(proc_self_cgroup.read_text())
        except OSError:
            return None
        if path is None:
            return None
        reader = cls(root, path)
        # In a cgroup namespace the path may not exist under this mount: the root is ours.
        return reader if reader.directory.is_dir() else cls(root, "/")

    def _chain(self) -> list[Path]:
        """This cgroup and its ancestors, innermost first, ending at the root."""
        chain, directory = [self.directory], self.directory
        while directory != self.root and self.root in directory.parents:
            directory = directory.parent
            chain.append(directory)
        return chain

    def _tightest(self, filename: str, parse: _Parser) -> tuple[float, Path] | None:
        """The smallest limit in ``filename`` along the chain, and the directory setting it."""
        best: tuple[float, Path] | None = None
        for directory in self._chain():
            text = _read(directory / filename)
            if text is None:
                continue
            value = parse(text, name=str(directory / filename))
            if value is not None and (best is None or value < best[0]):
                best = (value, directory)
        return best

    def limits(self) -> CgroupLimits:
        """The tightest memory, swap and CPU limits. Raises ``ValueError`` for a malformed file."""
        memory = self._tightest("memory.max", parse_limit)
        swap = self._tightest("memory.swap.max", parse_limit)
        cpu = self._tightest("cpu.max", parse_cpu_max)
        return CgroupLimits(
            memory_max_bytes=int(memory[0]) if memory else None,
            swap_max_bytes=int(swap[0]) if swap else None,
            cpu_limit_cores=cpu[0] if cpu else None,
            memory_dir=memory[1] if memory else None,
            swap_dir=swap[1] if swap else None,
            cpu_dir=cpu[1] if cpu else None,
        )

    def usage(self, limits: CgroupLimits) -> CgroupUsage:
        """What the cgroups named in ``limits`` use. Raises ``ValueError`` for a malformed file."""
        memory_current = inactive_file = None
        if limits.memory_dir is not None:
            memory_current = _read_int(limits.memory_dir / "memory.current")
            stat = _read(limits.memory_dir / "memory.stat")
            if stat is not None:
                inactive_file = parse_flat_keyed(stat, name="memory.stat").get("inactive_file")
        swap_current = None
        if limits.swap_dir is not None:
            swap_current = _read_int(limits.swap_dir / "memory.swap.current")
        cpu_usage = None
        if limits.cpu_dir is not None:
            stat = _read(limits.cpu_dir / "cpu.stat")
            if stat is not None:
                cpu_usage = parse_flat_keyed(stat, name="cpu.stat").get("usage_usec")
        return CgroupUsage(memory_current, inactive_file or 0, swap_current, cpu_usage)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    return parse_limit(text, name=str(path))
