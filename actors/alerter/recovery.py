"""Recovery actions: what the runtime does by itself when an alert fires.

A rule lists actions by name (``recovery: [collect_garbage]``); services register the actions
they offer (``Alerter.register_recovery("shed_background", scheduler.shed)``), and
``collect_garbage`` is built in. When an alert fires, the evaluator asks the recovery actor to
run each of its rule's actions; every run is published as ``AutoRecoveryStarted`` and then
``AutoRecoveryCompleted`` (``ok`` false, with the error, when the action failed or is unknown).
Actions run one at a time in the actor, never in the evaluation round.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from runtime.actor import Actor
from runtime.events import AutoRecoveryCompleted, AutoRecoveryStarted, EventBus

__all__ = ["RecoveryAction", "RecoveryActor", "RecoveryRequest", "collect_garbage"]

RecoveryAction = Callable[[], Awaitable[object]]
"""An async callable taking no arguments; what it returns (if not None) is reported as the
completion's ``detail``."""


class RecoveryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Run ``action`` because ``alert`` fired."""

    action: str
    alert: str
    reason: str = ""


async def collect_garbage() -> str:
    """Run a full garbage collection (built in as ``collect_garbage``)."""
    # On the loop on purpose: a collection holds the GIL throughout, so a thread would not
    # let the loop run meanwhile, only add a hop.
    found = gc.collect()
    return f"collected {found} unreachable objects"


class RecoveryActor(Actor):
    """Runs ``RecoveryRequest``s against the registered ``actions``, publishing each run."""

    def __init__(
        self, actions: Mapping[str, RecoveryAction], bus: EventBus, runs: dict[str, int]
    ) -> None:
        self._actions = actions
        self._bus = bus
        self._runs = runs  # action -> runs, kept by the service across restarts

    async def receive(self, message: Any) -> None:
        if not isinstance(message, RecoveryRequest):
            raise TypeError(f"recovery takes RecoveryRequest messages, got {message!r}")
        await self.run(message)

    async def run(self, request: RecoveryRequest) -> bool:
        """Run one action; returns whether it succeeded. Never raises for the action's error."""
        name, alert = request.action, request.alert
        self._bus.emit(
            AutoRecoveryStarted, actor="alerts", action=name, alert=alert, reason=request.reason
        )
        started = self.clock.now()
        action = self._actions.get(name)
        ok, detail = False, ""
        if action is None:
            known = ", ".join(sorted(self._actions))
            detail = f"no recovery action {name!r} is registered (known: {known})"
        else:
            try:
                result = await action()
                ok, detail = True, "" if result is None else str(result)
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
        duration_s = self.clock.now() - started
        self._runs[name] = self._runs.get(name, 0) + 1
        log = self.log.info if ok else self.log.error
        log("recovery action finished", action=name, alert=alert, ok=ok, detail=detail)
        self._bus.emit(
            AutoRecoveryCompleted, actor="alerts", action=name, alert=alert, ok=ok,
            detail=detail, duration_s=duration_s,
        )  # fmt: skip
        return ok
