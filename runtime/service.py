"""The seam between the kernel and the actors: what the Runtime needs of each of them.

A service is one actor's public face (``rt.scheduler``, ``rt.cache``, ...). The Runtime builds
the services that the configuration enables, lets each put its actors under the root
supervisor, and offers each a changed configuration on reload. The kernel knows only this
protocol; ``runtime.app`` is the one place that knows the concrete actors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .actor import ActorContext
    from .config import Config
    from .supervisor import Supervisor

__all__ = ["Service"]


class Service(Protocol):
    """One actor's face to the Runtime and to the user."""

    name: str

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Add this service's actors (and nested supervisors) to ``supervisor``."""
        ...

    def apply_config(self, config: Config) -> list[str]:
        """Apply a reloaded configuration live; return the $.paths that need a restart."""
        ...

    def statistics(self) -> Any:
        """A msgspec-encodable snapshot for ``Runtime.statistics()``."""
        ...
