"""Bad quota input: ``register`` arguments are refused naming the parameter and the value,
and the config's quota keys are refused at load time with their $.path."""

from __future__ import annotations

from typing import Any

import pytest

from actors.quota.limits import plugin_quota
from runtime.clock import FakeClock
from runtime.config import BudgetConfig, PluginQuota, parse_config
from runtime.exceptions import ConfigError

from .test_quota_kit import enforced


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"timeout_s": 0}, r"timeout_s must be > 0 \(None: not enforced\); got 0"),
        ({"timeout_s": -1.5}, "timeout_s must be > 0"),
        ({"timeout_s": "5"}, "timeout_s must be a number > 0 or None; got '5'"),
        ({"timeout_s": float("nan")}, "timeout_s must be > 0"),
        ({"rate": "10/s"}, r"rate must be calls per second .* e.g. rate=10 for '10/s'"),
        ({"rate": 0}, "rate must be > 0"),
        ({"rate": True}, "rate must be a number > 0"),
        ({"rate": 1, "burst": 0}, "burst must be > 0"),
        ({"rate": 1, "burst": 2.5}, "burst must be an int >= 1"),
        ({"burst": 3}, "burst needs a rate"),
        ({"rate": 1, "burst": 3, "strict_spacing": True}, "burst 3 contradicts strict_spacing"),
        ({"strict_spacing": True}, "strict_spacing true needs a rate"),
        ({"strict_spacing": "yes"}, "strict_spacing must be true or false"),
        ({"max_concurrency": 0}, "max_concurrency must be > 0"),
        ({"memory_mb": 4096}, r"memory_mb 4096 is more than the runtime budget \(2048\)"),
        ({"memory_mb": 0.5}, "memory_mb must be an int >= 1"),
        ({"cpu_percent": 50}, r"cpu_percent 50 is more than the runtime budget \(20\)"),
        ({"cpu_percent": 150}, "cpu_percent must be at most 100"),
        ({"on_rate": "drop"}, "on_rate must be one of wait, refuse; got 'drop'"),
        ({"on_concurrency": None}, "on_concurrency must be one of wait, refuse"),
        ({"max_waiting": 0}, "max_waiting must be > 0"),
        ({"max_waiting": None}, "max_waiting must be a number > 0"),
    ],
)
async def test_register_refuses_bad_limits_naming_them(
    clock: FakeClock, limits: dict[str, Any], message: str
) -> None:
    """Each bad limit is a ValueError naming the parameter; nothing is registered."""
    async with enforced(clock) as h:
        with pytest.raises(ValueError, match=message):
            h.quotas.register("weather", **limits)
        assert h.quotas.plugins() == {}


@pytest.mark.parametrize("name", ["", "1st", "has space", None, "runtime"])
async def test_register_refuses_bad_or_reserved_names(clock: FakeClock, name: Any) -> None:
    """A name that is not a plugin name, or the reserved 'runtime', is a ValueError."""
    async with enforced(clock) as h:
        with pytest.raises(ValueError, match="plugin name"):
            h.quotas.register(name, rate=1)


async def test_register_returns_the_quota_in_force(clock: FakeClock) -> None:
    """register gives back the PluginQuota it applied; quota() reads it back."""
    async with enforced(clock) as h:
        quota = h.quotas.register("weather", timeout_s=5, rate=2, burst=4, max_concurrency=2,
                                  memory_mb=100, cpu_percent=10)  # fmt: skip
        assert quota == PluginQuota(timeout_s=5, rate=2, burst=4, max_concurrency=2,
                                    memory_mb=100, cpu_percent=10)  # fmt: skip
        assert h.quotas.quota("weather") == quota


def test_plugin_quota_refuses_unknown_limits() -> None:
    """A keyword that is no quota is a TypeError listing the known ones."""
    with pytest.raises(TypeError, match=r"unknown quota memory_gb; known: burst, cpu_percent"):
        plugin_quota("weather", BudgetConfig(), memory_gb=1)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("quotas: {plugins: {p: {strict_spacing: true}}}", "$.quotas.plugins.p.strict_spacing",
         "needs a rate"),
        ("quotas: {plugins: {p: {rate: 2, burst: 3, strict_spacing: true}}}",
         "$.quotas.plugins.p.burst", "3 contradicts strict_spacing"),
        ("quotas: {plugins: {p: {on_rate: drop}}}", "$.quotas.plugins.p.on_rate", "drop"),
        ("quotas: {plugins: {p: {max_waiting: 0}}}", "$.quotas.plugins.p.max_waiting", ">= 1"),
        ("quotas: {interval_ms: 500, cpu_window_ms: 800}", "$.quotas.cpu_window_ms",
         "800 is less than two measurements (2 x interval_ms = 1000)"),
        ("quotas: {interval_ms: 5}", "$.quotas.interval_ms", ">= 10"),
        ("quotas: {warn_ratio: 0}", "$.quotas.warn_ratio", "> 0"),
        ("quotas: {terminate_after_s: -1}", "$.quotas.terminate_after_s", ">= 0"),
        ("quotas: {budget: {interval_ms: 2000, cpu_window_s: 3}}",
         "$.quotas.budget.cpu_window_s", "3 is less than two measurements"),
        ("quotas: {budget: {recover_ratio: 1.5}}", "$.quotas.budget.recover_ratio", "<= 1"),
        ("quotas: {budget: {memory_actions: ['shrink caches']}}",
         "$.quotas.budget.memory_actions[0]", "a name starts with a letter"),
    ],
)  # fmt: skip
def test_bad_quota_config_is_refused_with_its_path(text: str, path: str, message: str) -> None:
    """Each bad quota key is a ConfigError problem at its $.path, at load time."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    problems = [(p.path, p.message) for p in info.value.problems]
    assert any(p == path and message in m for p, m in problems), problems


def test_the_new_quota_keys_load_from_yaml() -> None:
    """Per-plugin policies and the budget's recovery settings decode from the config."""
    text = """
quotas:
  plugins:
    tts: {rate: 1/s, strict_spacing: true, on_rate: refuse, max_waiting: 5}
  interval_ms: 50
  cpu_window_ms: 500
  budget: {recover_ratio: 0.7, memory_actions: [collect_garbage], cpu_actions: []}
"""
    quotas = parse_config(text, env={}).quotas
    assert quotas.plugins["tts"] == PluginQuota(rate=1.0, strict_spacing=True, on_rate="refuse",
                                                max_waiting=5)  # fmt: skip
    assert (quotas.interval_ms, quotas.cpu_window_ms) == (50, 500)
    assert quotas.budget.memory_actions == ["collect_garbage"] and quotas.budget.cpu_actions == []
    assert quotas.budget.recover_ratio == 0.7
