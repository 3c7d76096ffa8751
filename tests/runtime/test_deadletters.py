"""Dead letters: the bounded ring, the counts and the rate-limited log."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from runtime.clock import FakeClock
from runtime.deadletters import DeadLetter, DeadLetters


def test_add_records_message_reason_source_and_wall_time(clock: FakeClock) -> None:
    """An added letter keeps the message, why, who sent it and the wall-clock time."""
    dead = DeadLetters(clock=clock)
    dead.add("hello", reason="channel_full", source="sampler")
    assert dead.entries() == [DeadLetter("hello", "channel_full", "sampler", clock.wall())]
    assert dead.total == 1
    assert len(dead) == 1


def test_ring_keeps_the_newest_and_total_counts_everything(clock: FakeClock) -> None:
    """Past capacity the oldest entries fall off, while total and by_reason count them all."""
    dead = DeadLetters(3, clock=clock)
    for n in range(5):
        dead.add(n, reason="channel_full" if n % 2 else "channel_closed")
    assert [letter.message for letter in dead.entries()] == [2, 3, 4]
    assert dead.total == 5
    assert dead.by_reason == {"channel_closed": 3, "channel_full": 2}


def test_statistics_snapshot(clock: FakeClock) -> None:
    """statistics() reports total, kept, capacity, per-reason counts and suppressed logs."""
    with capture_logs():
        dead = DeadLetters(2, clock=clock)
        for _ in range(4):
            dead.add("m", reason="r")
    stats = dead.statistics()
    assert (stats.total, stats.kept, stats.capacity) == (4, 2, 2)
    assert stats.by_reason == {"r": 4}
    assert stats.suppressed_logs == 3


def test_counts_handed_out_are_copies(clock: FakeClock) -> None:
    """Mutating the returned by_reason does not change the dead letters' own counts."""
    dead = DeadLetters(clock=clock)
    dead.add("m", reason="r")
    dead.by_reason["r"] = 99
    dead.statistics().by_reason["r"] = 99
    assert dead.by_reason == {"r": 1}


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_rejects_a_bad_capacity(clock: FakeClock, capacity: Any) -> None:
    """A capacity that is not an int >= 1 raises ValueError naming it."""
    with pytest.raises(ValueError, match="capacity"):
        DeadLetters(capacity, clock=clock)


def test_rejects_a_negative_log_interval(clock: FakeClock) -> None:
    """A negative log interval raises ValueError naming it."""
    with pytest.raises(ValueError, match="log_interval_s"):
        DeadLetters(clock=clock, log_interval_s=-1.0)


async def test_many_adds_within_an_interval_log_one_line(clock: FakeClock) -> None:
    """Within one interval only the first add logs; the rest are counted as suppressed."""
    with capture_logs() as logs:
        dead = DeadLetters(clock=clock, log_interval_s=10.0)
        for _ in range(5):
            dead.add("m", reason="channel_full")
            await clock.advance(1.0)
    assert len(logs) == 1
    assert logs[0]["count"] == 1
    assert dead.statistics().suppressed_logs == 4


async def test_after_the_interval_the_next_line_counts_what_was_added(clock: FakeClock) -> None:
    """The first add after the interval logs how many were added since the previous line."""
    with capture_logs() as logs:
        dead = DeadLetters(clock=clock, log_interval_s=10.0)
        for _ in range(4):
            dead.add("m", reason="channel_full", source="a")
        await clock.advance(9.9)
        dead.add("m", reason="channel_full", source="a")
        assert len(logs) == 1
        await clock.advance(0.1)
        dead.add(b"x", reason="channel_closed", source="b")
    assert len(logs) == 2
    second = logs[1]
    assert second["count"] == 5
    assert second["total"] == 6
    assert (second["reason"], second["source"], second["message_type"]) == (
        "channel_closed",
        "b",
        "bytes",
    )


def test_log_line_names_the_actor_and_the_type_but_not_the_message(clock: FakeClock) -> None:
    """The log line carries actor=dead_letters and the message's type name, never its content."""
    with capture_logs() as logs:
        dead = DeadLetters(clock=clock)
        dead.add({"password": "hunter2"}, reason="channel_full")
    [line] = logs
    assert line["actor"] == "dead_letters"
    assert line["log_level"] == "warning"
    assert line["event"] == "dead_letters"
    assert line["message_type"] == "dict"
    assert "hunter2" not in repr(line)


def test_zero_interval_logs_every_add(clock: FakeClock) -> None:
    """With log_interval_s=0 nothing is rate-limited."""
    with capture_logs() as logs:
        dead = DeadLetters(clock=clock, log_interval_s=0.0)
        for _ in range(3):
            dead.add("m", reason="r")
    assert [line["count"] for line in logs] == [1, 1, 1]


def test_flush_log_reports_what_the_rate_limit_held_back(clock: FakeClock) -> None:
    """flush_log logs the suppressed adds at once, and logs nothing when none are pending."""
    with capture_logs() as logs:
        dead = DeadLetters(clock=clock)
        dead.flush_log()
        assert logs == []
        dead.add("m", reason="r")
        dead.flush_log()  # the add already logged itself
        assert len(logs) == 1
        dead.add("m", reason="r")
        dead.add("m", reason="r")
        dead.flush_log()
    assert len(logs) == 2
    assert logs[1]["count"] == 2


def test_uses_the_injected_logger_bound_to_the_actor(clock: FakeClock) -> None:
    """A logger passed in is bound with actor=dead_letters and receives the warnings."""

    class RecordingLogger:
        def __init__(self) -> None:
            self.bound: dict[str, Any] = {}
            self.warnings: list[tuple[str, dict[str, Any]]] = []

        def bind(self, **values: Any) -> RecordingLogger:
            self.bound.update(values)
            return self

        def warning(self, event: str, **fields: Any) -> None:
            self.warnings.append((event, fields))

    logger = RecordingLogger()
    DeadLetters(clock=clock, logger=logger).add(1, reason="r")
    assert logger.bound == {"actor": "dead_letters"}
    assert [event for event, _ in logger.warnings] == ["dead_letters"]
