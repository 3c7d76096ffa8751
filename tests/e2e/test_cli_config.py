"""The command line: ``check-config`` over a corpus of invalid configs, and ``run``'s lifecycle."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from runtime.cli import main
from runtime.exceptions import ConfigError, ConfigProblem

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((Path(__file__).parent / "invalid_configs").glob("*.yaml"))
# A handful of the corpus also goes through a real process: the entry point, exit code, streams.
IN_SUBPROCESS = ["20_", "24_", "25_", "29_", "40_"]


def expected_paths(path: Path) -> set[str]:
    """The paths listed on a corpus file's first line: ``# expect: $.a, $.b``."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return {item.strip() for item in first.removeprefix("# expect: ").split(", ")}


def reported_paths(stderr: str) -> list[str]:
    """The path of each problem line: everything before the first ': '."""
    return [line.split(": ", 1)[0] for line in stderr.splitlines()]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without config overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JARVIS_RUNTIME__")}
    return env | extra


def run_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m runtime ARGS`` as a real process."""
    command = [sys.executable, "-m", "runtime", *args]
    return subprocess.run(
        command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=30
    )


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see no JARVIS_RUNTIME__ variables from the developer's shell."""
    for name in [n for n in os.environ if n.startswith("JARVIS_RUNTIME__")]:
        monkeypatch.delenv(name)


# -- check-config -----------------------------------------------------------------------------


def test_the_corpus_is_large_enough() -> None:
    """At least 25 invalid configs, each declaring the problems it expects."""
    assert len(CORPUS) >= 25
    assert all(expected_paths(path) for path in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_check_config_reports_exactly_the_expected_problems(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2, one stderr line per problem, each expected path and no other, no traceback."""
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    paths = reported_paths(err)
    assert len(paths) == len(set(paths)), "one line per problem"
    assert set(paths) == expected_paths(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [p for p in CORPUS if p.name.startswith(tuple(IN_SUBPROCESS))],
    ids=lambda p: p.stem,
)
def test_check_config_subprocess_on_invalid_files(path: Path) -> None:
    """`python -m runtime check-config FILE` exits 2 and prints each problem on stderr."""
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert set(reported_paths(result.stderr)) == expected_paths(path)


@pytest.mark.slow
def test_check_config_subprocess_accepts_the_shipped_file() -> None:
    """With no PATH, config.yaml in the working directory is checked: exit 0, 'ok: PATH'."""
    result = run_cli("check-config")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok: config.yaml\n", "")


@pytest.mark.slow
def test_check_config_subprocess_applies_env_overrides() -> None:
    """An override from the environment is validated too and named in the problem."""
    result = run_cli("check-config", "config.yaml", JARVIS_RUNTIME__SAMPLER__INTERVAL_MS="soon")
    assert result.returncode == 2
    assert result.stderr == (
        "$.sampler.interval_ms: expected an integer, got 'soon' (string) "
        "(from JARVIS_RUNTIME__SAMPLER__INTERVAL_MS)\n"
    )


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file: exit 0 and 'ok: PATH' on stdout, nothing on stderr."""
    path = tmp_path / "c.yaml"
    path.write_text("sampler: {interval_ms: 500}\n")
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr() == (f"ok: {path}\n", "")


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file: exit 2 and a clear message naming it."""
    missing = tmp_path / "nope.yaml"
    assert main(["check-config", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: config file {str(missing)!r} not found\n"


def test_check_config_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory instead of a file: exit 2 and the reason."""
    assert main(["check-config", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"$: cannot read {str(tmp_path)!r}: is a directory\n"


@pytest.mark.parametrize(
    ("argv", "code"),
    [([], 2), (["frobnicate"], 2), (["check-config", "--bogus"], 2), (["--help"], 0)],
)
def test_usage(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad usage exits 2 with argparse's message; --help exits 0."""
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert ("usage: jarvis-runtime" in out) if code == 0 else ("usage: jarvis-runtime" in err)


# -- run, in process, with a stand-in Runtime ---------------------------------------------------


class FakeRuntime:
    """Stands in for runtime.app.Runtime; drives the CLI with real signals to itself."""

    instances: list[FakeRuntime] = []
    fail_on_enter: BaseException | None = None

    def __init__(self, config: Any, *, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.calls: list[str] = []
        FakeRuntime.instances.append(self)

    async def __aenter__(self) -> FakeRuntime:
        self.calls.append("enter")
        if FakeRuntime.fail_on_enter is not None:
            raise FakeRuntime.fail_on_enter
        signal.raise_signal(signal.SIGHUP)  # the CLI answers with reload(), below
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.calls.append("exit")

    async def reload(self) -> list[str]:
        self.calls.append("reload")
        signal.raise_signal(signal.SIGINT)  # then stop
        raise ConfigError([ConfigProblem("$.sampler.interval_ms", "bad")])


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> type[FakeRuntime]:
    """``from runtime.app import Runtime`` gives FakeRuntime for the test's duration."""
    module = types.ModuleType("runtime.app")
    module.Runtime = FakeRuntime  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "runtime.app", module)
    monkeypatch.setattr(FakeRuntime, "instances", [])
    monkeypatch.setattr(FakeRuntime, "fail_on_enter", None)
    return FakeRuntime


def test_run_reloads_on_sighup_survives_a_bad_reload_and_stops_on_sigint(
    fake_app: type[FakeRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGHUP calls reload(); its ConfigError keeps the runtime running; SIGINT exits 0."""
    path = str(ROOT / "config.yaml")
    assert main(["run", "--config", path]) == 0
    [runtime] = fake_app.instances
    assert runtime.calls == ["enter", "reload", "exit"]
    assert runtime.config_path == path
    assert "Traceback" not in capsys.readouterr().err


def test_run_exits_1_when_the_runtime_fails(
    fake_app: type[FakeRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash in the runtime exits 1 and shows the traceback, which is a bug to report."""
    fake_app.fail_on_enter = RuntimeError("boom")
    assert main(["run", "--config", str(ROOT / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err
    assert err.endswith("error: the runtime failed (traceback above)\n")


def test_run_exits_2_when_the_runtime_refuses_its_config(
    fake_app: type[FakeRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    """A ConfigError while starting is bad configuration: exit 2, one line per problem."""
    fake_app.fail_on_enter = ConfigError([ConfigProblem("$.logging.file", "cannot open")])
    assert main(["run", "--config", str(ROOT / "config.yaml")]) == 2
    assert capsys.readouterr().err == "$.logging.file: cannot open\n"


def test_run_interrupted_before_signals_are_handled_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyboardInterrupt out of the event loop's start is a quiet exit 130, no traceback."""

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("anyio.run", interrupted)
    assert main(["run", "--config", str(ROOT / "config.yaml")]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_run_with_an_invalid_config_exits_2_before_starting(
    fake_app: type[FakeRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    """run checks the config like check-config and never builds the Runtime."""
    path = CORPUS[0]
    assert main(["run", "--config", str(path)]) == 2
    assert set(reported_paths(capsys.readouterr().err)) == expected_paths(path)
    assert fake_app.instances == []


def test_run_with_a_missing_config_exits_2(
    fake_app: type[FakeRuntime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing config file is reported and nothing starts."""
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert fake_app.instances == []


# -- run, as a real process with the real Runtime ---------------------------------------------


class Process:
    """A `python -m runtime run` child whose stderr is read line by line with a deadline."""

    def __init__(self, config: Path, cwd: Path) -> None:
        command = [sys.executable, "-m", "runtime", "run", "--config", str(config)]
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        self._stream = self.proc.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stream, selectors.EVENT_READ)
        self._buffer = b""
        self.output = ""

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        """Read output until a line contains ``text``; fail on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} within {timeout_s}s; output:\n{self.output}"
            if not self._selector.select(remaining):
                continue
            chunk = os.read(self._stream.fileno(), 65536)
            assert chunk, f"exited before {text!r}; output:\n{self.output}"
            self.output += chunk.decode(errors="replace")

    def stop(self, signum: int) -> int:
        """Send ``signum``, wait for the exit, collect the rest of the output."""
        self.proc.send_signal(signum)
        rest, _ = self.proc.communicate(timeout=30)
        self.output += rest.decode(errors="replace")
        self._selector.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._selector.close()


def write_run_config(directory: Path) -> Path:
    """A valid config that writes its files under ``directory``."""
    path = directory / "config.yaml"
    path.write_text(f"logging: {{file: {directory / 'log' / 'runtime.jsonl'}, console: true}}\n")
    return path


@pytest.fixture
def started(tmp_path: Path) -> Any:
    """A running `jarvis-runtime run` in tmp_path, started and ready for signals."""
    process = Process(write_run_config(tmp_path), cwd=tmp_path)
    try:
        process.wait_for("runtime started")
        yield process
    finally:
        process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_cleanly_on_sigint_and_sigterm(started: Process, signum: int) -> None:
    """After 'runtime started', SIGINT or SIGTERM drains and stops it with exit 0."""
    assert started.stop(signum) == 0
    assert "runtime stopped" in started.output
    assert "Traceback" not in started.output


@pytest.mark.slow
def test_run_keeps_running_after_an_invalid_reload(started: Process, tmp_path: Path) -> None:
    """SIGHUP with a broken file logs the problems, keeps running; a good file reloads."""
    config = tmp_path / "config.yaml"
    good = config.read_text()
    config.write_text(good + "sampler: {interval_ms: soon}\n")
    started.proc.send_signal(signal.SIGHUP)
    started.wait_for("config reload refused")
    assert "$.sampler.interval_ms" in started.output
    config.write_text(good.replace("console: true", "console: true, level: debug"))
    started.proc.send_signal(signal.SIGHUP)
    started.wait_for("config reloaded")
    assert started.stop(signal.SIGINT) == 0
    assert "runtime stopped" in started.output
