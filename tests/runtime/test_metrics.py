"""The gauge registry behind rt.metrics."""

from __future__ import annotations

import pytest

from runtime.clock import FakeClock
from runtime.metrics import MetricsRegistry


def test_set_and_get_by_labels(clock: FakeClock) -> None:
    """A gauge is one value per label set; labels are order-insensitive."""
    metrics = MetricsRegistry(clock=clock)
    metrics.set("stt_queue_depth", 4, device="kitchen", room="a")
    metrics.set("stt_queue_depth", 7, device="hall")
    assert metrics.get("stt_queue_depth", room="a", device="kitchen") == 4.0
    assert metrics.get("stt_queue_depth", device="hall") == 7.0
    assert metrics.get("stt_queue_depth") is None
    assert [g.labels for g in metrics.series("stt_queue_depth")] == [
        (("device", "hall"),),
        (("device", "kitchen"), ("room", "a")),
    ]


async def test_updated_at_reads_the_clock(clock: FakeClock) -> None:
    """Each write records the clock's time, so readers can tell stale series."""
    metrics = MetricsRegistry(clock=clock)
    metrics.set("x", 1)
    await clock.advance(3.0)
    metrics.set("y", 2)
    assert {g.name: g.updated_at for g in metrics} == {"x": 0.0, "y": 3.0}


@pytest.mark.parametrize(
    ("name", "value", "labels", "message"),
    [
        ("1bad", 1, {}, "metric name '1bad' is invalid"),
        ("has-dash", 1, {}, "metric name 'has-dash' is invalid"),
        ("ok", "four", {}, "value must be a number, got 'four'"),
        ("ok", True, {}, "value must be a number, got True"),
        ("ok", 1, {"2x": "a"}, "label name '2x' is invalid"),
        ("ok", 1, {"__reserved": "a"}, "label name '__reserved' is invalid"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    name: str, value: object, labels: dict[str, str], message: str
) -> None:
    """Invalid names, label names and values raise ValueError and store nothing."""
    metrics = MetricsRegistry()
    metrics.set("ok", 5)
    with pytest.raises(ValueError, match=message):
        metrics.set(name, value, **labels)  # type: ignore[arg-type]
    assert metrics.get("ok") == 5.0 and len(metrics) == 1


def test_remove_and_names() -> None:
    """remove forgets one series; names lists what is set."""
    metrics = MetricsRegistry()
    metrics.set("a", 1, x="1")
    metrics.set("b", 2)
    assert metrics.names() == ["a", "b"]
    assert metrics.remove("a", x="1") and not metrics.remove("a", x="1")
    assert metrics.names() == ["b"]


def test_describe_keeps_help_text() -> None:
    """describe attaches help text; an invalid name is refused."""
    metrics = MetricsRegistry()
    metrics.describe("voice_p99_seconds", "voice turn latency p99")
    assert metrics.help_text("voice_p99_seconds") == "voice turn latency p99"
    with pytest.raises(ValueError):
        metrics.describe("bad name", "x")
