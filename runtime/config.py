"""The typed configuration: msgspec Structs, their defaults, and the loader.

``load_config(path)`` reads a YAML file, applies ``JARVIS_RUNTIME__SECTION__KEY`` environment
overrides, validates everything and returns a frozen ``Config``. Validation reports every
problem at once (unknown keys, wrong types, out-of-range values, contradictions between keys),
each with its ``$.path`` and, where known, the line or the environment variable it came from.

The defaults here are the shipped ``config.yaml``: a test keeps the two equal.

Durations (``for``, ``keep_firing_for``) may be written ``"5m"``, ``"30s"``, ``"1h30m"`` or as
seconds; plugin rates as calls per second or ``"10/s"``, ``"600/min"``. Both are stored as
floats (seconds, calls per second).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect

from . import _config_rules as rules
from ._config_check import Checks, Problem, Validator, describe_value, parse_duration, parse_rate
from ._config_source import apply_env_overrides, config_error, describe_read_error, read_yaml
from .exceptions import ConfigError, ConfigProblem

__all__ = [
    "ENV_PREFIX",
    "AlertRule",
    "AlertSection",
    "BudgetConfig",
    "CacheSection",
    "Config",
    "DeadLetterSection",
    "EventSection",
    "LoggingSection",
    "MetricsSection",
    "NamespaceConfig",
    "OverLimit",
    "PluginQuota",
    "ProfilerSection",
    "PrometheusConfig",
    "QuotaSection",
    "RedisConfig",
    "RestartSection",
    "RetrySection",
    "RuntimeSection",
    "SamplerSection",
    "SchedulerLoadSection",
    "SchedulerSection",
    "TaskClassConfig",
    "TierConfig",
    "WriteBehindConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_rate",
]

ENV_PREFIX = "JARVIS_RUNTIME__"

# Constrained scalars. The validator reads these Meta constraints through msgspec.inspect.
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
# ``extra["hint"]`` is what the validator says when a string does not match the pattern.
NonBlankStr = Annotated[
    str, msgspec.Meta(min_length=1, pattern=r"\S", extra={"hint": "must not be blank"})
]
Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        extra={"hint": "a name starts with a letter, then letters, digits, '_', '.' or '-'"},
    ),
]
LabelName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        extra={"hint": "a label name is letters, digits and '_', not starting with a digit"},
    ),
]
# ``extra`` marks strings the validator converts to numbers before checking the range.
DurationS = Annotated[float, msgspec.Meta(ge=0, extra={"kind": "duration"})]
RatePerS = Annotated[float, msgspec.Meta(gt=0, extra={"kind": "rate"})]

MailboxPolicy = Literal["block", "drop_oldest", "drop_newest", "reject"]
RestartStrategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
Executor = Literal["loop", "thread", "process"]
Backend = Literal["memory", "compressed", "sqlite", "redis"]
EvictionPolicy = Literal["lru", "lfu", "fifo", "tinylfu"]


class RestartSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How supervisors restart crashed children (Erlang/OTP semantics)."""

    strategy: RestartStrategy = "one_for_one"
    intensity: NonNegInt = 5
    period_s: PosFloat = 10.0
    backoff_initial_ms: NonNegInt = 50
    backoff_max_ms: NonNegInt = 2000


class RetrySection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exponential backoff with full jitter for sends to a full channel and failed handlers."""

    initial_ms: NonNegInt = 50
    max_ms: NonNegInt = 500
    factor: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    retries: NonNegInt = 3


class DeadLetterSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The bounded ring of messages that could not be delivered."""

    capacity: PosInt = 1000
    log_interval_s: NonNegFloat = 10.0


class EventSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The event bus: each subscriber gets a bounded channel of this capacity."""

    subscriber_capacity: PosInt = 1000


class RuntimeSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The kernel: mailboxes, supervision, retry, dead letters and events."""

    name: NonEmptyStr = "jarvis"
    shutdown_timeout_ms: NonNegInt = 5000
    mailbox_capacity: PosInt = 1000
    mailbox_policy: MailboxPolicy = "block"
    restart: RestartSection = msgspec.field(default_factory=RestartSection)
    retry: RetrySection = msgspec.field(default_factory=RetrySection)
    dead_letters: DeadLetterSection = msgspec.field(default_factory=DeadLetterSection)
    events: EventSection = msgspec.field(default_factory=EventSection)


class LoggingSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """structlog output: JSON lines to a rotating file and a readable console."""

    level: LogLevel = "info"
    file: NonEmptyStr | None = "var/log/runtime.jsonl"
    console: bool = True
    max_bytes: PosInt = 10_000_000
    backups: NonNegInt = 5


class TaskClassConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One scheduler task class: its urgency, deadline, concurrency and executor."""

    priority: Annotated[int, msgspec.Meta(ge=0, le=9)]
    deadline_ms: PosInt | None = None
    max_concurrency: PosInt = 4
    reserved: NonNegInt = 0
    executor: Executor = "loop"
    queue_capacity: PosInt = 1000
    aging_ms: PosInt | None = None
    on_late: Literal["run", "fail"] = "fail"
    cancel_at_deadline: bool = False


def _default_classes() -> dict[str, TaskClassConfig]:
    return {
        "wake_word": TaskClassConfig(priority=0, deadline_ms=500, executor="loop"),
        "voice": TaskClassConfig(
            priority=1, deadline_ms=1000, max_concurrency=4, reserved=1, executor="thread"
        ),
        # Commands are mostly blocking I/O (HTTP, files): in threads, never on the loop.
        "command": TaskClassConfig(priority=2, deadline_ms=2000, executor="thread"),
        "background": TaskClassConfig(
            priority=9, deadline_ms=None, executor="process", aging_ms=1000
        ),
    }


class SchedulerLoadSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How background concurrency adapts to load (AIMD), and when background work is shed.

    Background classes are those without a deadline.
    """

    interval_ms: Annotated[int, msgspec.Meta(ge=10)] = 500
    lag_target_ms: PosInt = 20
    cpu_target_percent: Percent = 80.0
    increase: PosFloat = 1.0
    decrease_factor: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    shed_lag_ms: PosInt = 250
    shed_cpu_percent: Percent = 95.0


class SchedulerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Task classes and the worker pools they run in."""

    enabled: bool = True
    classes: Annotated[dict[Name, TaskClassConfig], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=_default_classes
    )
    process_workers: NonNegInt = 2
    thread_workers: PosInt = 8
    loop_workers: PosInt = 64
    preempt_background: bool = True
    load: SchedulerLoadSection = msgspec.field(default_factory=SchedulerLoadSection)


class SamplerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Resource sampling: how often, and where the history is kept."""

    enabled: bool = True
    interval_ms: Annotated[int, msgspec.Meta(ge=10)] = 1000
    history_path: NonEmptyStr | None = "var/samples.db"
    retention_s: PosInt = 86400
    downsample_after_s: PosInt = 3600
    downsample_bucket_s: PosInt = 60
    disk_path: NonEmptyStr = "/"
    subscriber_capacity: PosInt = 16


class ProfilerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Latency histograms and the event-loop lag monitor.

    A block longer than ``heartbeat_ms + loop_lag_threshold_ms`` is always caught (one longer
    than the threshold alone, when it delays a heartbeat by more than the threshold); a
    heartbeat costs 30-40 µs of CPU, so 20 ms is about 0.2% of a core (bench/profiler.py).
    """

    enabled: bool = True
    loop_lag_threshold_ms: PosInt = 50
    heartbeat_ms: PosInt = 20


class NamespaceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A cache namespace's own lifetimes (None: the tier's TTL applies / no negative caching /
    nothing served past its TTL)."""

    ttl_s: PosFloat | None = None
    negative_ttl_s: PosFloat | None = None
    stale_s: PosFloat | None = None


def _default_namespaces() -> dict[str, NamespaceConfig]:
    return {"response": NamespaceConfig(ttl_s=3600.0), "embedding": NamespaceConfig(ttl_s=86400.0)}


class TierConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One cache tier. ``path`` is for sqlite, ``url`` for redis."""

    name: Name
    backend: Backend
    policy: EvictionPolicy = "tinylfu"
    max_entries: PosInt | None = None
    max_bytes: PosInt | None = None
    ttl_s: PosFloat | None = None
    tti_s: PosFloat | None = None
    path: NonEmptyStr | None = None
    url: NonEmptyStr | None = None
    write: Literal["through", "behind"] = "through"


def _default_tiers() -> list[TierConfig]:
    return [
        TierConfig(
            name="l1",
            backend="memory",
            policy="tinylfu",
            max_entries=10000,
            max_bytes=64_000_000,
            ttl_s=3600.0,
            tti_s=1800.0,
        ),
        TierConfig(name="l3", backend="sqlite", path="var/cache.db", write="behind"),
    ]


class WriteBehindConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How tiers with ``write: behind`` batch their writes."""

    interval_ms: PosInt = 500
    batch: PosInt = 256
    max_pending: PosInt = 4096


class RedisConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How redis tiers name their keys, how long a call may take, and when an unreachable server
    is tried again (a circuit breaker)."""

    key_prefix: NonEmptyStr = "jarvis:cache:"
    timeout_ms: PosInt = 250
    failure_threshold: PosInt = 3
    reset_timeout_s: PosFloat = 5.0


class CacheSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The tiered cache: namespaces and tiers (read in order, L1 first), how often expired
    entries are swept, how compressed tiers compress, how write-behind tiers batch, and how
    redis tiers behave."""

    enabled: bool = True
    sweep_interval_s: PosFloat = 60.0
    compression_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1
    write_behind: WriteBehindConfig = msgspec.field(default_factory=WriteBehindConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    namespaces: dict[Name, NamespaceConfig] = msgspec.field(default_factory=_default_namespaces)
    tiers: list[TierConfig] = msgspec.field(default_factory=_default_tiers)


OverLimit = Literal["wait", "refuse"]
Ratio = Annotated[float, msgspec.Meta(gt=0, le=1)]


class PluginQuota(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One plugin's limits; a limit left out (None) is not enforced.

    ``memory_mb`` is what a call may add to its worker process's resident memory;
    ``cpu_percent`` the share of the whole machine the plugin's process calls use together.
    ``on_rate`` and ``on_concurrency`` say whether a call over the limit waits (at most
    ``max_waiting`` at once) or is refused.
    """

    timeout_s: PosFloat | None = None
    rate: RatePerS | None = None
    burst: PosInt | None = None
    max_concurrency: PosInt | None = None
    memory_mb: PosInt | None = None
    cpu_percent: Percent | None = None
    on_rate: OverLimit = "wait"
    strict_spacing: bool = False
    on_concurrency: OverLimit = "wait"
    max_waiting: PosInt = 100


def _default_memory_actions() -> list[str]:
    return ["shrink_caches", "collect_garbage"]


def _default_cpu_actions() -> list[str]:
    return ["shed_background"]


class BudgetConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The runtime's own resource budget (its process and its children), enforced like a
    quota: past ``recover_ratio`` of a limit its recovery actions run, before it is breached."""

    memory_mb: PosInt = 2048
    cpu_percent: Percent = 20.0
    interval_ms: Annotated[int, msgspec.Meta(ge=10)] = 1000
    cpu_window_s: PosFloat = 60.0
    recover_ratio: Ratio = 0.8
    cooldown_s: NonNegFloat = 60.0
    memory_actions: list[Name] = msgspec.field(default_factory=_default_memory_actions)
    cpu_actions: list[Name] = msgspec.field(default_factory=_default_cpu_actions)


class QuotaSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-plugin quotas, how plugin processes are measured and held, and the runtime's budget."""

    enabled: bool = True
    plugins: dict[Name, PluginQuota] = msgspec.field(default_factory=dict)
    interval_ms: Annotated[int, msgspec.Meta(ge=10)] = 100
    cpu_window_ms: Annotated[int, msgspec.Meta(ge=20)] = 1000
    warn_ratio: Ratio = 0.8
    throttle_period_ms: Annotated[int, msgspec.Meta(ge=10)] = 100
    terminate_after_s: NonNegFloat = 5.0
    log_interval_s: NonNegFloat = 1.0
    budget: BudgetConfig = msgspec.field(default_factory=BudgetConfig)


class AlertRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An alerting rule with Prometheus semantics; durations are in seconds."""

    name: NonBlankStr
    expr: NonBlankStr
    for_: DurationS = msgspec.field(default=0.0, name="for")
    keep_firing_for: DurationS = 0.0
    labels: dict[LabelName, str] = msgspec.field(default_factory=dict)
    annotations: dict[LabelName, str] = msgspec.field(default_factory=dict)
    recovery: list[Name] = msgspec.field(default_factory=list)


def _default_rules() -> list[AlertRule]:
    return [
        AlertRule(
            name="HighMemoryUsage",
            expr="memory_percent > 85",
            for_=300.0,
            labels={"severity": "warning"},
            annotations={"summary": "System memory above 85% for 5 minutes"},
        ),
        AlertRule(
            name="HighCpuUsage",
            expr="cpu_percent > 90",
            for_=600.0,
            labels={"severity": "warning"},
            annotations={"summary": "System CPU above 90% for 10 minutes"},
        ),
        AlertRule(
            name="RuntimeOverMemoryBudget",
            expr="process_rss_bytes > 2147483648",
            for_=60.0,
            keep_firing_for=60.0,
            labels={"severity": "critical"},
            annotations={"summary": "The runtime's RSS is above its 2 GiB budget"},
            recovery=["collect_garbage"],
        ),
    ]


class AlertSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Alert rules, how often they are evaluated, and where alerts go."""

    enabled: bool = True
    evaluation_interval_ms: PosInt = 1000
    repeat_interval_s: PosFloat = 3600.0
    history_path: NonEmptyStr | None = "var/alerts.db"
    history_retention_s: PosFloat = 2_592_000.0
    alertmanager_url: NonEmptyStr | None = None
    webhook_url: NonEmptyStr | None = None
    sink_timeout_s: PosFloat = 5.0
    outbox_capacity: PosInt = 100
    rules: list[AlertRule] = msgspec.field(default_factory=_default_rules)


class PrometheusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Prometheus text-format endpoint (port 0: any free port)."""

    enabled: bool = False
    host: NonEmptyStr = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464


class MetricsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Metrics exposition."""

    prometheus: PrometheusConfig = msgspec.field(default_factory=PrometheusConfig)


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration. ``Config()`` is the shipped default."""

    runtime: RuntimeSection = msgspec.field(default_factory=RuntimeSection)
    logging: LoggingSection = msgspec.field(default_factory=LoggingSection)
    scheduler: SchedulerSection = msgspec.field(default_factory=SchedulerSection)
    sampler: SamplerSection = msgspec.field(default_factory=SamplerSection)
    profiler: ProfilerSection = msgspec.field(default_factory=ProfilerSection)
    cache: CacheSection = msgspec.field(default_factory=CacheSection)
    quotas: QuotaSection = msgspec.field(default_factory=QuotaSection)
    alerts: AlertSection = msgspec.field(default_factory=AlertSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)


# Contradictions between keys, checked once every value they involve is valid.
_CHECKS: Checks = {
    Config: rules.check_services,
    RestartSection: rules.check_restart,
    RetrySection: rules.check_retry,
    TaskClassConfig: rules.check_task_class,
    SchedulerSection: rules.check_scheduler,
    TierConfig: rules.check_tier,
    CacheSection: rules.check_cache,
    PluginQuota: rules.check_plugin_quota,
    QuotaSection: rules.check_quotas,
    AlertSection: rules.check_alerts,
}


@functools.cache
def _schema() -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(Config)


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Read, override from the environment and validate a config file.

    ``path=None`` gives the shipped defaults (still subject to environment overrides).
    ``env=None`` reads ``os.environ``. Blocking file I/O: call it off the event loop.

    Raises ``ConfigError`` listing every problem, including an unreadable file.
    """
    if path is None:
        return parse_config("", source="<defaults>", env=env)
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            raw = file.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = ConfigProblem("$", f"cannot read {source!r}: {describe_read_error(exc)}")
        raise ConfigError([problem], source=source) from exc
    return parse_config(text, source=source, env=env)


def parse_config(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate YAML text as a config; an empty document gives the defaults.

    Raises ``ConfigError`` listing every problem (YAML syntax errors with line and column).
    """
    document = read_yaml(text)
    problems: list[Problem] = list(document.problems)  # a syntax error, or duplicate keys
    data: Any = {} if document.data is None else document.data
    if not isinstance(data, dict):
        problems.append(((), f"expected a mapping of sections, got {describe_value(data)}"))
    if (document.problems and document.data is None) or not isinstance(data, dict):
        raise config_error(problems, document.origins, source)
    environ = os.environ if env is None else env
    problems += apply_env_overrides(data, environ, _schema(), document.origins, ENV_PREFIX)
    validator = Validator(_CHECKS)
    config = validator.validate(data, _schema())
    problems += validator.problems
    if problems or not isinstance(config, Config):
        raise config_error(problems, document.origins, source)
    return config
