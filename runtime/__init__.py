"""jarvis-runtime: the runtime supervisor a voice assistant embeds.

The public names are loaded lazily, so ``import runtime`` stays cheap and the kernel modules
can import each other without a cycle through this package face.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ActorStopped",
    "ChannelClosed",
    "ChannelFull",
    "CircuitOpen",
    "ConfigError",
    "DeadlineExceeded",
    "Overloaded",
    "QuotaExceeded",
    "Runtime",
    "SupervisorEscalation",
    "WorkerDied",
    "load_config",
    "open_channel",
]

_HOMES = {
    "ActorStopped": "runtime.exceptions",
    "ChannelClosed": "runtime.exceptions",
    "ChannelFull": "runtime.exceptions",
    "CircuitOpen": "runtime.exceptions",
    "ConfigError": "runtime.exceptions",
    "DeadlineExceeded": "runtime.exceptions",
    "Overloaded": "runtime.exceptions",
    "QuotaExceeded": "runtime.exceptions",
    "SupervisorEscalation": "runtime.exceptions",
    "WorkerDied": "runtime.exceptions",
    "Runtime": "runtime.app",
    "load_config": "runtime.config",
    "open_channel": "runtime.channel",
}

if TYPE_CHECKING:
    from .app import Runtime as Runtime
    from .channel import open_channel as open_channel
    from .config import load_config as load_config
    from .exceptions import ActorStopped as ActorStopped
    from .exceptions import ChannelClosed as ChannelClosed
    from .exceptions import ChannelFull as ChannelFull
    from .exceptions import CircuitOpen as CircuitOpen
    from .exceptions import ConfigError as ConfigError
    from .exceptions import DeadlineExceeded as DeadlineExceeded
    from .exceptions import Overloaded as Overloaded
    from .exceptions import QuotaExceeded as QuotaExceeded
    from .exceptions import SupervisorEscalation as SupervisorEscalation
    from .exceptions import WorkerDied as WorkerDied


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
