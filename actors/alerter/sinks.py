"""HTTP sinks: Alertmanager's API and a plain webhook, each behind its own bounded outbox.

The evaluator never waits for a sink: it hands each round's batch to the sink's actor with
``tell_nowait``, and the actor's mailbox is the outbox (bounded, ``drop_oldest``: when a sink
falls behind, its oldest batch goes to the dead letters). The actor posts with the stdlib's
``http.client`` in a worker thread, retries with exponential backoff and full jitter
(``runtime.retry``), and stops calling a sink that keeps failing (a circuit breaker).

Alertmanager gets ``POST /api/v2/alerts`` with a JSON list of ``{labels, annotations, startsAt,
endsAt, generatorURL}``, as Prometheus sends it: a firing alert's ``endsAt`` is a lease
(four repeat intervals ahead, renewed by every resend), a resolved one's is when it resolved.
The webhook gets ``{"version": "1", "status", "alerts": [...]}`` with the same alerts plus
``status`` and ``value``.
"""

from __future__ import annotations

import http.client
import math
import random
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import msgspec

from runtime.actor import Actor
from runtime.breaker import CircuitBreaker
from runtime.exceptions import CircuitOpen
from runtime.retry import RetryPolicy, retry

from .rules import Alert

__all__ = [
    "Batch",
    "Post",
    "SinkActor",
    "SinkError",
    "SinkStatistics",
    "alertmanager_payload",
    "http_post",
    "post_in_thread",
    "webhook_payload",
]

SinkKind = Literal["alertmanager", "webhook"]
_ENCODER = msgspec.json.Encoder()
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


Post = Callable[[str, bytes, float], Awaitable[int]]
"""How a sink posts: ``await post(url, body, timeout_s)`` returns the HTTP status or raises
``SinkError``."""


class SinkError(Exception):
    """A post failed: no connection, a timeout, or a non-2xx answer (``status``)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Whether trying again may help (a network error, a 5xx, a 429)."""
        return self.status is None or self.status in _RETRYABLE_STATUS


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """The alerts one evaluation round sends; ``lease_s`` is how long a firing one stays valid
    without a resend (its ``endsAt``)."""

    alerts: list[Alert]
    sent_at: float
    lease_s: float
    generator_url: str


class SinkStatistics(msgspec.Struct, kw_only=True):
    """What one sink did: batches and alerts delivered, attempts that failed, batches given up
    (after the last retry, or refused by the open breaker)."""

    name: str
    url: str
    delivered: int = 0
    alerts_delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    breaker: str = "closed"


def _iso(wall_s: float) -> str:
    return (
        datetime.fromtimestamp(wall_s, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _ends_at(alert: Alert, batch: Batch) -> float:
    return alert.resolved_at if alert.resolved_at is not None else batch.sent_at + batch.lease_s


def alertmanager_payload(batch: Batch) -> bytes:
    """The JSON body of ``POST /api/v2/alerts`` for ``batch``."""
    body = [
        {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": _iso(alert.fired_at if alert.fired_at is not None else alert.active_since),
            "endsAt": _iso(_ends_at(alert, batch)),
            "generatorURL": batch.generator_url + urllib.parse.quote(alert.name),
        }
        for alert in batch.alerts
    ]
    return _ENCODER.encode(body)


def webhook_payload(batch: Batch) -> bytes:
    """The JSON body posted to a plain webhook: status "firing" if any alert fires."""
    alerts = [
        {
            "status": "resolved" if alert.state == "resolved" else "firing",
            "name": alert.name,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "value": alert.value if math.isfinite(alert.value) else str(alert.value),
            "startsAt": _iso(alert.fired_at if alert.fired_at is not None else alert.active_since),
            "endsAt": _iso(_ends_at(alert, batch)),
            "generatorURL": batch.generator_url + urllib.parse.quote(alert.name),
        }
        for alert in batch.alerts
    ]
    firing = any(alert["status"] == "firing" for alert in alerts)
    return _ENCODER.encode(
        {"version": "1", "status": "firing" if firing else "resolved", "alerts": alerts}
    )


def http_post(url: str, body: bytes, timeout_s: float) -> int:
    """POST ``body`` as JSON to ``url`` and return the status (blocking: run it in a thread).

    Raises ``SinkError`` for a connection failure, a timeout or a status outside 2xx.
    """
    parts = urllib.parse.urlsplit(url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_type(parts.netloc, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json", "User-Agent": "jarvis-runtime"}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read(2048)
    except (OSError, http.client.HTTPException) as exc:
        raise SinkError(f"POST {url} failed: {exc!r}") from exc
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        text = answer.decode("utf-8", "replace").strip()
        raise SinkError(f"POST {url}: HTTP {response.status} {text[:200]}", status=response.status)
    return response.status


async def post_in_thread(url: str, body: bytes, timeout_s: float) -> int:
    """``http_post`` in a worker thread (abandoned, not waited for, if the caller is
    cancelled; the socket timeout ends it). Raises ``SinkError``."""
    return await anyio.to_thread.run_sync(http_post, url, body, timeout_s, abandon_on_cancel=True)


class SinkActor(Actor):
    """Delivers ``Batch`` messages to one HTTP sink, retrying with backoff behind a breaker.

    A batch that still fails after the last retry, or that the open breaker refuses, is handed
    to ``give_up`` (the service puts it in the dead letters) and the actor goes on: a sink's
    trouble never crashes it.
    """

    def __init__(
        self,
        kind: SinkKind,
        url: str,
        *,
        timeout_s: float,
        retry_policy: RetryPolicy,
        breaker: CircuitBreaker,
        statistics: SinkStatistics,
        give_up: Callable[[Batch, str], None],
        post: Post = post_in_thread,
        rng: random.Random | None = None,
    ) -> None:
        self.kind = kind
        self.url = url.rstrip("/") + "/api/v2/alerts" if kind == "alertmanager" else url
        self._timeout_s = timeout_s
        self._retry_policy = retry_policy
        self._breaker = breaker
        self._stats = statistics
        self._give_up = give_up
        self._encode = alertmanager_payload if kind == "alertmanager" else webhook_payload
        self._post = post
        self._rng = rng
        self._busy = False
        self._idle: anyio.Event | None = None  # made when someone waits

    async def receive(self, message: Any) -> None:
        if not isinstance(message, Batch):
            raise TypeError(f"a sink takes Batch messages, got {type(message).__name__}")
        self._busy = True
        try:
            await self.deliver(message)
        finally:
            self._busy = False
            if self._idle is not None and not len(self.ref.mailbox):
                self._idle.set()
                self._idle = None

    async def wait_idle(self) -> None:
        """Return once the outbox is empty and no batch is being delivered."""
        while self._busy or len(self.ref.mailbox):
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    async def deliver(self, batch: Batch) -> bool:
        """Post ``batch``; ``False`` once given up."""
        body = self._encode(batch)
        try:
            await retry(
                self._attempt,
                body,
                policy=self._retry_policy,
                clock=self.clock,
                rng=self._rng,
                retry_on=_Retryable,
                on_retry=self._retrying,
            )
        except (SinkError, CircuitOpen) as exc:
            self._stats.given_up += 1
            self._stats.breaker = self._breaker.state
            self.log.error("alert sink gave up", sink=self.kind, url=self.url, error=str(exc))
            self._give_up(batch, "circuit_open" if isinstance(exc, CircuitOpen) else "sink_failed")
            return False
        self._stats.delivered += 1
        self._stats.alerts_delivered += len(batch.alerts)
        self._stats.breaker = self._breaker.state
        return True

    async def _attempt(self, body: bytes) -> None:
        if not self._breaker.allow():
            raise CircuitOpen(self._breaker.name, self._breaker.retry_after_s())
        try:
            await self._post(self.url, body, self._timeout_s)
        except SinkError as exc:
            self._stats.failed_attempts += 1
            self._breaker.record_failure()
            raise _Retryable(str(exc), status=exc.status) if exc.retryable else exc from exc
        self._breaker.record_success()

    def _retrying(self, attempt: int, error: BaseException, delay_s: float) -> None:
        self.log.warning(
            "alert sink failed; retrying", sink=self.kind, attempt=attempt, error=str(error),
            delay_s=round(delay_s, 3),
        )  # fmt: skip


class _Retryable(SinkError):
    """A failure worth another attempt (the retry loop retries only these)."""
