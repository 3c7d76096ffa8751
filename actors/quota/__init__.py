"""QuotaEnforcer: plugins stay inside their budgets, and so does the runtime.

Per plugin quotas — execution time, rate (token bucket with burst, or strictly spaced),
concurrency, CPU share and memory of the plugin's work in worker processes — escalated warn →
throttle → terminate; and the runtime's own memory and average CPU as a quota whose recovery
actions run before it is breached.

``bucket`` holds the token bucket and the concurrency limit, ``escalation`` the escalation
policy, the CPU share window and the duty cycle, ``budget`` the runtime's budget, ``limits``
the checks of ``register``'s arguments, ``plugins`` a plugin's state and a call's, ``gate``
the time, rate and concurrency hooks, ``monitor`` the process measurements, ``recovery`` the
recovery actions, ``notify`` events and log lines, ``stats`` the statistics, ``ports`` what
the enforcer needs of the scheduler, and ``service`` the ``QuotaEnforcer``.
"""

from __future__ import annotations

from .bucket import ConcurrencyLimit as ConcurrencyLimit
from .bucket import TokenBucket as TokenBucket
from .budget import BudgetReading as BudgetReading
from .budget import RuntimeBudget as RuntimeBudget
from .escalation import Escalation as Escalation
from .service import QuotaEnforcer as QuotaEnforcer
from .stats import BudgetStatistics as BudgetStatistics
from .stats import PluginStatistics as PluginStatistics
from .stats import QuotaStatistics as QuotaStatistics

__all__ = [
    "BudgetReading",
    "BudgetStatistics",
    "ConcurrencyLimit",
    "Escalation",
    "PluginStatistics",
    "QuotaEnforcer",
    "QuotaStatistics",
    "RuntimeBudget",
    "TokenBucket",
]
