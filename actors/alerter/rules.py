"""The alert state machine: Prometheus's alerting-rule semantics, pure and synchronous.

Each evaluation of a rule at time ``t`` (``RuleState.step``), as Prometheus 2.42 does it:

- every sample of the expression's result is one alert instance, identified by its labels
  (the series' labels without the metric name, plus the rule's labels, plus ``alertname``);
- a new instance starts *pending*, active since ``t``; it *fires* once it has been active for
  the rule's ``for`` (at once when ``for`` is 0: it is never seen pending);
- an instance whose sample is gone: a pending one is dropped; a firing one keeps firing while
  ``t`` is less than ``keep_firing_for`` after the first evaluation that missed it (keeping the
  value and annotations of its last sample), then *resolves*.

Times are integer milliseconds on the evaluator's monotonic clock. ``RuleGroup`` evaluates
every rule at one instant (through an ``EvaluationPlan``, which answers rules sharing a vector
together) and steps only the rules with samples or alerts; it reports the transitions, and
sending, events and history are the service's business.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import msgspec

from runtime.alertexpr import parse_expr
from runtime.alerttemplate import Template

from .evaluate import Compiler, Instant, Vector, VectorFn, VSample
from .plan import EvaluationPlan
from .series import DEFAULT_LOOKBACK_MS, SeriesStore
from .window import exact

if TYPE_CHECKING:
    from runtime.config import AlertRule
    from runtime.metrics import Labels

__all__ = [
    "Alert",
    "AlertInstance",
    "CompiledRule",
    "Round",
    "RuleGroup",
    "RuleState",
    "Transition",
]

AlertState = Literal["pending", "firing", "resolved"]
TransitionKind = Literal["pending", "firing", "resolved"]
_OUTPUT_CACHE_LIMIT = 10_000  # distinct series per rule whose alert labels are remembered


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert as users see it: ``active()``, ``pending()``, events and sinks.

    ``labels`` include ``alertname``. Times are wall-clock seconds: ``active_since`` is when
    the expression first held, ``fired_at`` when it fired, ``resolved_at`` when it resolved.
    """

    name: str
    state: AlertState
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None


class CompiledRule:
    """A config ``AlertRule`` made ready to evaluate: its tree compiled, its templates parsed.

    Raises ``ValueError`` for a bad expression or template (the config validator reports the
    same problems earlier, with their paths).
    """

    def __init__(self, rule: AlertRule, compiler: Compiler) -> None:
        self.config = rule
        self.name = rule.name
        self.tree = parse_expr(rule.expr)
        self.vector: VectorFn = compiler.compile(self.tree)
        self.for_ms = round(rule.for_ * 1000)
        self.keep_firing_for_ms = round(rule.keep_firing_for * 1000)
        self.labels = {key: Template(text) for key, text in rule.labels.items()}
        self.annotations = {key: Template(text) for key, text in rule.annotations.items()}
        self.recovery = tuple(rule.recovery)
        self._labels_use_value = any(t.uses_value for t in self.labels.values())
        self._outputs: dict[tuple[str | None, Labels], _Output] = {}

    def output(self, sample: VSample) -> _Output:
        """The alert labels (and the labels templates see) for one sample of the result."""
        name, labels, value = sample
        if not self._labels_use_value:
            cached = self._outputs.get((name, labels))
            if cached is not None:
                return cached
        template_labels = dict(labels)
        if name is not None:
            template_labels["__name__"] = name
        alert_labels = dict(labels)
        for key, template in self.labels.items():
            text = template.render(template_labels, value)
            if text:
                alert_labels[key] = text
            else:  # as in Prometheus: a label set to "" is no label
                alert_labels.pop(key, None)
        alert_labels["alertname"] = self.name
        output = _Output(tuple(sorted(alert_labels.items())), alert_labels, template_labels)
        if not self._labels_use_value:
            if len(self._outputs) >= _OUTPUT_CACHE_LIMIT:
                self._outputs.clear()
            self._outputs[(name, labels)] = output
        return output

    def same_expression(self, other: CompiledRule) -> bool:
        """Whether ``other`` is this rule with the same name and expression (state carries over)."""
        return self.name == other.name and self.tree == other.tree

    def __repr__(self) -> str:
        return f"<CompiledRule {self.name} {self.config.expr!r}>"


class _Output(NamedTuple):
    key: Labels
    labels: dict[str, str]
    template_labels: dict[str, str]


class AlertInstance:
    """One alert's mutable state inside a ``RuleState``; ``snapshot`` gives the public view."""

    __slots__ = (
        "_annotations",
        "_rendered_for",
        "_value",
        "active_at_ms",
        "fired_at_ms",
        "keep_firing_since_ms",
        "key",
        "labels",
        "last_sent_ms",
        "resolved_at_ms",
        "rule",
        "state",
        "template_labels",
    )

    def __init__(self, rule: CompiledRule, output: _Output, value: float, t_ms: int) -> None:
        self.rule = rule
        self.key = output.key
        self.labels = output.labels
        self.template_labels = output.template_labels
        self._value = value  # maybe an Approximate: made exact when read
        self.state: AlertState = "pending"
        self.active_at_ms = t_ms
        self.fired_at_ms: int | None = None
        self.resolved_at_ms: int | None = None
        self.keep_firing_since_ms: int | None = None
        self.last_sent_ms: int | None = None  # when external sinks last got it
        self._annotations: dict[str, str] = {}
        self._rendered_for: tuple[dict[str, str], float] | None = None

    @property
    def value(self) -> float:
        """The latest sample's value, exactly as Prometheus computes it."""
        value = self._value
        if type(value) is not float:
            value = self._value = exact(value)
        return value

    @value.setter
    def value(self, value: float) -> None:
        self._value = value

    def freeze(self) -> None:
        """Fix the value now: the samples behind an approximate one may be pruned later."""
        self._value = exact(self._value)

    def annotations(self) -> dict[str, str]:
        """The annotations rendered for the latest sample (cached until it changes)."""
        current = (self.template_labels, self.value)
        rendered = self._rendered_for
        if rendered is None or rendered[0] is not current[0] or not _same(rendered[1], current[1]):
            templates = self.rule.annotations.items()
            self._annotations = {
                k: t.render(self.template_labels, self.value) for k, t in templates
            }
            self._rendered_for = current
        return self._annotations

    def snapshot(self, wall_offset_s: float) -> Alert:
        """The public view; ``wall_offset_s`` turns evaluator milliseconds into wall seconds."""

        def wall(t_ms: int | None) -> float | None:
            return None if t_ms is None else t_ms / 1000 + wall_offset_s

        return Alert(
            name=self.rule.name,
            state=self.state,
            labels=dict(self.labels),
            annotations=dict(self.annotations()),
            value=self.value,
            active_since=self.active_at_ms / 1000 + wall_offset_s,
            fired_at=wall(self.fired_at_ms),
            resolved_at=wall(self.resolved_at_ms),
        )

    def __repr__(self) -> str:
        return f"<AlertInstance {self.rule.name} {dict(self.key)} {self.state}>"


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here: same rendering


class Transition(NamedTuple):
    """An alert went ``kind`` (pending, firing or resolved) at ``t_ms``."""

    kind: TransitionKind
    alert: AlertInstance
    t_ms: int


class RuleState:
    """One rule's alert instances, by their labels."""

    __slots__ = ("active", "rule")

    def __init__(self, rule: CompiledRule) -> None:
        self.rule = rule
        self.active: dict[Labels, AlertInstance] = {}

    def step(self, result: Vector, t_ms: int) -> list[Transition]:
        """Advance every instance to ``t_ms`` given the expression's ``result`` there.

        Raises ``ValueError`` (changing nothing) when two samples give the same alert labels.
        """
        current = self._outputs(result)
        active, transitions = self.active, []
        for key, (output, value) in current.items():
            alert = active.get(key)
            if alert is None:
                active[key] = AlertInstance(self.rule, output, value, t_ms)
            else:
                alert.value, alert.template_labels = value, output.template_labels
                alert.keep_firing_since_ms = None
        for key, alert in list(active.items()):
            if key not in current:
                alert.freeze()
                if not self._keeps_firing(alert, t_ms):
                    del active[key]
                    if alert.state == "firing":
                        alert.state, alert.resolved_at_ms = "resolved", t_ms
                        transitions.append(Transition("resolved", alert, t_ms))
            elif alert.state == "pending":
                if t_ms - alert.active_at_ms >= self.rule.for_ms:
                    alert.state, alert.fired_at_ms = "firing", t_ms
                    transitions.append(Transition("firing", alert, t_ms))
                elif alert.active_at_ms == t_ms:
                    transitions.append(Transition("pending", alert, t_ms))
        return transitions

    def _outputs(self, result: Vector) -> dict[Labels, tuple[_Output, float]]:
        current: dict[Labels, tuple[_Output, float]] = {}
        for sample in result:
            output = self.rule.output(sample)
            if output.key in current:
                raise ValueError(
                    f"rule {self.rule.name!r}: several series give the alert labels "
                    f"{output.labels}; keep a label that tells them apart"
                )
            current[output.key] = (output, sample[2])
        return current

    def _keeps_firing(self, alert: AlertInstance, t_ms: int) -> bool:
        keep_ms = self.rule.keep_firing_for_ms
        if alert.state != "firing" or keep_ms <= 0:
            return False
        if alert.keep_firing_since_ms is None:
            alert.keep_firing_since_ms = t_ms
        return t_ms - alert.keep_firing_since_ms < keep_ms

    def alerts(self, state: AlertState) -> Iterator[AlertInstance]:
        return (alert for alert in self.active.values() if alert.state == state)


class Round(NamedTuple):
    """What one evaluation of every rule did: its transitions, and the rules that failed."""

    t_ms: int
    transitions: list[Transition]
    errors: list[tuple[str, str]]


class RuleGroup:
    """Every rule, evaluated together at one instant over ``store``.

    Raises ``ValueError`` for a rule whose expression or template does not parse.
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        store: SeriesStore,
        *,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
    ) -> None:
        self.store = store
        self.lookback_ms = lookback_ms
        self.states: list[RuleState] = []
        self._plan = EvaluationPlan([], Compiler())
        self._alerting: set[int] = set()  # indices of the rules with alerts
        self._round = 0
        self.replace(rules)

    def replace(self, rules: Sequence[AlertRule]) -> None:
        """Use ``rules`` from now on; a rule with the same name and expression keeps its alerts.

        Raises ``ValueError`` (changing nothing) for a rule that does not parse.
        """
        compiler = Compiler()
        compiled = [CompiledRule(rule, compiler) for rule in rules]
        old = {state.rule.name: state for state in self.states}
        states = []
        for rule in compiled:
            state = RuleState(rule)
            previous = old.get(rule.name)
            if previous is not None and previous.rule.same_expression(rule):
                state.active = previous.active
                for alert in state.active.values():
                    alert.rule = rule
            states.append(state)
        self.states = states
        self._plan = EvaluationPlan(compiled, compiler)
        self._alerting = {index for index, state in enumerate(states) if state.active}
        self.store.retention_ms = self.lookback_ms + compiler.widest_window_ms

    def evaluate(self, t_ms: int) -> Round:
        """Evaluate every rule at ``t_ms`` over what the store holds now."""
        self._round += 1
        at = Instant(self.store, t_ms, self._round, self.lookback_ms)
        transitions: list[Transition] = []
        errors: list[tuple[str, str]] = []
        results = self._plan.results(at)
        # Step the rules with samples, and those whose alerts may keep firing or resolve.
        for index in sorted(results.keys() | self._alerting):
            state = self.states[index]
            try:
                transitions += state.step(results.get(index, []), t_ms)
            except ValueError as exc:
                errors.append((state.rule.name, str(exc)))
            if state.active:
                self._alerting.add(index)
            else:
                self._alerting.discard(index)
        return Round(t_ms, transitions, errors)

    def alerts(self, state: AlertState) -> list[AlertInstance]:
        """The instances in ``state`` (pending or firing), by rule then labels."""
        found: list[AlertInstance] = []
        for rule_state in self.states:
            found += sorted(rule_state.alerts(state), key=lambda alert: alert.key)
        return found

    def due_again(self, t_ms: int, repeat_ms: int) -> list[AlertInstance]:
        """Firing instances last sent at least ``repeat_ms`` ago (time to send them again)."""
        return [
            alert
            for index in sorted(self._alerting)
            for alert in self.states[index].active.values()
            if alert.state == "firing"
            and alert.last_sent_ms is not None
            and t_ms - alert.last_sent_ms >= repeat_ms
        ]
