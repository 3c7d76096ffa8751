"""The Sample: its gauges and its averaging (what downsampling keeps)."""

from __future__ import annotations

import msgspec
import pytest

from actors.sampler import PluginStats, Sample
from actors.sampler.sample import average, gauges


def test_every_figure_becomes_a_gauge_of_the_same_name() -> None:
    """Scalar fields are gauges by their own names; the timestamp is not a gauge."""
    found = {(name, tuple(labels.items())): value for name, value, labels in gauges(Sample(
        timestamp=5.0, cpu_percent=12.5, memory_percent=40.0, process_rss_bytes=1024, load1=0.5,
    ))}  # fmt: skip
    assert found[("cpu_percent", ())] == 12.5
    assert found[("memory_percent", ())] == 40.0
    assert found[("process_rss_bytes", ())] == 1024
    assert found[("load1", ())] == 0.5
    assert ("timestamp", ()) not in found


def test_per_core_and_plugin_figures_are_labelled() -> None:
    """Per-core CPU is cpu_percent{core="i"}; plugin figures are plugin_<field>{plugin=...}."""
    sample = Sample(
        cpu_percent_per_core=(10.0, 30.0),
        plugins={"weather": PluginStats(processes=1, rss_bytes=2048, cpu_percent=3.0, threads=2)},
    )
    found = {(name, tuple(labels.items())): value for name, value, labels in gauges(sample)}
    assert found[("cpu_percent", (("core", "0"),))] == 10.0
    assert found[("cpu_percent", (("core", "1"),))] == 30.0
    assert found[("plugin_rss_bytes", (("plugin", "weather"),))] == 2048
    assert found[("plugin_processes", (("plugin", "weather"),))] == 1


def test_figures_that_could_not_be_read_are_not_gauges() -> None:
    """None (forbidden USS, no cgroup limit) is left out rather than written as 0."""
    names = {name for name, _, _ in gauges(Sample(process_uss_bytes=None, cpu_limit_cores=None))}
    assert "process_uss_bytes" not in names and "cpu_limit_cores" not in names
    assert "process_rss_bytes" in names


def test_average_means_figures_and_rounds_whole_numbers() -> None:
    """Percentages average as floats; byte counts average and round to ints."""
    merged = average(
        [Sample(timestamp=1.0, cpu_percent=10.0, process_rss_bytes=101),
         Sample(timestamp=2.0, cpu_percent=20.0, process_rss_bytes=102)],
        timestamp=0.0,
    )  # fmt: skip
    assert merged.cpu_percent == 15.0
    assert merged.process_rss_bytes == 102 and isinstance(merged.process_rss_bytes, int)
    assert merged.timestamp == 0.0


def test_average_keeps_the_newest_value_of_counters() -> None:
    """Counters since boot (``*_total``) keep the newest value, whatever the input order."""
    merged = average(
        [Sample(timestamp=2.0, disk_read_bytes_total=900, disk_read_bytes_per_s=10.0),
         Sample(timestamp=1.0, disk_read_bytes_total=500, disk_read_bytes_per_s=30.0)],
        timestamp=0.0,
    )  # fmt: skip
    assert merged.disk_read_bytes_total == 900
    assert merged.disk_read_bytes_per_s == 20.0


def test_average_skips_missing_figures() -> None:
    """A figure None in some samples averages the others; None in all stays None."""
    merged = average([Sample(process_uss_bytes=None), Sample(process_uss_bytes=300)], timestamp=0.0)
    assert merged.process_uss_bytes == 300
    assert average([Sample(), Sample()], timestamp=0.0).cpu_limit_cores is None


def test_average_per_core_and_per_plugin() -> None:
    """Per-core figures average core by core; a plugin averages over the samples it is in."""
    merged = average(
        [
            Sample(timestamp=1.0, cpu_percent_per_core=(10.0, 20.0),
                   plugins={"weather": PluginStats(rss_bytes=100, uss_bytes=None)}),
            Sample(timestamp=2.0, cpu_percent_per_core=(30.0, 40.0),
                   plugins={"weather": PluginStats(rss_bytes=200, uss_bytes=None),
                            "music": PluginStats(rss_bytes=50, cpu_percent=4.0)}),
        ],
        timestamp=0.0,
    )  # fmt: skip
    assert merged.cpu_percent_per_core == (20.0, 30.0)
    assert merged.plugins["weather"].rss_bytes == 150
    assert merged.plugins["weather"].uss_bytes is None
    assert merged.plugins["music"] == PluginStats(rss_bytes=50, cpu_percent=4.0)


def test_average_of_nothing_is_refused() -> None:
    """Averaging an empty list raises ValueError."""
    with pytest.raises(ValueError, match="samples must hold at least one Sample"):
        average([], timestamp=0.0)


def test_a_sample_round_trips_through_msgpack() -> None:
    """Encoded with msgpack and decoded as a Sample, a sample is unchanged."""
    sample = Sample(
        timestamp=1.5,
        cpu_percent_per_core=(1.0, 2.0),
        plugins={"weather": PluginStats(processes=1, rss_bytes=7)},
    )
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(sample), type=Sample)
    assert decoded == sample


def test_a_sample_is_frozen() -> None:
    """Samples are shared with every subscriber: they cannot be changed."""
    sample = Sample(cpu_percent=1.0)
    with pytest.raises(AttributeError):
        sample.cpu_percent = 2.0  # type: ignore[misc]
