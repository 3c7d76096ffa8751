"""Contradictions between config keys that no single type or range can express.

Each check takes one built Struct (every value in it already valid) and yields
``(path relative to that Struct, in YAML key names, message)``. ``runtime.config`` maps each
Struct type to its check.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._config_check import Segments

if TYPE_CHECKING:
    from .config import (
        AlertRule,
        AlertSection,
        CacheSection,
        Config,
        PluginQuota,
        QuotaSection,
        RestartSection,
        RetrySection,
        SchedulerSection,
        TaskClassConfig,
        TierConfig,
    )

__all__ = [
    "check_alerts",
    "check_cache",
    "check_plugin_quota",
    "check_quotas",
    "check_restart",
    "check_retry",
    "check_scheduler",
    "check_task_class",
    "check_tier",
]

Found = Iterator[tuple[Segments, str]]


def check_services(config: Config) -> Found:
    """Services that act on another need it enabled: quotas hold the scheduler's hooks."""
    if config.quotas.enabled and not config.scheduler.enabled:
        yield (
            ("quotas", "enabled"),
            "quotas act on scheduled work: enable the scheduler or set quotas.enabled: false",
        )


def check_restart(restart: RestartSection) -> Found:
    """The restart backoff must not start above its own ceiling."""
    initial_ms, max_ms = restart.backoff_initial_ms, restart.backoff_max_ms
    if initial_ms > max_ms:
        yield ("backoff_initial_ms",), f"{initial_ms} is more than backoff_max_ms ({max_ms})"


def check_retry(retry: RetrySection) -> Found:
    """The retry backoff must not start above its own ceiling."""
    if retry.initial_ms > retry.max_ms:
        yield ("initial_ms",), f"{retry.initial_ms} is more than max_ms ({retry.max_ms})"


def check_task_class(task_class: TaskClassConfig) -> Found:
    """Reserved slots fit within the class's own limit; cancelling at a deadline needs one."""
    reserved, limit = task_class.reserved, task_class.max_concurrency
    if reserved > limit:
        yield ("reserved",), f"{reserved} is more than max_concurrency ({limit})"
    if task_class.cancel_at_deadline and task_class.deadline_ms is None:
        yield ("cancel_at_deadline",), "true needs a deadline_ms; set one or set this to false"


def check_scheduler(scheduler: SchedulerSection) -> Found:
    """Each worker pool can hold the slots reserved in it; a process class has processes."""
    pools = {
        "loop": scheduler.loop_workers,
        "thread": scheduler.thread_workers,
        "process": scheduler.process_workers,
    }
    for executor, size in pools.items():
        users = {n: c for n, c in scheduler.classes.items() if c.executor == executor}
        if users and size == 0:
            names = ", ".join(users)
            yield (f"{executor}_workers",), f"0 leaves no worker for class(es) {names}; set >= 1"
            continue
        reserved = {name: c.reserved for name, c in users.items() if c.reserved}
        total = sum(reserved.values())
        if total > size:
            detail = ", ".join(f"{name} {count}" for name, count in reserved.items())
            message = f"reserved slots of '{executor}' classes sum to {total} ({detail}), "
            yield ("classes",), message + f"more than {executor}_workers ({size})"


def check_tier(tier: TierConfig) -> Found:
    """``path`` belongs to sqlite tiers and ``url`` to redis ones; memory tiers are bounded."""
    backend = tier.backend
    if backend == "sqlite" and tier.path is None:
        yield ("path",), "required for backend 'sqlite'"
    if backend != "sqlite" and tier.path is not None:
        yield ("path",), f"only used by backend 'sqlite', not {backend!r}; remove it"
    if backend == "redis" and tier.url is None:
        yield ("url",), "required for backend 'redis' (e.g. redis://localhost:6379/0)"
    if backend != "redis" and tier.url is not None:
        yield ("url",), f"only used by backend 'redis', not {backend!r}; remove it"
    redis_schemes = ("redis://", "rediss://", "unix://")
    if backend == "redis" and tier.url is not None and not _has_scheme(tier.url, redis_schemes):
        yield ("url",), f"{tier.url!r} is not a redis://, rediss:// or unix:// URL"
    in_memory = backend in ("memory", "compressed")
    if in_memory and tier.max_entries is None and tier.max_bytes is None:
        yield ("max_entries",), "a memory tier needs max_entries or max_bytes, or it never evicts"
    if tier.write == "behind" and backend != "sqlite":
        yield ("write",), f"'behind' is for backend 'sqlite' only, not {backend!r}; use 'through'"


def check_cache(cache: CacheSection) -> Found:
    """Tier names are unique; an enabled cache has a tier to store in; a write-behind flush
    fits in the writes allowed to wait."""
    if cache.enabled and not cache.tiers:
        yield ("tiers",), "an enabled cache needs at least one tier"
    behind = cache.write_behind
    if behind.max_pending < behind.batch:
        message = f"{behind.max_pending} is less than batch ({behind.batch}); raise it"
        yield ("write_behind", "max_pending"), message
    seen: set[str] = set()
    for index, tier in enumerate(cache.tiers):
        if tier.name in seen:
            yield ("tiers", index, "name"), f"duplicate tier name {tier.name!r}"
        seen.add(tier.name)


def check_plugin_quota(quota: PluginQuota) -> Found:
    """A burst is the size of a rate's token bucket, so it needs a rate; strict spacing needs a
    rate and allows no burst."""
    if quota.burst is not None and quota.rate is None:
        yield ("burst",), "needs a rate (burst is the size of the rate's token bucket)"
    if quota.strict_spacing and quota.rate is None:
        yield ("strict_spacing",), "true needs a rate (calls are spaced 1/rate apart)"
    if quota.strict_spacing and quota.burst is not None and quota.burst > 1:
        message = f"{quota.burst} contradicts strict_spacing (calls go one at a time); set 1"
        yield ("burst",), message


def check_quotas(quotas: QuotaSection) -> Found:
    """No single plugin may be granted more than the runtime's whole budget; a CPU share is
    averaged over at least two measurements."""
    if quotas.cpu_window_ms < 2 * quotas.interval_ms:
        message = f"{quotas.cpu_window_ms} is less than two measurements (2 x interval_ms"
        yield ("cpu_window_ms",), message + f" = {2 * quotas.interval_ms})"
    budget = quotas.budget
    if budget.cpu_window_s * 1000 < 2 * budget.interval_ms:
        message = f"{budget.cpu_window_s:g} is less than two measurements (2 x interval_ms"
        yield ("budget", "cpu_window_s"), message + f" = {2 * budget.interval_ms / 1000:g}s)"
    for name, quota in quotas.plugins.items():
        memory_mb, cpu_percent = quota.memory_mb, quota.cpu_percent
        if memory_mb is not None and memory_mb > budget.memory_mb:
            message = f"{memory_mb} is more than the runtime budget ({budget.memory_mb})"
            yield ("plugins", name, "memory_mb"), message
        if cpu_percent is not None and cpu_percent > budget.cpu_percent:
            message = f"{cpu_percent:g} is more than the runtime budget ({budget.cpu_percent:g})"
            yield ("plugins", name, "cpu_percent"), message


def check_alerts(alerts: AlertSection) -> Found:
    """Rule names are unique; expressions and templates parse; sink URLs are HTTP."""
    seen: set[str] = set()
    for index, rule in enumerate(alerts.rules):
        if rule.name in seen:
            yield ("rules", index, "name"), f"duplicate rule name {rule.name!r}"
        seen.add(rule.name)
        yield from _check_rule_syntax(rule, index)
    sinks = {"alertmanager_url": alerts.alertmanager_url, "webhook_url": alerts.webhook_url}
    for key, url in sinks.items():
        if url is not None and not _has_scheme(url, ("http://", "https://")):
            yield (key,), f"{url!r} is not an http:// or https:// URL"


def _check_rule_syntax(rule: AlertRule, index: int) -> Found:
    """The rule's expression and templates, parsed as the Alerter will parse them."""
    # The rule language belongs to the configuration (the kernel), so the check here is the
    # very parser the Alerter runs; imported on use to keep check-config's start light.
    from .alertexpr import parse_expr
    from .alerttemplate import Template

    try:
        parse_expr(rule.expr)
    except ValueError as exc:
        yield ("rules", index, "expr"), f"{rule.expr!r}: {exc}"
    for kind, texts in (("labels", rule.labels), ("annotations", rule.annotations)):
        for key, text in texts.items():
            try:
                Template(text)
            except ValueError as exc:
                yield ("rules", index, kind, key), str(exc)


def _has_scheme(url: str, schemes: tuple[str, ...]) -> bool:
    """The URL starts with one of ``schemes`` and has something after it."""
    scheme = next((s for s in schemes if url.lower().startswith(s)), None)
    return scheme is not None and len(url) > len(scheme)
