"""The package face: __all__ is honest and `import runtime` stays cheap."""

from __future__ import annotations

import subprocess
import sys

import runtime
from runtime import exceptions


def test_all_names_resolve() -> None:
    """Every name in runtime.__all__ resolves to a real object."""
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None, name


def test_all_lists_every_exported_error() -> None:
    """Every error in runtime.exceptions that callers catch is exported from runtime."""
    errors = {
        name
        for name in exceptions.__all__
        if isinstance(getattr(exceptions, name), type)
        and issubclass(getattr(exceptions, name), Exception)
    }
    assert errors <= set(runtime.__all__)


def test_contract_names_are_exported() -> None:
    """The names DESIGN.md fixes are importable from runtime."""
    from runtime import (  # noqa: F401
        ChannelClosed,
        ChannelFull,
        ConfigError,
        DeadlineExceeded,
        Overloaded,
        QuotaExceeded,
        Runtime,
        load_config,
        open_channel,
    )

    assert issubclass(DeadlineExceeded, TimeoutError)


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name runtime does not have raises AttributeError, naming it."""
    try:
        runtime.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_runtime_is_lazy() -> None:
    """`import runtime` loads neither the kernel nor its heavy dependencies."""
    code = (
        "import sys, runtime; "
        "heavy = [m for m in ('anyio', 'msgspec', 'structlog', 'runtime.app', 'yaml') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
