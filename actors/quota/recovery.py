"""Recovery actions for the runtime's budget, registered by name.

Services register what they can give back (the cache ``shrink_caches``, the scheduler
``shed_background``); ``collect_garbage`` is built in. When the runtime nears a limit of its
budget, the enforcer runs the actions the config lists for that resource, one at a time, each
published as ``AutoRecoveryStarted`` then ``AutoRecoveryCompleted`` (``ok`` false with the
error when it failed, or when nobody registered it).
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Awaitable, Callable

from runtime.clock import Clock
from runtime.events import AutoRecoveryCompleted, AutoRecoveryStarted, EventBus
from runtime.logging import get_logger

from .limits import check_plugin_name
from .notify import ACTOR

__all__ = ["RecoveryAction", "RecoveryActions", "collect_garbage"]

RecoveryAction = Callable[[], object | Awaitable[object]]
"""A callable taking no arguments, sync or async; what it returns (if not None) is reported as
the completion's ``detail``."""


def collect_garbage() -> str:
    """Run a full garbage collection (built in as ``collect_garbage``)."""
    # On the loop on purpose: a collection holds the GIL throughout, so a thread would not
    # let the loop run meanwhile, only add a hop.
    return f"collected {gc.collect()} unreachable objects"


class RecoveryActions:
    """The registered actions, and running them with events and a log line each."""

    def __init__(self, *, clock: Clock, bus: EventBus | None) -> None:
        self._clock = clock
        self._bus = bus
        self._actions: dict[str, RecoveryAction] = {"collect_garbage": collect_garbage}
        self.runs: dict[str, int] = {}
        self.failures = 0
        self._log = get_logger(ACTOR)

    def register(self, name: str, action: RecoveryAction) -> None:
        """Offer ``action`` under ``name`` (replacing one of the same name).

        Raises ``ValueError`` for a bad name and ``TypeError`` for an action that is not
        callable.
        """
        try:
            check_plugin_name(name)
        except ValueError:
            raise ValueError(
                f"recovery action name must start with a letter, then letters, digits, '_', "
                f"'.' or '-' (e.g. 'shrink_caches'); got {name!r}"
            ) from None
        if not callable(action):
            raise TypeError(f"recovery action {name!r} must be callable; got {action!r}")
        self._actions[name] = action

    def unregister(self, name: str) -> bool:
        """Withdraw an action; returns whether it was registered."""
        return self._actions.pop(name, None) is not None

    def names(self) -> list[str]:
        return sorted(self._actions)

    async def run(self, name: str, *, reason: str) -> bool:
        """Run one action; whether it succeeded. Never raises for the action's own error."""
        self._emit(AutoRecoveryStarted, action=name, reason=reason)
        started = self._clock.now()
        ok, detail = False, ""
        action = self._actions.get(name)
        if action is None:
            detail = f"no recovery action {name!r} is registered (known: {', '.join(self.names())})"
        else:
            try:
                result = action()
                if inspect.isawaitable(result):
                    result = await result
                ok, detail = True, "" if result is None else str(result)
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
        self.runs[name] = self.runs.get(name, 0) + 1
        self.failures += not ok
        log = self._log.info if ok else self._log.error
        log("recovery action finished", action=name, reason=reason, ok=ok, detail=detail)
        self._emit(AutoRecoveryCompleted, action=name, ok=ok, detail=detail,
                   duration_s=self._clock.now() - started)  # fmt: skip
        return ok

    def _emit(self, event_type: type[AutoRecoveryStarted | AutoRecoveryCompleted],
              **fields: object) -> None:  # fmt: skip
        if self._bus is not None and self._bus.wants(event_type):
            self._bus.emit(event_type, actor=ACTOR, **fields)
