"""``jarvis-runtime demo``: short real runs (in process and as a process), and bad input.

The runs are real (a Runtime, worker processes, real time) but short: 2 s at half the base
load. Seed 37 gives every stream an arrival within the first 1.1 s, so every class has tasks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from runtime.cli import main
from runtime.config import load_config
from runtime.demo import demo_config_problems
from runtime.demowork import Workload

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("wake_word", "voice", "command", "background")
SHORT = ["--duration", "2", "--load", "0.5", "--seed", "37"]


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """A config whose files all live under ``tmp_path``."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"logging: {{file: {tmp_path / 'log' / 'runtime.jsonl'}}}\n"
        "sampler: {history_path: null}\n"
        "alerts: {history_path: null}\n"
        "cache:\n  tiers: [{name: l1, backend: memory, policy: tinylfu, max_entries: 1000}]\n"
        + extra
    )
    return path


def class_marks(out: str) -> dict[str, str]:
    """The result word of each class row of the table."""
    marks = {}
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in CLASSES and len(words) > 8:
            marks[words[0]] = next(w for w in words if w in ("PASS", "FAIL", "n/a"))
    return marks


def log_actors(path: Path) -> Counter[str]:
    lines = path.read_text().splitlines()
    return Counter(msgspec.json.decode(line).get("actor", "") for line in lines)


# -- real runs ---------------------------------------------------------------------------------


def test_demo_in_process_prints_every_class_with_a_mark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 s run exits 0; every class has a PASS or FAIL mark; the log has several actors."""
    config = write_config(tmp_path)
    code = main(["demo", "--config", str(config), *SHORT])
    out = capsys.readouterr().out
    assert code == 0, out
    marks = class_marks(out)
    assert set(marks) == set(CLASSES)
    assert set(marks.values()) <= {"PASS", "FAIL"}
    assert "✓ PASS" in out or "✗ FAIL" in out
    assert "cache namespace" in out and "\nresponse " in out and "\nembedding " in out
    assert "weather (2/s burst 2" in out and "calendar (4/s" in out  # registered quotas
    assert "CPU, average" in out and "memory, peak RSS" in out
    assert "/2 s] CPU" in out  # progress lines (stdout is no tty here)
    actors = log_actors(tmp_path / "log" / "runtime.jsonl")
    assert {"demo", "runtime", "scheduler"} <= set(actors)


@pytest.mark.slow
def test_demo_as_a_process(tmp_path: Path) -> None:
    """``python -m runtime demo`` runs, prints the table, exits 0 and writes the log."""
    config = write_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "demo", "--config", str(config), *SHORT],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(class_marks(done.stdout)) == set(CLASSES)
    assert "actor restarts: 0" in done.stdout
    assert len(log_actors(tmp_path / "log" / "runtime.jsonl")) >= 3


@pytest.mark.slow
def test_ctrl_c_stops_early_and_still_prints_the_table(tmp_path: Path) -> None:
    """SIGINT during a long run stops the arrivals; the table is printed; exit 130."""
    config = write_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "runtime", "demo", "--config", str(config),
         "--duration", "600", "--seed", "37"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("jarvis-runtime demo: 600 s")
        assert proc.stdout.readline().startswith("arrivals:")  # the demo listens for SIGINT
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert set(class_marks(out)) == set(CLASSES)


def test_a_crash_during_the_run_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure inside the run is a runtime failure: traceback, a message, exit 1."""

    async def broken(self: Workload, duration_s: float, *, grace_s: float = 0.0) -> float:
        raise RuntimeError("the workload broke")

    monkeypatch.setattr(Workload, "run", broken)
    assert main(["demo", "--config", str(write_config(tmp_path)), *SHORT]) == 1
    err = capsys.readouterr().err
    assert "the workload broke" in err and "error: the runtime failed" in err


def test_a_log_file_that_cannot_be_opened_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log file under a regular file is a bad config: exit 2 before anything starts."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(str(tmp_path / "log"), str(blocker)))
    assert main(["demo", "--config", str(config), *SHORT]) == 2
    err = capsys.readouterr().err
    assert f"$.logging.file: cannot open {str(blocker / 'runtime.jsonl')!r}" in err
    assert "Traceback" not in err


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "0"], "argument --duration: must be a number > 0, got '0'"),
        (["--duration", "-3"], "argument --duration: must be a number > 0, got '-3'"),
        (["--duration", "soon"], "argument --duration: must be a number > 0, got 'soon'"),
        (["--load", "0"], "argument --load: must be a number > 0, got '0'"),
        (["--load", "inf"], "argument --load: must be a number > 0, got 'inf'"),
        (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad option value exits 2 and names the option and the value."""
    assert main(["demo", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config naming no file exits 2 and says which."""
    missing = tmp_path / "nope.yaml"
    assert main(["demo", "--config", str(missing)]) == 2
    assert f"error: --config {str(missing)!r}: no such file" in capsys.readouterr().err


def test_an_invalid_config_exits_2_with_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config with problems exits 2, one line per problem with its path."""
    config = write_config(tmp_path, "sampler:\n  intervall_ms: 5\n")
    config.write_text(config.read_text().replace("sampler: {history_path: null}\n", ""))
    assert main(["demo", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "$.sampler.intervall_ms" in err and "is not valid" in err


def test_a_config_without_the_assistant_classes_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo needs the scheduler, the profiler, four classes, two cache namespaces."""
    config = write_config(
        tmp_path,
        "profiler: {enabled: false}\n"
        "scheduler:\n  classes:\n    voice: {priority: 1, deadline_ms: 1000}\n",
    )
    config.write_text(config.read_text().replace("cache:\n", "cache:\n  namespaces: {}\n"))
    assert main(["demo", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "$.profiler.enabled: the demo needs the profiler" in err
    assert "missing wake_word, command, background" in err
    assert "$.cache.namespaces: the demo caches in response, embedding" in err


def test_config_problems_empty_for_the_shipped_config() -> None:
    """The shipped config.yaml runs the demo as it is."""
    assert demo_config_problems(load_config(ROOT / "config.yaml")) == []


def test_help_says_the_marks_are_not_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """--help explains the options and that PASS/FAIL does not change the exit code."""
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--duration S" in out and "--load F" in out and "--seed N" in out
    assert "PASS/FAIL marks are information, not the exit code" in out
