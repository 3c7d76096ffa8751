"""The Alerter: rules over metrics with Prometheus semantics, and the sinks alerts go to.

``expr`` (the expression parser) and ``template`` load only the standard library: the config
validator uses them. Everything else here is loaded on first use, so validating a config does
not pull in the actor machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Alert", "AlertRecord", "Alerter", "AlerterStatistics"]

_HOMES = {
    "Alert": "actors.alerter.rules",
    "AlertRecord": "actors.alerter.history",
    "Alerter": "actors.alerter.service",
    "AlerterStatistics": "actors.alerter.service",
}

if TYPE_CHECKING:
    from .history import AlertRecord as AlertRecord
    from .rules import Alert as Alert
    from .service import Alerter as Alerter
    from .service import AlerterStatistics as AlerterStatistics


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'actors.alerter' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
