"""The Alerter service: rules evaluated on a drift-free schedule, alerts sent where they go.

Every ``alerts.evaluation_interval_ms`` (round ``i`` due at ``start + i·interval`` on the
injected clock) the evaluator actor snapshots the ``MetricsRegistry`` into the series store,
evaluates every rule (``RuleGroup``) and hands out what changed:

- the log and the event bus (``subscribe()``: ``AlertPending``, ``AlertFiring``,
  ``AlertResolved``), at once;
- the history actor (SQLite), the HTTP sinks' actors (Alertmanager, webhook) and the recovery
  actor, through their bounded mailboxes with ``tell_nowait``: a slow disk or sink never
  delays a round.

External sinks get an alert when it fires, again every ``repeat_interval_s`` while it fires
(dedup: never more often), and once when it resolves. Rule state lives in the service, so it
survives a restart of the evaluator actor.

Standalone (a test, a benchmark)::

    alerter = Alerter(config, ActorContext(clock=clock))
    async with alerter.running():
        ...
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import msgspec

from runtime.actor import ActorContext, ActorRef
from runtime.events import (
    AlertEvent,
    AlertFiring,
    AlertPending,
    AlertResolved,
    EventBus,
    Subscription,
)
from runtime.exceptions import ActorStopped, ChannelFull
from runtime.logging import get_logger
from runtime.metrics import MetricsRegistry
from runtime.supervisor import ChildSpec, Supervisor

from .evaluator import EvaluatorActor
from .history import AlertRecord, HistoryActor, HistoryQuery
from .recovery import RecoveryAction, RecoveryActor, RecoveryRequest, collect_garbage
from .rules import Alert, AlertState, Round, RuleGroup, Transition
from .series import SeriesStore
from .sinks import Batch, Post, SinkActor, SinkKind, SinkStatistics, post_in_thread

if TYPE_CHECKING:
    from runtime.config import AlertSection, Config

__all__ = ["Alerter", "AlerterStatistics"]

_EVENTS: dict[str, type[AlertEvent]] = {
    "pending": AlertPending,
    "firing": AlertFiring,
    "resolved": AlertResolved,
}
_STATES = ("pending", "firing", "resolved")
# Reloading these needs the Alerter's actors rebuilt; the rest applies live.
_RESTART_KEYS = (
    "enabled", "history_path", "history_retention_s", "alertmanager_url", "webhook_url",
    "sink_timeout_s", "outbox_capacity",
)  # fmt: skip


class AlerterStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the Alerter: rules, series, rounds and their cost, alerts, sinks."""

    rules: int
    series: int
    samples: int
    evaluations: int
    last_evaluation_ms: float
    max_evaluation_ms: float
    rule_errors: dict[str, str]
    pending: int
    firing: int
    transitions: dict[str, int]
    sinks: list[SinkStatistics]
    recoveries: dict[str, int]
    history_recorded: int


class Alerter:
    """Alert rules over the runtime's metrics, with Prometheus semantics (``rt.alerts``).

    ``sink_post`` replaces how the HTTP sinks post (tests). Raises ``ValueError`` for a rule
    whose expression or template does not parse (a validated ``Config`` has none).
    """

    name = "alerts"

    def __init__(
        self, config: Config, context: ActorContext, *, sink_post: Post = post_in_thread
    ) -> None:
        self._section: AlertSection = config.alerts
        self._runtime_name = config.runtime.name
        self._context = context
        self._clock = context.clock
        # ``is None``, not ``or``: an empty registry is falsy (it has a length).
        bus, metrics = context.events, context.metrics
        self._bus = bus if bus is not None else EventBus(clock=context.clock)
        self._metrics = metrics if metrics is not None else MetricsRegistry(clock=context.clock)
        self.series = SeriesStore()
        self._group = RuleGroup(self._section.rules, self.series)
        self._actions: dict[str, RecoveryAction] = {"collect_garbage": collect_garbage}
        self._log = get_logger(self.name)
        self._sink_post = sink_post
        self._refs: dict[str, ActorRef] = {}
        self._sinks: dict[str, SinkActor] = {}  # the running instance of each sink
        self._sink_stats: dict[str, SinkStatistics] = {}
        self._history: HistoryActor | None = None
        self._recovery_runs: dict[str, int] = {}
        self._transitions = dict.fromkeys(_STATES, 0)
        self._rule_errors: dict[str, str] = {}
        self._evaluations = 0
        self._last_ms = self._max_ms = 0.0

    # -- running ------------------------------------------------------------------------------

    def attach(self, supervisor: Supervisor, context: ActorContext) -> None:
        """Put the Alerter's actors (in a supervisor of their own) under ``supervisor``."""
        supervisor.add_supervisor(self._supervisor(context))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Alerter]:
        """Run the Alerter's actors for the body of ``async with`` (standalone, no Runtime)."""
        async with self._supervisor(self._context):
            yield self

    def _supervisor(self, context: ActorContext) -> Supervisor:
        section = self._section
        supervisor = Supervisor(self.name, context=context)
        self._refs = {}
        self._refs["history"] = supervisor.add(
            ChildSpec(
                "alerts.history", self._new_history, mailbox_capacity=1000,
                mailbox_policy="drop_oldest",
            )
        )  # fmt: skip
        self._refs["recovery"] = supervisor.add(
            ChildSpec(
                "alerts.recovery",
                lambda: RecoveryActor(self._actions, self._bus, self._recovery_runs),
                mailbox_capacity=100,
                mailbox_policy="drop_newest",
            )
        )
        sinks: dict[SinkKind, str | None] = {
            "alertmanager": section.alertmanager_url,
            "webhook": section.webhook_url,
        }
        for kind, url in sinks.items():
            if url is not None:
                self._refs[kind] = supervisor.add(self._sink_spec(kind, url, context))
        self._refs["evaluator"] = supervisor.add(
            ChildSpec(
                "alerts.evaluator",
                lambda: EvaluatorActor(self.evaluate_now, lambda: self.evaluation_interval_ms),
                mailbox_capacity=16,
            )
        )
        return supervisor

    def _new_history(self) -> HistoryActor:
        section = self._section
        self._history = HistoryActor(
            section.history_path, retention_s=section.history_retention_s, clock=self._clock
        )
        return self._history

    def _sink_spec(self, kind: SinkKind, url: str, context: ActorContext) -> ChildSpec:
        name = f"alerts.sink.{kind}"
        stats = self._sink_stats.setdefault(kind, SinkStatistics(name=kind, url=url))
        breaker = context.circuit_breaker(name)

        def build() -> SinkActor:
            sink = self._sinks[kind] = SinkActor(
                kind, url, timeout_s=self._section.sink_timeout_s, retry_policy=context.retry,
                breaker=breaker, statistics=stats, give_up=self._dead_letter(name),
                post=self._sink_post, rng=context.rng,
            )  # fmt: skip
            return sink

        return ChildSpec(
            name, build, mailbox_capacity=self._section.outbox_capacity,
            mailbox_policy="drop_oldest",
        )  # fmt: skip

    def _dead_letter(self, source: str) -> Callable[[object, str], None]:
        def give_up(message: object, reason: str) -> None:
            self._context.dead_letter(message, reason=reason, source=source)

        return give_up

    # -- one evaluation round -----------------------------------------------------------------

    def evaluate_now(self) -> Round:
        """Run one round now: snapshot the metrics, evaluate every rule, hand out the changes.

        The evaluator calls this on its schedule; tests and benchmarks may call it directly.
        """
        began = time.perf_counter()
        t_ms = round(self._clock.now() * 1000)
        self.series.ingest(self._metrics, t_ms)
        outcome = self._group.evaluate(t_ms)
        self.series.prune(t_ms)
        self._hand_out(outcome)
        self._evaluations += 1
        self._last_ms = (time.perf_counter() - began) * 1000
        self._max_ms = max(self._max_ms, self._last_ms)
        return outcome

    def _hand_out(self, outcome: Round) -> None:
        offset_s = self._clock.wall() - self._clock.now()
        records: list[AlertRecord] = []
        outgoing: list[Alert] = []
        recoveries: dict[tuple[str, str], RecoveryRequest] = {}
        for transition in outcome.transitions:
            alert = transition.alert.snapshot(offset_s)
            self._announce(transition, alert)
            records.append(_record(transition, alert, offset_s))
            if transition.kind != "pending":
                outgoing.append(alert)
                transition.alert.last_sent_ms = transition.t_ms
            if transition.kind == "firing":
                for action in transition.alert.rule.recovery:
                    reason = f"alert {alert.name} fired with value {alert.value:g}"
                    recoveries[(action, alert.name)] = RecoveryRequest(
                        action=action, alert=alert.name, reason=reason
                    )
        repeat_ms = round(self._section.repeat_interval_s * 1000)
        for instance in self._group.due_again(outcome.t_ms, repeat_ms):
            outgoing.append(instance.snapshot(offset_s))
            instance.last_sent_ms = outcome.t_ms
        self._note_errors(outcome.errors)
        if records:
            self._offer("history", records)
        if outgoing:
            self._send(outgoing)
        for request in recoveries.values():
            self._offer("recovery", request)

    def _announce(self, transition: Transition, alert: Alert) -> None:
        kind = transition.kind
        self._transitions[kind] += 1
        log = self._log.warning if kind == "firing" else self._log.info
        log(f"alert {kind}", alert=alert.name, labels=alert.labels, value=alert.value)
        self._bus.emit(
            _EVENTS[kind], actor=self.name, name=alert.name, labels=alert.labels,
            annotations=alert.annotations, value=alert.value, active_since=alert.active_since,
        )  # fmt: skip

    def _send(self, alerts: list[Alert]) -> None:
        section = self._section
        lease_s = 4 * max(section.repeat_interval_s, section.evaluation_interval_ms / 1000)
        name = urllib.parse.quote(self._runtime_name, safe="")
        batch = Batch(
            alerts=alerts,
            sent_at=self._clock.wall(),
            lease_s=lease_s,
            generator_url=f"jarvis-runtime://{name}/alerts/",
        )
        sinks = {"alertmanager": section.alertmanager_url, "webhook": section.webhook_url}
        for kind, url in sinks.items():
            if url is not None:
                self._offer(kind, batch)

    def _offer(self, target: str, message: object) -> None:
        """Hand ``message`` to one of the Alerter's actors without waiting."""
        ref = self._refs.get(target)
        try:
            if ref is None:
                raise ActorStopped(f"alerts.{target}")
            ref.tell_nowait(message)
        except (ActorStopped, ChannelFull):
            self._context.dead_letter(message, reason="actor_stopped", source=f"alerts.{target}")

    def _note_errors(self, errors: list[tuple[str, str]]) -> None:
        """Log a failing rule once per distinct error (it fails again every round)."""
        failing = dict(errors)
        for rule, message in failing.items():
            if self._rule_errors.get(rule) != message:
                self._log.error("alert rule failed", rule=rule, error=message)
        self._rule_errors = failing

    # -- the public face ----------------------------------------------------------------------

    def active(self) -> list[Alert]:
        """The firing alerts (those kept firing by ``keep_firing_for`` included)."""
        return self._alerts("firing")

    def pending(self) -> list[Alert]:
        """The pending alerts: their expression holds, their ``for`` has not yet passed."""
        return self._alerts("pending")

    def _alerts(self, state: AlertState) -> list[Alert]:
        offset_s = self._clock.wall() - self._clock.now()
        return [alert.snapshot(offset_s) for alert in self._group.alerts(state)]

    def subscribe(self, *, capacity: int | None = None) -> Subscription[AlertEvent]:
        """``AlertPending``, ``AlertFiring`` and ``AlertResolved`` events from now on.

        Iterate with ``async for``; close it (or use ``with``) to unsubscribe. A slow
        subscriber loses its oldest events, never delays evaluation.
        """
        return self._bus.subscribe(AlertEvent, capacity=capacity, name="alerts.subscriber")

    async def history(
        self,
        *,
        name: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        timeout_s: float = 10.0,
    ) -> list[AlertRecord]:
        """Recorded transitions, newest first: of alert ``name``, into ``state`` (pending,
        firing or resolved), between wall-clock ``since`` and ``until``.

        Raises ``ValueError`` for a bad ``state`` or ``limit``, ``ActorStopped`` when the
        Alerter is not running, ``DeadlineExceeded`` after ``timeout_s``.
        """
        if state is not None and state not in _STATES:
            raise ValueError(f"state must be one of {', '.join(_STATES)} or None; got {state!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        ref = self._refs.get("history")
        if ref is None:
            raise ActorStopped("alerts.history")
        query = HistoryQuery(name=name, state=state, since=since, until=until, limit=limit)
        records: list[AlertRecord] = await ref.ask(query, timeout_s=timeout_s)
        return records

    async def flush(self, *, timeout_s: float = 30.0) -> None:
        """Wait until every sink's outbox is empty and nothing is being delivered.

        Raises ``TimeoutError`` after ``timeout_s`` on the Alerter's clock.
        """
        with self._clock.fail_after(timeout_s):
            for sink in list(self._sinks.values()):
                await sink.wait_idle()

    def register_recovery(self, name: str, action: RecoveryAction) -> None:
        """Offer ``action`` to rules as ``recovery: [name]`` (replacing one of that name).

        Raises ``ValueError`` for an empty name, ``TypeError`` for a non-callable action.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"name must be a non-empty string, e.g. 'shed_background'; got {name!r}"
            )
        if not callable(action):
            raise TypeError(f"action must be an async callable without arguments; got {action!r}")
        self._actions[name] = action

    def apply_config(self, config: Config) -> list[str]:
        """Apply rules, ``evaluation_interval_ms`` and ``repeat_interval_s`` live (a rule with
        the same name and expression keeps its alerts); return the paths that need a restart.
        """
        new, old = config.alerts, self._section
        changed = [key for key in _RESTART_KEYS if getattr(new, key) != getattr(old, key)]
        restart = [f"$.alerts.{key}" for key in changed]
        if new.rules != old.rules:
            self._group.replace(new.rules)
        self._section = msgspec.structs.replace(
            new, **{key: getattr(old, key) for key in _RESTART_KEYS}
        )
        return restart

    def statistics(self) -> AlerterStatistics:
        firing = sum(1 for _ in self._group.alerts("firing"))
        return AlerterStatistics(
            rules=len(self._group.states),
            series=len(self.series),
            samples=self.series.samples,
            evaluations=self._evaluations,
            last_evaluation_ms=self._last_ms,
            max_evaluation_ms=self._max_ms,
            rule_errors=dict(self._rule_errors),
            pending=len(self._group.alerts("pending")),
            firing=firing,
            transitions=dict(self._transitions),
            sinks=[msgspec.structs.replace(s) for s in self._sink_stats.values()],
            recoveries=dict(self._recovery_runs),
            history_recorded=self._history.recorded if self._history is not None else 0,
        )

    @property
    def evaluation_interval_ms(self) -> int:
        return self._section.evaluation_interval_ms


def _record(transition: Transition, alert: Alert, offset_s: float) -> AlertRecord:
    return AlertRecord(
        at=transition.t_ms / 1000 + offset_s,
        name=alert.name,
        state=transition.kind,
        labels=alert.labels,
        annotations=alert.annotations,
        value=alert.value,
        active_since=alert.active_since,
    )
