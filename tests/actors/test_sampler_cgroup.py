"""cgroup v2 limits: the parsers, the hierarchy walk and the collector's budget-relative figures.

The fixture files below are copied in the kernel's own format (a Docker container started with
``--memory 512m --cpus 1.5`` on Linux 6.x, nested under ``system.slice``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.sampler.cgroup import (
    CgroupReader,
    own_cgroup_path,
    parse_cpu_max,
    parse_flat_keyed,
    parse_limit,
)
from actors.sampler.collector import Collector
from runtime.testing import capture_logs

CPU_STAT = """usage_usec 2512345
user_usec 1800000
system_usec 712345
core_sched.force_idle_usec 0
nr_periods 1204
nr_throttled 31
throttled_usec 450123
nr_bursts 0
burst_usec 0
"""

MEMORY_STAT = """anon 104857600
file 62914560
kernel 4194304
kernel_stack 491520
pagetables 1048576
sec_pagetables 0
percpu 2880
sock 0
vmalloc 8192
shmem 0
zswap 0
zswapped 0
file_mapped 20971520
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 0
active_anon 104857600
inactive_file 41943040
active_file 20971520
unevictable 0
slab_reclaimable 1572864
slab_unreclaimable 524288
slab 2097152
workingset_refault_anon 0
workingset_refault_file 12
pgfault 48211
pgmajfault 3
"""

PROC_SELF_CGROUP_V2 = "0::/system.slice/docker-4f1c.scope\n"
PROC_SELF_CGROUP_HYBRID = """12:memory:/system.slice/docker-4f1c.scope
3:cpu,cpuacct:/system.slice/docker-4f1c.scope
1:name=systemd:/system.slice/docker-4f1c.scope
0::/system.slice/docker-4f1c.scope
"""
PROC_SELF_CGROUP_V1 = "12:memory:/docker/4f1c\n3:cpu,cpuacct:/docker/4f1c\n"


def write_tree(root: Path, files: dict[str, str]) -> None:
    """A cgroup v2 mount at ``root``: ``files`` maps relative paths to their contents."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def container(
    root: Path, *, memory_max: str = "536870912\n", cpu_max: str = "150000 100000\n"
) -> tuple[CgroupReader | None, Path]:
    """The Docker container's tree: limits on the scope, none on system.slice or the root."""
    scope = "system.slice/docker-4f1c.scope"
    write_tree(
        root,
        {
            "system.slice/memory.max": "max\n",
            "system.slice/cpu.max": "max 100000\n",
            f"{scope}/memory.max": memory_max,
            f"{scope}/memory.current": "130023424\n",
            f"{scope}/memory.stat": MEMORY_STAT,
            f"{scope}/memory.swap.max": "0\n",
            f"{scope}/memory.swap.current": "0\n",
            f"{scope}/cpu.max": cpu_max,
            f"{scope}/cpu.stat": CPU_STAT,
        },
    )
    proc_self_cgroup = root.parent / "proc-self-cgroup"
    proc_self_cgroup.write_text(PROC_SELF_CGROUP_V2)
    return CgroupReader.discover(root, proc_self_cgroup), root / scope


# -- parsers -----------------------------------------------------------------------------------


def test_memory_max_is_bytes_or_none_for_max() -> None:
    """memory.max reads as bytes; "max" means no limit."""
    assert parse_limit("536870912\n") == 536_870_912
    assert parse_limit("max\n") is None


@pytest.mark.parametrize("text", ["", "512M\n", "-1\n", "max max\n"])
def test_memory_max_in_another_format_is_refused(text: str) -> None:
    """Anything but digits or "max" raises ValueError naming the file."""
    with pytest.raises(ValueError, match=r"memory\.max: expected a byte count or 'max'"):
        parse_limit(text, name="memory.max")


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("max 100000\n", None),
        ("max\n", None),
        ("150000 100000\n", 1.5),
        ("50000 100000\n", 0.5),
        ("25000 50000\n", 0.5),
        ("200000\n", 2.0),
    ],
)
def test_cpu_max_is_cores_or_none(text: str, cores: float | None) -> None:
    """cpu.max "$MAX $PERIOD" is quota / period cores; "max" is no quota; a lone quota uses the
    kernel's default 100 ms period."""
    assert parse_cpu_max(text) == cores


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected '\\$MAX \\$PERIOD'"),
        ("1 2 3\n", "expected '\\$MAX \\$PERIOD'"),
        ("lots 100000\n", "quota must be an integer or 'max'"),
        ("50000 0\n", "period must be a positive integer"),
        ("50000 soon\n", "period must be a positive integer"),
    ],
)
def test_cpu_max_in_another_format_is_refused(text: str, message: str) -> None:
    """A malformed cpu.max raises ValueError saying which part is wrong."""
    with pytest.raises(ValueError, match=message):
        parse_cpu_max(text)


def test_flat_keyed_files_parse_to_integers() -> None:
    """cpu.stat and memory.stat parse to {key: int}."""
    assert parse_flat_keyed(CPU_STAT)["usage_usec"] == 2_512_345
    assert parse_flat_keyed(MEMORY_STAT)["inactive_file"] == 41_943_040


def test_a_flat_keyed_line_that_is_not_key_and_integer_is_refused() -> None:
    """A line with no integer value raises ValueError quoting the line."""
    with pytest.raises(
        ValueError, match=r"cpu\.stat: expected 'key integer' lines, got 'usage_usec x'"
    ):
        parse_flat_keyed("usage_usec x\n", name="cpu.stat")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (PROC_SELF_CGROUP_V2, "/system.slice/docker-4f1c.scope"),
        (PROC_SELF_CGROUP_HYBRID, "/system.slice/docker-4f1c.scope"),
        ("0::/\n", "/"),
        (PROC_SELF_CGROUP_V1, None),
        ("", None),
    ],
)
def test_own_cgroup_path_is_the_v2_line(text: str, path: str | None) -> None:
    """The v2 path is the 0:: line's; v1-only (or empty) /proc/self/cgroup has none."""
    assert own_cgroup_path(text) == path


# -- the hierarchy -----------------------------------------------------------------------------


def test_the_tightest_limit_on_the_way_to_the_root_binds(tmp_path: Path) -> None:
    """The scope's 512 MiB and 1.5 cores bind over system.slice's "max"; swap 0 is a limit."""
    reader, scope = container(tmp_path / "cgroup")
    assert reader is not None
    limits = reader.limits()
    assert limits.memory_max_bytes == 536_870_912
    assert limits.cpu_limit_cores == 1.5
    assert limits.swap_max_bytes == 0
    assert limits.memory_dir == scope and limits.cpu_dir == scope


def test_a_tighter_ancestor_wins_over_the_cgroups_own_limit(tmp_path: Path) -> None:
    """A parent's 256 MiB binds when the process's own cgroup says 512 MiB."""
    reader, _ = container(tmp_path / "cgroup")
    assert reader is not None
    (tmp_path / "cgroup/system.slice/memory.max").write_text("268435456\n")
    limits = reader.limits()
    assert limits.memory_max_bytes == 268_435_456
    assert limits.memory_dir == tmp_path / "cgroup/system.slice"


def test_usage_is_read_where_the_limit_binds(tmp_path: Path) -> None:
    """memory.current, memory.stat's inactive_file and cpu.stat's usage_usec of the scope."""
    reader, _ = container(tmp_path / "cgroup")
    assert reader is not None
    usage = reader.usage(reader.limits())
    assert usage.memory_current_bytes == 130_023_424
    assert usage.memory_inactive_file_bytes == 41_943_040
    assert usage.cpu_usage_us == 2_512_345
    assert usage.swap_current_bytes == 0


def test_missing_files_mean_no_limit(tmp_path: Path) -> None:
    """A v2 cgroup without memory.max / cpu.max files (controllers not enabled) has no limits."""
    root = tmp_path / "cgroup"
    write_tree(root, {"app/cgroup.procs": "1\n"})
    reader = CgroupReader(root, "/app")
    limits = reader.limits()
    assert (limits.memory_max_bytes, limits.cpu_limit_cores, limits.swap_max_bytes) == (
        None,
        None,
        None,
    )
    assert reader.usage(limits).cpu_usage_us is None


def test_discovery_finds_no_cgroup_on_a_v1_mount(tmp_path: Path) -> None:
    """Without cgroup.controllers at the root (a v1 or hybrid mount) there is no v2 reader."""
    root = tmp_path / "cgroup"
    (root / "memory").mkdir(parents=True)
    proc = tmp_path / "cgroup-file"
    proc.write_text(PROC_SELF_CGROUP_HYBRID)
    assert CgroupReader.discover(root, proc) is None


def test_discovery_needs_a_v2_line_and_a_readable_proc_file(tmp_path: Path) -> None:
    """A v1-only /proc/self/cgroup, or none at all, means no reader."""
    root = tmp_path / "cgroup"
    write_tree(root, {})
    proc = tmp_path / "cgroup-file"
    proc.write_text(PROC_SELF_CGROUP_V1)
    assert CgroupReader.discover(root, proc) is None
    assert CgroupReader.discover(root, tmp_path / "absent") is None


def test_in_a_cgroup_namespace_the_mount_root_is_our_cgroup(tmp_path: Path) -> None:
    """When the v2 path does not exist under the mount (a cgroup namespace), the root is read."""
    root = tmp_path / "cgroup"
    write_tree(root, {"memory.max": "1073741824\n", "cpu.max": "max 100000\n"})
    proc = tmp_path / "cgroup-file"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    reader = CgroupReader.discover(root, proc)
    assert reader is not None and reader.directory == root
    assert reader.limits().memory_max_bytes == 1_073_741_824


def test_a_malformed_limit_file_raises_naming_the_file(tmp_path: Path) -> None:
    """limits() raises ValueError naming the malformed file."""
    reader, scope = container(tmp_path / "cgroup", cpu_max="lots\n")
    assert reader is not None
    with pytest.raises(ValueError, match=f"{scope}/cpu.max: quota must be"):
        reader.limits()


# -- the collector's figures against the budget ------------------------------------------------


def collector_in(root: Path) -> Collector:
    return Collector(cgroup_root=root, proc_self_cgroup=root.parent / "proc-self-cgroup")


def test_memory_percent_is_the_working_set_of_the_memory_limit(tmp_path: Path) -> None:
    """memory_percent = (memory.current - inactive_file) / memory.max: 88 MiB of 512 MiB."""
    root = tmp_path / "cgroup"
    container(root)
    collector = collector_in(root)
    collector.prime(0.0)
    sample = collector.collect(1.0, 1_800_000_001.0, {}).sample
    assert sample.memory_limit_bytes == 536_870_912
    assert sample.memory_total_bytes == 536_870_912
    assert sample.memory_used_bytes == 130_023_424 - 41_943_040
    assert sample.memory_percent == pytest.approx(88_080_384 / 536_870_912 * 100)


def test_cpu_percent_is_a_share_of_the_cpu_quota(tmp_path: Path) -> None:
    """0.75 s of CPU in 1 s against a 1.5-core quota reads 50 %."""
    root = tmp_path / "cgroup"
    _, scope = container(root)
    collector = collector_in(root)
    collector.prime(10.0)
    (scope / "cpu.stat").write_text(CPU_STAT.replace("2512345", str(2_512_345 + 750_000)))
    sample = collector.collect(11.0, 1_800_000_001.0, {}).sample
    assert sample.cpu_limit_cores == 1.5
    assert sample.cpu_percent == pytest.approx(50.0)
    assert len(sample.cpu_percent_per_core) == sample.cpu_count  # per core stays the host's


def test_without_cgroup_limits_the_host_figures_are_used(tmp_path: Path) -> None:
    """memory.max and cpu.max at "max": memory_total_bytes is the host's, no cpu limit."""
    root = tmp_path / "cgroup"
    container(root, memory_max="max\n", cpu_max="max 100000\n")
    collector = collector_in(root)
    collector.prime(0.0)
    sample = collector.collect(1.0, 1_800_000_001.0, {}).sample
    assert sample.memory_limit_bytes is None and sample.cpu_limit_cores is None
    assert sample.memory_total_bytes > 536_870_912


def test_a_malformed_cgroup_file_falls_back_to_host_figures_and_warns_once(
    tmp_path: Path,
) -> None:
    """A bad cpu.max gives host figures and one warning however many samples follow."""
    root = tmp_path / "cgroup"
    container(root, cpu_max="lots of cpu\n")
    collector = collector_in(root)
    with capture_logs() as logs:
        collector.prime(0.0)
        first = collector.collect(1.0, 1_800_000_001.0, {}).sample
        collector.collect(2.0, 1_800_000_002.0, {})
    assert first.cpu_limit_cores is None and first.memory_limit_bytes is None
    warnings = [e for e in logs if e["event"] == "cgroup files unreadable; using host figures"]
    assert len(warnings) == 1
    assert "cpu.max" in warnings[0]["error"]
