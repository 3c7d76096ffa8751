"""The scheduler package face stays lazy, so worker processes start light."""

from __future__ import annotations

import subprocess
import sys


def test_worker_module_imports_no_heavy_dependencies() -> None:
    """A worker imports actors.scheduler._worker without anyio, psutil or structlog."""
    code = (
        "import sys, actors.scheduler._worker; "
        "print([m for m in ('anyio', 'psutil', 'structlog') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_resolve() -> None:
    """Every name in actors.scheduler.__all__ resolves; an unknown one raises AttributeError."""
    import actors.scheduler as scheduler

    for name in scheduler.__all__:
        assert getattr(scheduler, name) is not None
    try:
        scheduler.Nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "Nope" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
