"""The Runtime facade: lifecycle, statistics, the user's own actors, events and reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import ConfigError, Runtime, SupervisorEscalation, load_config
from runtime.actor import Actor
from runtime.app import changed_paths
from runtime.clock import FakeClock
from runtime.events import ActorCrashed, ActorRestarted, ConfigReloaded
from runtime.supervisor import ChildSpec


def write_config(tmp_path: Path, extra: str = "", level: str = "info") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"logging: {{level: {level}, file: {tmp_path / 'log' / 'runtime.jsonl'}, console: false}}\n"
        # The kernel alone: the actors have tests of their own.
        + "scheduler: {enabled: false}\nprofiler: {enabled: false}\nsampler: {enabled: false}\n"
        + "alerts: {enabled: false}\ncache: {enabled: false}\nquotas: {enabled: false}\n"
        + extra
    )
    return path


class Echo(Actor):
    async def receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        return message


async def test_runtime_starts_logs_and_stops(tmp_path: Path, clock: FakeClock) -> None:
    """A Runtime starts, writes JSON lines to the configured file, and stops cleanly."""
    path = write_config(tmp_path)
    async with Runtime.from_path(path, clock=clock) as rt:
        assert rt.statistics().name == "jarvis"
    lines = [json.loads(x) for x in (tmp_path / "log" / "runtime.jsonl").read_text().splitlines()]
    events = [line["event"] for line in lines]
    assert "runtime started" in events and events[-1] == "runtime stopped"
    assert all(line["actor"] and line["timestamp"].endswith("Z") for line in lines)


async def test_user_actor_runs_under_the_root_supervisor(tmp_path: Path, clock: FakeClock) -> None:
    """add_actor supervises the assistant's own actor; a crash is published and restarted."""
    config = load_config(write_config(tmp_path, "runtime: {retry: {retries: 0}}\n"))
    async with Runtime(config, clock=clock) as rt:
        ref = rt.add_actor(ChildSpec("echo", Echo))
        with (
            rt.events.subscribe(ActorCrashed) as crashed,
            rt.events.subscribe(ActorRestarted) as restarted,
        ):
            assert await ref.ask("hi") == "hi"
            with pytest.raises(RuntimeError, match="boom"):
                await ref.ask("boom")
            await clock.advance(1.0)
            crash = crashed.receive_nowait()
            assert (crash.name, crash.error) == ("echo", "RuntimeError: boom")
            assert restarted.receive_nowait().restarts == 1
            assert await ref.ask("again") == "again"
        stats = rt.statistics()
        assert [(a.name, a.restarts) for a in stats.supervisor.actors] == [("echo", 1)]
        assert stats.dead_letters.by_reason == {"handler_failed": 1}


async def test_reload_applies_a_changed_file(tmp_path: Path, clock: FakeClock) -> None:
    """reload() reads the file again, returns the changed paths and publishes ConfigReloaded."""
    path = write_config(tmp_path)
    async with Runtime.from_path(path, clock=clock) as rt:
        with rt.events.subscribe(ConfigReloaded) as sub:
            extra = "runtime: {dead_letters: {log_interval_s: 3}}\n"
            write_config(tmp_path, extra, level="debug")
            changed = await rt.reload()
            assert changed == ["$.logging.level", "$.runtime.dead_letters.log_interval_s"]
            event = sub.receive_nowait()
            assert event.ok and event.changed == changed and event.restart_required == []
        assert rt.config.logging.level == "debug"
        assert rt.dead_letters.log_interval_s == 3


async def test_invalid_reload_changes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    """An invalid file on reload raises ConfigError, keeps the old config and says why."""
    path = write_config(tmp_path)
    async with Runtime.from_path(path, clock=clock) as rt:
        before = rt.config
        with rt.events.subscribe(ConfigReloaded) as sub:
            path.write_text("sampler: {interval_ms: fast}\n")
            with pytest.raises(ConfigError) as info:
                await rt.reload()
            assert [p.path for p in info.value.problems] == ["$.sampler.interval_ms"]
            event = sub.receive_nowait()
            assert not event.ok and event.problems and "$.sampler.interval_ms" in event.problems[0]
        assert rt.config is before


async def test_reload_without_a_file_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    """A Runtime built from a Config object cannot reload without a path."""
    config = load_config(write_config(tmp_path))
    async with Runtime(config, clock=clock) as rt:
        with pytest.raises(ValueError, match="reload\\(\\) needs a path"):
            await rt.reload()


async def test_root_escalation_ends_the_runtime(tmp_path: Path, clock: FakeClock) -> None:
    """Past the root's restart intensity, leaving the Runtime raises SupervisorEscalation."""
    text = "runtime: {retry: {retries: 0}, restart: {intensity: 1, backoff_initial_ms: 0}}\n"
    config = load_config(write_config(tmp_path, text))
    with pytest.raises(SupervisorEscalation):
        async with Runtime(config, clock=clock) as rt:
            ref = rt.add_actor(ChildSpec("echo", Echo))
            for _ in range(3):
                ref.tell_nowait("boom")
                await clock.advance(0.0)
            await anyio.sleep_forever()  # cancelled by the escalation


def test_changed_paths_lists_leaves() -> None:
    """changed_paths names each differing leaf by its $.path."""
    a = load_config()
    b = load_config(env={"JARVIS_RUNTIME__SAMPLER__INTERVAL_MS": "250"})
    assert changed_paths(a, b) == ["$.sampler.interval_ms"]
    assert changed_paths(a, a) == []


async def test_kernel_logs_reach_the_configured_file(tmp_path: Path, clock: FakeClock) -> None:
    """Supervisor and dead-letter lines, from objects built before logging, go to the file."""
    config = load_config(write_config(tmp_path, "runtime: {retry: {retries: 0}}\n"))
    async with Runtime(config, clock=clock) as rt:
        ref = rt.add_actor(ChildSpec("echo", Echo))
        ref.tell_nowait("boom")
        await clock.advance(1.0)
    lines = [json.loads(x) for x in (tmp_path / "log" / "runtime.jsonl").read_text().splitlines()]
    by_actor = {(line["actor"], line["event"]) for line in lines}
    assert ("jarvis", "child crashed") in by_actor
    assert ("dead_letters", "dead_letters") in by_actor


async def test_circuit_breaker_publishes_its_state_changes(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A breaker from the runtime publishes CircuitBreakerStateChanged on every transition."""
    from runtime.events import CircuitBreakerStateChanged

    config = load_config(write_config(tmp_path))
    async with Runtime(config, clock=clock) as rt:
        breaker = rt.circuit_breaker(
            "redis", failure_threshold=2, reset_timeout_s=5.0, success_threshold=1
        )
        with rt.events.subscribe(CircuitBreakerStateChanged) as sub:
            breaker.record_failure()
            breaker.record_failure()
            await clock.advance(5.0)
            assert breaker.allow()
            breaker.record_success()
            seen = [(e.old, e.new) for e in [sub.receive_nowait() for _ in range(len(sub))]]
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_unopenable_log_file_is_a_config_error(tmp_path: Path, clock: FakeClock) -> None:
    """A log file that cannot be opened fails the start with ConfigError at $.logging.file."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    path = write_config(tmp_path)
    config = load_config(path, env={"JARVIS_RUNTIME__LOGGING__FILE": str(blocker / "x.jsonl")})
    with pytest.raises(ConfigError, match=r"\$\.logging\.file: cannot open"):
        async with Runtime(config, clock=clock):
            pass
