"""The Runtime facade: configuration in, a supervised tree of actors out.

``async with Runtime(config) as rt`` configures logging, builds the kernel (clock, dead letters,
event bus, retry policy), starts a root supervisor with the services the configuration enables,
and on exit stops them in reverse order, draining their mailboxes.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio
import msgspec
import structlog

from .actor import ActorContext, ActorRef
from .breaker import CircuitBreaker
from .clock import Clock, RealClock
from .config import Config, load_config
from .deadletters import DeadLetters, DeadLetterStatistics
from .events import ConfigReloaded, EventBus, EventBusStatistics
from .exceptions import ConfigError, ConfigProblem
from .logging import LogSink, configure_logging, reset_logging
from .metrics import MetricsRegistry
from .retry import RetryPolicy
from .service import Service
from .supervisor import ChildSpec, Supervisor, SupervisorStatistics

if TYPE_CHECKING:
    from actors.alerter import Alerter
    from actors.cache import Cache
    from actors.profiler import Profiler
    from actors.quota import QuotaEnforcer
    from actors.sampler import Sampler
    from actors.scheduler import Scheduler, TaskHandle

    from .exporter import MetricsExporter

__all__ = ["Runtime", "RuntimeStatistics"]

ServiceFactory = Callable[[Config, ActorContext, Mapping[str, Service]], Service]
"""Builds a service from the configuration, the shared context and the services built before."""


def _profiler(config: Config, context: ActorContext, built: Mapping[str, Service]) -> Service:
    from actors.profiler import Profiler

    return Profiler(config, context)


def _sampler(config: Config, context: ActorContext, built: Mapping[str, Service]) -> Service:
    from actors.sampler import Sampler

    return Sampler(config, context)


def _cache(config: Config, context: ActorContext, built: Mapping[str, Service]) -> Service:
    from actors.cache import Cache

    return Cache(config, context)


def _scheduler(config: Config, context: ActorContext, built: Mapping[str, Service]) -> Service:
    from actors.scheduler import Scheduler

    return Scheduler(config.scheduler, context)


def _quotas(config: Config, context: ActorContext, built: Mapping[str, Service]) -> Service:
    from actors.quota import QuotaEnforcer
    from actors.scheduler import Scheduler

    scheduler = built.get("scheduler")
    if not isinstance(scheduler, Scheduler):
        raise ConfigError(
            [
                ConfigProblem(
                    "$.quotas.enabled",
                    "quotas act on scheduled work: enable the "
                    "scheduler (scheduler.enabled) or set quotas.enabled: false",
                )
            ]
        )
    return QuotaEnforcer(config, context, scheduler)


def _alerter(config: Config, context: ActorContext, built: Mapping[str, Service]) -> Service:
    from actors.alerter import Alerter

    return Alerter(config, context)


# The services the assembly knows, by config section, in start order (they stop in reverse).
# The actors' modules are imported only when their section is enabled.
SERVICES: dict[str, ServiceFactory] = {
    "profiler": _profiler,  # first: it watches the loop while the others start
    "sampler": _sampler,
    "cache": _cache,
    "scheduler": _scheduler,
    "quotas": _quotas,  # after the scheduler, whose hooks it holds
    "alerts": _alerter,  # last: its rules read what the others measure
}


def _register_recovery(services: Mapping[str, Any]) -> None:
    """Offer the services' recovery actions to whoever runs them (quotas, alert rules)."""
    actions: dict[str, Callable[[], Any]] = {}
    if "cache" in services:
        cache = services["cache"]
        actions["shrink_caches"] = lambda: cache.shrink(0.5)
    if "scheduler" in services:
        actions["shed_background"] = services["scheduler"].shed_background
    for runner in ("quotas", "alerts"):
        if runner in services:
            for name, action in actions.items():
                services[runner].register_recovery(name, _as_async(action))


def _as_async(action: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return action()

    return run


# Config paths the Runtime itself applies live on reload.
_LIVE_PATHS = ("$.logging.level", "$.logging.console", "$.runtime.dead_letters.log_interval_s")


class RuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What ``Runtime.statistics()`` returns."""

    name: str
    uptime_s: float
    supervisor: SupervisorStatistics
    dead_letters: DeadLetterStatistics
    events: EventBusStatistics
    services: dict[str, Any]


class Runtime:
    """The runtime supervisor an assistant embeds. Use it as an async context manager."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        configure_logs: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config if config is not None else load_config(config_path, env=env)
        self._config_path = Path(config_path) if config_path is not None else None
        self._env = env
        self._clock = clock or RealClock()
        self._configure_logs = configure_logs
        self._sink: LogSink | None = None
        self._started_at: float | None = None
        self._log = structlog.get_logger(actor="runtime")
        runtime = self._config.runtime
        self._dead_letters = DeadLetters(
            runtime.dead_letters.capacity,
            clock=self._clock,
            log_interval_s=runtime.dead_letters.log_interval_s,
        )
        self._events = EventBus(
            clock=self._clock, subscriber_capacity=runtime.events.subscriber_capacity
        )
        self._metrics = MetricsRegistry(clock=self._clock)
        self._context = ActorContext(
            clock=self._clock,
            dead_letters=self._dead_letters,
            events=self._events,
            metrics=self._metrics,
            retry=_retry_policy(self._config),
        )
        self._supervisor = _root_supervisor(self._config, self._context)
        self._services: dict[str, Service] = {}
        self._exporter: MetricsExporter | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: Any) -> Runtime:
        """``Runtime(load_config(path), config_path=path)``; raises ``ConfigError``."""
        return cls(load_config(path), config_path=path, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._configure_logs:
            self._sink = await self._open_logs(self._config)
        try:
            self._build_services()
        except BaseException:
            await self._close_logs()
            raise
        try:
            await self._supervisor.__aenter__()
        except BaseException:
            await self._close_logs()
            raise
        try:
            self._exporter = await self._start_exporter()
        except BaseException:
            await self._supervisor.__aexit__(None, None, None)
            await self._close_logs()
            raise
        self._started_at = self._clock.now()
        self._log.info(
            "runtime started", name=self._config.runtime.name, services=sorted(self._services)
        )
        return self

    def _build_services(self) -> None:
        for section, build in SERVICES.items():
            if getattr(self._config, section).enabled:
                service = build(self._config, self._context, self._services)
                service.attach(self._supervisor, self._context)
                self._services[section] = service
        _register_recovery(self._services)

    async def _start_exporter(self) -> MetricsExporter | None:
        """Serve /metrics when metrics.prometheus.enabled; raises ConfigError if it cannot bind."""
        if not self._config.metrics.prometheus.enabled:
            return None
        from .exporter import MetricsExporter  # lazy: prometheus_client takes ~75 ms to import

        exporter = MetricsExporter(self)
        await exporter.start()
        return exporter

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            if self._exporter is not None:
                exporter, self._exporter = self._exporter, None
                await exporter.aclose()
            return await self._supervisor.__aexit__(*exc_info)
        finally:
            self._events.close()
            self._dead_letters.flush_log()  # what the rate limit held back is logged now
            self._log.info("runtime stopped", dead_letters=self._dead_letters.total)
            await self._close_logs()

    async def _open_logs(self, config: Config) -> LogSink:
        """Configure logging in a thread: it opens the file and joins the previous writer."""
        logging = config.logging

        def configure() -> LogSink:
            return configure_logging(
                level=logging.level,
                file=logging.file,
                console=logging.console,
                max_bytes=logging.max_bytes,
                backups=logging.backups,
                clock=self._clock,
            )

        try:
            return await anyio.to_thread.run_sync(configure)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            problem = ConfigProblem("$.logging.file", f"cannot open {logging.file!r}: {reason}")
            raise ConfigError([problem]) from exc

    async def _close_logs(self) -> None:
        if self._sink is not None:
            self._sink = None
            await anyio.to_thread.run_sync(reset_logging)

    # -- the kernel's faces -------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def events(self) -> EventBus:
        """The event bus: ``with rt.events.subscribe(ActorCrashed) as sub: async for e in sub``."""
        return self._events

    @property
    def dead_letters(self) -> DeadLetters:
        return self._dead_letters

    @property
    def exporter(self) -> MetricsExporter | None:
        """The Prometheus endpoint while it runs (``.url``, ``.port``), else ``None``."""
        return self._exporter

    @property
    def metrics(self) -> MetricsRegistry:
        """Custom gauges: ``rt.metrics.set("stt_queue_depth", 4, device="kitchen")``."""
        return self._metrics

    def circuit_breaker(self, name: str, **settings: Any) -> CircuitBreaker:
        """A circuit breaker whose state changes are logged and published on ``events``.

        ``settings``: failure_threshold, reset_timeout_s, success_threshold.
        """
        return self._context.circuit_breaker(name, **settings)

    # -- the scheduler --------------------------------------------------------------------------

    @property
    def scheduler(self) -> Scheduler:
        """The Scheduler; raises ``RuntimeError`` when ``scheduler.enabled`` is false."""
        return cast("Scheduler", self._service("scheduler"))

    async def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        task_class: str = "command",
        deadline: float | None = None,
        run_in: Literal["loop", "thread", "process"] | None = None,
        plugin: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as a ``task_class`` task and return its value.

        ``deadline`` is seconds from now (default: the class's). ``run_in`` None runs coroutine
        functions on the loop and others in the class's executor. Raises ``DeadlineExceeded``,
        ``Overloaded``, ``ValueError``/``TypeError`` for bad input, or what ``fn`` raised.
        """
        return await self.scheduler.submit(
            fn,
            *args,
            task_class=task_class,
            deadline=deadline,
            run_in=run_in,
            plugin=plugin,
            **kwargs,
        )

    def spawn(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        task_class: str = "background",
        deadline: float | None = None,
        run_in: Literal["loop", "thread", "process"] | None = None,
        plugin: str | None = None,
        **kwargs: Any,
    ) -> TaskHandle[Any]:
        """Start ``fn`` as a task and return its handle: ``await h.result()``, ``h.cancel()``."""
        return self.scheduler.spawn(
            fn,
            *args,
            task_class=task_class,
            deadline=deadline,
            run_in=run_in,
            plugin=plugin,
            **kwargs,
        )

    @property
    def sampler(self) -> Sampler:
        """The Sampler: ``rt.sampler.latest()``, ``async for s in rt.sampler.subscribe()``."""
        return cast("Sampler", self._service("sampler"))

    @property
    def cache(self) -> Cache:
        """The tiered cache: ``await rt.cache.get_or_compute(key, compute, namespace=...)``."""
        return cast("Cache", self._service("cache"))

    @property
    def quotas(self) -> QuotaEnforcer:
        """Plugin quotas: ``rt.quotas.register("weather", rate=2, burst=4, timeout_s=5)``."""
        return cast("QuotaEnforcer", self._service("quotas"))

    @property
    def alerts(self) -> Alerter:
        """The Alerter: ``rt.alerts.active()``, ``async for e in rt.alerts.subscribe()``."""
        return cast("Alerter", self._service("alerts"))

    @property
    def profiler(self) -> Profiler:
        """The Profiler: ``rt.profiler.report()``, ``await rt.profiler.profile(5)``."""
        return cast("Profiler", self._service("profiler"))

    def _service(self, section: str) -> Service:
        service = self._services.get(section)
        if service is None:
            state = "has not started" if self._started_at is None else "is disabled in config"
            raise RuntimeError(f"the {section} {state} ({section}.enabled); no rt.{section}")
        return service

    def add_actor(self, spec: ChildSpec) -> ActorRef:
        """Run one of the assistant's own actors under the runtime's root supervisor."""
        return self._supervisor.add(spec)

    def statistics(self) -> RuntimeStatistics:
        """Actors and restarts, mailbox statistics, dead letters, events, and each service's."""
        started = self._started_at if self._started_at is not None else self._clock.now()
        return RuntimeStatistics(
            name=self._config.runtime.name,
            uptime_s=self._clock.now() - started,
            supervisor=self._supervisor.statistics(),
            dead_letters=self._dead_letters.statistics(),
            events=self._events.statistics(),
            services={name: s.statistics() for name, s in self._services.items()},
        )

    # -- reload -------------------------------------------------------------------------------

    async def reload(self, path: str | os.PathLike[str] | None = None) -> list[str]:
        """Re-read the configuration file and apply what can change live.

        Returns the $.paths that changed. Raises ``ConfigError`` (and changes nothing) when the
        file is invalid, ``ValueError`` when the Runtime was built without a file.
        """
        source = Path(path) if path is not None else self._config_path
        if source is None:
            raise ValueError("reload() needs a path: this Runtime was not started from a file")
        try:
            new = await anyio.to_thread.run_sync(lambda: load_config(source, env=self._env))
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            self._log.error(
                "config reload refused; nothing changed", source=str(source), problems=problems
            )
            self._events.emit(
                ConfigReloaded,
                actor="runtime",
                changed=[],
                ok=False,
                source=str(source),
                problems=problems,
            )
            raise
        changed = changed_paths(self._config, new)
        restart_required = await self._apply(new, changed)
        self._config = new
        self._config_path = source
        self._log.info(
            "config reloaded",
            source=str(source),
            changed=changed,
            restart_required=restart_required,
        )
        self._events.emit(
            ConfigReloaded,
            actor="runtime",
            changed=changed,
            source=str(source),
            restart_required=restart_required,
        )
        return changed

    async def _apply(self, new: Config, changed: list[str]) -> list[str]:
        if self._sink is not None and any(p.startswith("$.logging") for p in changed):
            self._sink = await self._open_logs(new)  # closes the previous sink
        self._dead_letters.log_interval_s = new.runtime.dead_letters.log_interval_s
        pending: set[str] = set()
        for service in self._services.values():
            pending.update(service.apply_config(new))
        handled_by_services = {f"$.{name}" for name in self._services}
        for path in changed:
            live = path in _LIVE_PATHS or any(path.startswith(s) for s in handled_by_services)
            if not live:
                pending.add(path)
        return sorted(pending)


def changed_paths(old: Config, new: Config) -> list[str]:
    """The $.paths whose values differ between two configurations (leaves, or whole lists)."""
    out: list[str] = []
    _diff(msgspec.to_builtins(old), msgspec.to_builtins(new), "$", out)
    return out


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _diff(old.get(key), new.get(key), f"{path}.{key}", out)
    elif old != new:
        out.append(path)


def _retry_policy(config: Config) -> RetryPolicy:
    retry = config.runtime.retry
    return RetryPolicy(
        initial_s=retry.initial_ms / 1000,
        max_s=retry.max_ms / 1000,
        factor=retry.factor,
        retries=retry.retries,
    )


def _root_supervisor(config: Config, context: ActorContext) -> Supervisor:
    runtime = config.runtime
    return Supervisor(
        runtime.name,
        strategy=runtime.restart.strategy,
        intensity=runtime.restart.intensity,
        period_s=runtime.restart.period_s,
        backoff_initial_s=runtime.restart.backoff_initial_ms / 1000,
        backoff_max_s=runtime.restart.backoff_max_ms / 1000,
        context=context,
        shutdown_timeout_s=runtime.shutdown_timeout_ms / 1000,
    )
