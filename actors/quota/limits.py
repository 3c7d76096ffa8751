"""A plugin's limits from ``register`` arguments, checked as the config loader checks them.

The API takes numbers (a rate in calls per second); what the config may write as a string
(``"10/s"``) is refused here with a message saying what to pass instead. Contradictions
between limits are found by the config's own rules, so both say the same thing.
"""

from __future__ import annotations

import math
import re
from typing import Any, get_args

from runtime import _config_rules as rules
from runtime.config import BudgetConfig, OverLimit, PluginQuota, QuotaSection

__all__ = ["check_plugin_name", "plugin_quota"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_POSITIVE_INTS = ("burst", "max_concurrency", "memory_mb", "max_waiting")


def check_plugin_name(name: object) -> str:
    """``name`` if it is a valid plugin name; else ``ValueError`` saying what one looks like."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"plugin name must start with a letter, then letters, digits, '_', '.' or '-' "
            f"(e.g. 'weather'); got {name!r}"
        )
    return name


def plugin_quota(name: str, budget: BudgetConfig, **limits: Any) -> PluginQuota:
    """Check ``register``'s keyword arguments and build the plugin's ``PluginQuota``.

    Raises ``TypeError`` for an unknown keyword and ``ValueError`` naming the parameter and
    the bad value: a limit that is not > 0 (or not an int where one is needed), a rate given
    as a string, a bad ``on_rate``/``on_concurrency``, a contradiction (burst without rate,
    burst with strict spacing) or a limit above the runtime's budget.
    """
    check_plugin_name(name)
    known = set(PluginQuota.__struct_fields__)
    unknown = sorted(set(limits) - known)
    if unknown:
        raise TypeError(f"unknown quota {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key, value in limits.items():
        _check_value(key, value)
    quota = PluginQuota(**limits)
    problems = [*rules.check_plugin_quota(quota), *_over_budget(name, quota, budget)]
    if problems:
        path, message = problems[0]
        raise ValueError(f"plugin {name!r}: {path[-1]} {message}")
    return quota


def _check_value(key: str, value: Any) -> None:
    if key in ("on_rate", "on_concurrency"):
        choices = get_args(OverLimit)
        if value not in choices:
            raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return
    if key == "strict_spacing":
        if not isinstance(value, bool):
            raise ValueError(f"strict_spacing must be true or false; got {value!r}")
        return
    if value is None and key != "max_waiting":
        return
    if key == "rate" and isinstance(value, str):
        raise ValueError(
            f"rate must be calls per second (a number > 0); got {value!r}: the API takes "
            "numbers, e.g. rate=10 for '10/s' or rate=10 for '600/min'"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number > 0 or None; got {value!r}")
    if key in _POSITIVE_INTS and not isinstance(value, int):
        raise ValueError(f"{key} must be an int >= 1 or None; got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key} must be > 0 (None: not enforced); got {value!r}")
    if key == "cpu_percent" and value > 100:
        raise ValueError(f"cpu_percent must be at most 100 (% of the machine); got {value!r}")


def _over_budget(name: str, quota: PluginQuota, budget: BudgetConfig) -> rules.Found:
    section = QuotaSection(plugins={name: quota}, budget=budget)
    return (found for found in rules.check_quotas(section) if found[0][0] == "plugins")
