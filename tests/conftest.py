"""Shared fixtures: a fake clock for deterministic tests."""

from __future__ import annotations

import pytest

from runtime.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at t=0 that only moves when the test advances it."""
    return FakeClock()
