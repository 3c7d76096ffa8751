"""The QuotaEnforcer service: plugins stay inside their budgets, and so does the runtime.

Plugins are declared in ``quotas.plugins`` or at run time with ``register``. Time, rate and
concurrency are enforced on the scheduler's hooks as each task of a plugin is admitted,
started and ended (``gate``); CPU share and memory of the plugin calls that run in worker
processes are measured with psutil and backed by rlimits set in the worker (``monitor``);
the runtime's own memory and average CPU are a quota too, whose recovery actions run before
it is breached (``budget``, ``recovery``). Every step of an escalation is an event and a log
line (``notify``).

Standalone (a benchmark, a script), on the real clock::

    enforcer = QuotaEnforcer(config, ActorContext(), scheduler)
    enforcer.register("weather", timeout_s=5, rate=2, burst=4, max_concurrency=2)
    async with scheduler.running(), enforcer.running():
        await scheduler.submit(fetch_weather, "Paris", plugin="weather")

Under a Runtime, ``attach`` runs the measuring loops under its supervisor. The hooks are on
the scheduler from construction (time, rate and concurrency need no loop of their own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import psutil

from runtime.config import Config, OverLimit, PluginQuota, QuotaSection
from runtime.logging import get_logger
from runtime.supervisor import Supervisor

from .budget import BudgetReading, Pressure, RuntimeBudget, RuntimeProbe
from .gate import Gate
from .limits import check_plugin_name, plugin_quota
from .monitor import ProcessMonitor, Reading, in_thread
from .notify import ACTOR, Notifier
from .plugins import Call, Plugin, Source
from .ports import SchedulerPort
from .recovery import RecoveryAction, RecoveryActions
from .stats import BudgetStatistics, QuotaStatistics

if TYPE_CHECKING:
    from runtime.actor import ActorContext

__all__ = ["RUNTIME", "QuotaEnforcer"]

RUNTIME = "runtime"  # the "plugin" named in the runtime budget's events; reserved


class QuotaEnforcer:
    """Per-plugin quotas and the runtime's budget (see the module docstring).

    ``cpu_count`` (default: the machine's) scales CPU shares; ``probe`` measures the runtime
    for its budget (default: psutil); ``read_processes`` reads worker pids (default: psutil);
    ``offload`` runs those two off the loop (default: in a thread).
    """

    name = ACTOR

    def __init__(
        self,
        config: Config,
        context: ActorContext,
        scheduler: SchedulerPort,
        *,
        cpu_count: int | None = None,
        probe: Callable[[], BudgetReading] | None = None,
        read_processes: Callable[[list[int]], dict[int, Reading]] | None = None,
        offload: Callable[..., Awaitable[Any]] = in_thread,
    ) -> None:
        section = config.quotas
        self._config = config
        self._clock = context.clock
        self._cpus = cpu_count or psutil.cpu_count() or 1
        self._notifier = Notifier(clock=self._clock, bus=context.events,
                                  log_interval_s=section.log_interval_s)  # fmt: skip
        self._monitor = ProcessMonitor(section, clock=self._clock, notifier=self._notifier,
                                       terminate=self._terminate, cpus=self._cpus,
                                       read=read_processes, offload=offload)  # fmt: skip
        monitor = self._monitor
        self._gate = Gate(scheduler, clock=self._clock, notifier=self._notifier,
                          on_start=monitor.track, on_finish=monitor.untrack)  # fmt: skip
        self._budget = RuntimeBudget(**_budget_settings(section), cpus=self._cpus)
        self._recovery = RecoveryActions(clock=self._clock, bus=context.events)
        self._probe = probe or RuntimeProbe()
        self._offload = offload
        self._running = False
        self._log = get_logger(ACTOR)
        for name, quota in section.plugins.items():
            self._gate.plugins[name] = Plugin(name, quota, source="config", cpus=self._cpus)
        self._gate.attach()

    @property
    def config(self) -> QuotaSection:
        return self._config.quotas

    # -- plugins ------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        rate: float | None = None,
        burst: int | None = None,
        max_concurrency: int | None = None,
        memory_mb: int | None = None,
        cpu_percent: float | None = None,
        on_rate: OverLimit = "wait",
        strict_spacing: bool = False,
        on_concurrency: OverLimit = "wait",
        max_waiting: int = 100,
    ) -> PluginQuota:
        """Declare plugin ``name``'s limits (None: not enforced), or change them live.

        ``rate`` is in calls per second; ``memory_mb`` what a call may add to its worker
        process; ``cpu_percent`` the share of the machine its process calls use together.
        Calls already waiting keep waiting under the new limits. Raises ``ValueError``
        naming the parameter for a bad name (or the reserved ``"runtime"``), a limit that is
        not > 0, a rate given as a string, a contradiction, or a limit above the budget.
        """
        if name == RUNTIME:
            raise ValueError(f"plugin name {RUNTIME!r} is reserved for the runtime's own budget")
        quota = plugin_quota(name, self.config.budget, timeout_s=timeout_s, rate=rate,
                             burst=burst, max_concurrency=max_concurrency, memory_mb=memory_mb,
                             cpu_percent=cpu_percent, on_rate=on_rate,
                             strict_spacing=strict_spacing, on_concurrency=on_concurrency,
                             max_waiting=max_waiting)  # fmt: skip
        self._put(name, quota, source="api")
        self._log.info("plugin registered", plugin=name, quota=str(quota))
        return quota

    def _put(self, name: str, quota: PluginQuota, *, source: Source) -> None:
        plugin = self._gate.plugins.get(name)
        if plugin is None:
            self._gate.plugins[name] = Plugin(name, quota, source=source, cpus=self._cpus)
        else:
            now = self._clock.now()
            let_in = plugin.configure(quota, source=source, cpus=self._cpus, now=now)
            self._gate.activate_waiting(plugin, let_in)

    def unregister(self, name: str) -> None:
        """Forget plugin ``name``: its later calls are refused as unknown; calls in flight
        finish under its limits. Raises ``ValueError`` for a plugin that is not registered."""
        self._plugin(name)
        del self._gate.plugins[name]

    def quota(self, name: str) -> PluginQuota:
        """Plugin ``name``'s limits; ``ValueError`` when it is not registered."""
        return self._plugin(name).quota

    def plugins(self) -> dict[str, PluginQuota]:
        """Every registered plugin's limits, by name."""
        return {name: plugin.quota for name, plugin in self._gate.plugins.items()}

    def _plugin(self, name: str) -> Plugin:
        plugin = self._gate.plugins.get(check_plugin_name(name))
        if plugin is None:
            known = ", ".join(sorted(self._gate.plugins)) or "none"
            raise ValueError(f"plugin {name!r} is not registered (registered: {known})")
        return plugin

    def _terminate(
        self, call: Call, quota: str, measured: float, limit: float, reason: str
    ) -> None:
        self._gate.terminate(call, quota, measured, limit, reason=reason)

    def detach(self) -> None:
        """Take the enforcer's hooks off the scheduler (nothing is enforced after this)."""
        self._gate.detach()

    # -- the runtime's budget -----------------------------------------------------------------

    def register_recovery(self, name: str, action: RecoveryAction) -> None:
        """Offer a recovery action (sync or async, no arguments) under ``name``, for the
        budget's ``memory_actions``/``cpu_actions``. Raises ``ValueError`` for a bad name,
        ``TypeError`` for an action that is not callable."""
        self._recovery.register(name, action)

    def unregister_recovery(self, name: str) -> bool:
        """Withdraw a recovery action; returns whether it was registered."""
        return self._recovery.unregister(name)

    async def observe_budget(self, reading: BudgetReading) -> list[Pressure]:
        """Judge one measurement of the runtime against its budget and act on it: recovery
        actions near a limit, an event and a log line when breached. Returns the pressures."""
        pressures = self._budget.observe(self._clock.now(), reading)
        budget = self.config.budget
        for pressure in pressures:
            resource, measured, limit = pressure.resource, pressure.measured, pressure.limit
            if pressure.breached:
                self._notifier.exceeded(RUNTIME, resource, measured, limit)
            elif pressure.restored:
                self._log.info("runtime back within budget", quota=resource, measured=measured)
            if pressure.recover:
                if not pressure.breached:
                    self._notifier.exceeded(RUNTIME, resource, measured, limit)
                actions = budget.memory_actions if resource == "memory" else budget.cpu_actions
                reason = f"{resource} at {measured:.1f} of {limit:g} ({measured / limit:.0%})"
                for action in actions:
                    await self._recovery.run(action, reason=reason)
        return pressures

    async def _budget_loop(self) -> None:
        while True:
            await self._clock.sleep(self.config.budget.interval_ms / 1000)
            reading: BudgetReading = await self._offload(self._probe)
            await self.observe_budget(reading)

    # -- running ------------------------------------------------------------------------------

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Run the measuring loops under ``supervisor`` (restarted if they crash)."""
        supervisor.add_supervisor(_Host(self, context))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[QuotaEnforcer]:
        """Measure plugin processes and the runtime for the body of ``async with``.

        Raises ``RuntimeError`` if already running, and what a measurement raised.
        """
        if self._running:
            raise RuntimeError("the quota enforcer is already running; stop it first")
        self._running = True
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._monitor.run)
                tg.start_soon(self._budget_loop)
                try:
                    yield self
                except BaseException as exc:  # re-raised as it was, not in an exception group
                    body_error = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._running = False
        if body_error is not None:
            raise body_error

    # -- configuration and statistics ---------------------------------------------------------

    def apply_config(self, config: Config) -> list[str]:
        """Apply a reload live (plugins from the config, settings, budget); return the
        $.paths that need a restart (only ``enabled``)."""
        new, old = config.quotas, self.config
        restart = ["$.quotas.enabled"] if new.enabled != old.enabled else []
        self._config = config
        self._monitor.settings = new
        self._notifier.log_interval_s = new.log_interval_s
        self._budget.configure(**_budget_settings(new))
        for name, quota in new.plugins.items():
            self._put(name, quota, source="config")
        gone = [
            n
            for n, p in self._gate.plugins.items()
            if p.source == "config" and n not in new.plugins
        ]
        for name in gone:
            del self._gate.plugins[name]
        return restart

    def statistics(self) -> QuotaStatistics:
        """Per plugin counts and usage; the runtime's use against its budget."""
        plugins = {
            name: p.record.snapshot(p.quota, source=p.source, active=p.slots.active, waiting=p.held)
            for name, p in self._gate.plugins.items()
        }
        budget = self._budget
        return QuotaStatistics(
            running=self._running,
            plugins=plugins,
            watched_processes=len(self._monitor),
            budget=BudgetStatistics(
                memory_mb=budget.memory_mb,
                memory_limit_mb=budget.memory_limit_mb,
                cpu_percent=budget.cpu_percent,
                cpu_limit_percent=budget.cpu_limit_percent,
                breaches={str(k): v for k, v in budget.breaches.items()},
                recoveries=dict(self._recovery.runs),
                recovery_failures=self._recovery.failures,
            ),
        )


class _Host(Supervisor):
    """The enforcer's loops as a supervised child: a supervisor without children whose ``run``
    holds ``QuotaEnforcer.running`` open, so a crash there restarts them."""

    def __init__(self, enforcer: QuotaEnforcer, context: ActorContext) -> None:
        super().__init__(enforcer.name, context=context)
        self._enforcer = enforcer

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        async with self._enforcer.running():
            await super().run(started)


def _budget_settings(section: QuotaSection) -> dict[str, float]:
    budget = section.budget
    return {
        "memory_mb": float(budget.memory_mb),
        "cpu_percent": budget.cpu_percent,
        "cpu_window_s": budget.cpu_window_s,
        "recover_ratio": budget.recover_ratio,
        "cooldown_s": budget.cooldown_s,
    }
