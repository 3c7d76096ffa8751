"""``jarvis-runtime top``: a live terminal view of a running runtime, read from its /metrics.

Each frame shows the task classes (end-to-end latency p50/p99 against the class's deadline,
completed, deadline misses, refused, queue), cache hit rates, resources against the budget,
alerts and restarts. Latency and hit rates cover the time since the previous frame (the first
frame: since the runtime started). Only the endpoint is read: ``top`` works on any runtime
that serves ``metrics.prometheus``, and imports nothing of the runtime itself.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import TextIO

__all__ = [
    "DEFAULT_URL",
    "Scrape",
    "add_top_command",
    "check_url",
    "fetch",
    "quantile",
    "render_frame",
    "run_top",
]

DEFAULT_URL = "http://127.0.0.1:9464/metrics"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_CLEAR = "\033[H\033[2J"  # cursor home, clear screen

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One scrape's samples by name: ``values(name)`` gives ``{labels: value}``."""

    def __init__(self, text: str) -> None:
        """Parse the Prometheus text format; raises ``ValueError`` for anything else."""
        # Imported here: building the command line for other commands must stay fast.
        from prometheus_client.parser import text_string_to_metric_families

        self._samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                self._samples.setdefault(sample.name, {})[labels] = sample.value

    def values(self, name: str, **match: str) -> dict[Labels, float]:
        """The series of ``name`` whose labels include ``match``."""
        series = self._samples.get(name, {})
        wanted = set(match.items())
        return {labels: v for labels, v in series.items() if wanted <= set(labels)}

    def value(self, name: str, **match: str) -> float | None:
        """The sum of the matching series of ``name``; None when there is none."""
        found = self.values(name, **match)
        return sum(found.values()) if found else None

    def by(self, label: str, name: str, **match: str) -> dict[str, float]:
        """The matching series of ``name`` summed by the value of ``label``."""
        out: dict[str, float] = {}
        for labels, value in self.values(name, **match).items():
            key = dict(labels).get(label)
            if key is not None:
                out[key] = out.get(key, 0.0) + value
        return out


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a metrics endpoint's address, or None when it can."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"--url {url!r} is malformed ({exc}); e.g. {DEFAULT_URL}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--url {url!r} is not an http(s) URL with a host; e.g. {DEFAULT_URL}"
    return None


def fetch(url: str, *, timeout_s: float = 5.0) -> Scrape:
    """Scrape ``url``. Raises ``OSError`` (``URLError``, ``HTTPError``, timeouts) when it cannot
    be read, ``ValueError`` when the answer is not the Prometheus text format."""
    import urllib.request  # here: the other commands need not pay for the HTTP client

    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        text = response.read().decode("utf-8", errors="replace")
    return Scrape(text)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile (0..1) of cumulative ``{le: count}`` buckets, interpolated inside its
    bucket as Prometheus's ``histogram_quantile`` does; None when there are no observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # in the overflow bucket: the highest finite bound
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _delta(now: dict[str, float], before: dict[str, float] | None) -> dict[str, float]:
    """``now`` minus ``before`` per key; ``now`` as it is after a counter reset or without one."""
    if before is None or any(now.get(k, 0.0) < v for k, v in before.items()):
        return now
    return {k: v - before.get(k, 0.0) for k, v in now.items()}


def _latency_buckets(scrape: Scrape, task_class: str) -> dict[str, float]:
    series = scrape.values(
        "jarvis_task_latency_seconds_bucket", stage="end_to_end", task_class=task_class
    )
    return {dict(labels)["le"]: count for labels, count in series.items()}


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.2f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _class_rows(now: Scrape, before: Scrape | None) -> list[str]:
    classes = sorted(
        set(now.by("task_class", "jarvis_tasks_admitted_total"))
        | set(now.by("task_class", "jarvis_task_deadline_seconds"))
    )
    header = f"{'CLASS':<14}{'TARGET':>10}{'P50':>11}{'P99':>11}  {'':<5}"
    rows = [header + f"{'DONE':>8}{'MISSED':>8}{'REFUSED':>9}{'QUEUE':>7}{'RUN':>5}"]
    for task_class in classes:
        buckets = _delta(
            _latency_buckets(now, task_class),
            _latency_buckets(before, task_class) if before else None,
        )
        as_floats = {float(le): count for le, count in buckets.items()}
        p50, p99 = quantile(0.5, as_floats), quantile(0.99, as_floats)
        target = now.value("jarvis_task_deadline_seconds", task_class=task_class)
        verdict = "-" if p99 is None or target is None else ("ok" if p99 <= target else "LATE")
        counts = [
            now.value(name, task_class=task_class)
            for name in (
                "jarvis_tasks_completed_total",
                "jarvis_task_deadline_misses_total",
                "jarvis_tasks_refused_total",
                "jarvis_task_queue_depth",
                "jarvis_task_running",
            )
        ]
        rows.append(
            f"{task_class:<14}{_ms(target):>10}{_ms(p50):>11}{_ms(p99):>11}  {verdict:<5}"
            f"{_count(counts[0]):>8}{_count(counts[1]):>8}{_count(counts[2]):>9}"
            f"{_count(counts[3]):>7}{_count(counts[4]):>5}"
        )
    return rows if classes else ["(no scheduler: no task classes)"]


def _hit_rates(now: Scrape, before: Scrape | None, prefix: str, label: str) -> list[str]:
    hits = now.by(label, f"{prefix}_hits_total")
    misses = now.by(label, f"{prefix}_misses_total")
    if before is not None:
        hits = _delta(hits, before.by(label, f"{prefix}_hits_total"))
        misses = _delta(misses, before.by(label, f"{prefix}_misses_total"))
    out = []
    for key in sorted(set(hits) | set(misses)):
        total = hits.get(key, 0.0) + misses.get(key, 0.0)
        rate = f"{hits.get(key, 0.0) / total:.1%}" if total else "-"
        out.append(f"{key} {rate} ({total:.0f} reads)")
    return out


def _cache_line(now: Scrape, before: Scrape | None) -> str:
    namespaces = _hit_rates(now, before, "jarvis_cache_namespace", "namespace")
    tiers = _hit_rates(now, before, "jarvis_cache_tier", "tier")
    if not namespaces and not tiers:
        return "cache      (no cache statistics)"
    return "cache      " + "   ".join(namespaces + [f"tier {t}" for t in tiers])


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _runtime_cpu(scrape: Scrape) -> str:
    """The runtime's process and workers as % of the machine (psutil gives % of one core)."""
    own = [scrape.value(n) for n in ("process_cpu_percent", "children_cpu_percent")]
    cores = scrape.value("cpu_count_value")
    if own[0] is None or not cores:
        return "-"
    return _percent(sum(v for v in own if v is not None) / cores)


def _resources_line(scrape: Scrape) -> str:
    rss = [scrape.value(n) for n in ("process_rss_bytes", "children_rss_bytes")]
    budget = scrape.value("jarvis_budget_memory_bytes")
    lag = scrape.value("profiler_loop_lag_seconds")
    memory = "-" if rss[0] is None else f"{sum(v for v in rss if v is not None) / 2**20:.0f} MB"
    if rss[0] is not None and budget:
        memory += f" of {budget / 2**20:.0f} MB"
    return (
        f"resources  cpu {_percent(scrape.values('cpu_percent').get(()))}"
        f" (runtime {_runtime_cpu(scrape)} of {_percent(scrape.value('jarvis_budget_cpu_percent'))}"
        f" budget)   memory {_percent(scrape.value('memory_percent'))}"
        f"   runtime rss {memory}   loop lag {_ms(lag)}"
    )


def _alerts_line(scrape: Scrape) -> str:
    alerts = []
    for labels in scrape.values("jarvis_alerts"):
        found = dict(labels)
        extra = ",".join(f"{k}={v}" for k, v in labels if k not in ("alertname", "alertstate"))
        state = found.get("alertstate", "").upper()
        alerts.append(f"{state} {found.get('alertname', '?')}" + (f" {{{extra}}}" if extra else ""))
    return "alerts     " + ("   ".join(sorted(alerts)) if alerts else "none")


def _restarts_line(scrape: Scrape) -> str:
    restarted = {
        actor: count
        for actor, count in scrape.by("actor", "jarvis_actor_restarts_total").items()
        if count > 0
    }
    listed = ", ".join(f"{a} {c:.0f}" for a, c in sorted(restarted.items()))
    total = sum(restarted.values())
    dead = _count(scrape.value("jarvis_dead_letters_total"))
    return (
        f"restarts   {total:.0f}" + (f" ({listed})" if listed else "") + f"   dead letters {dead}"
    )


def render_frame(now: Scrape, before: Scrape | None, *, url: str, interval_s: float) -> str:
    """One frame of the view as text (lines without colors)."""
    names = now.by("runtime", "jarvis_runtime_info")
    uptime = now.value("jarvis_runtime_uptime_seconds") or 0.0
    window = "since start" if before is None else f"last {interval_s:g} s"
    head = (
        f"jarvis-runtime top - {', '.join(sorted(names)) or '?'} - up {_duration(uptime)} - "
        f"{url} - {time.strftime('%H:%M:%S')}"
    )
    title = f"latency end to end {window}; counts since start:"
    lines = [head, "", title, *_class_rows(now, before), ""]
    lines += [_cache_line(now, before), _resources_line(now), _alerts_line(now)]
    lines.append(_restarts_line(now))
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _scrape_or_explain(url: str, err: TextIO) -> Scrape | None:
    """The scrape, or None after saying on ``err`` why there is none."""
    import urllib.error

    try:
        scrape = fetch(url)
    except urllib.error.HTTPError as exc:
        print(f"error: {url} answered HTTP {exc.code} {exc.reason}", file=err)
        return None
    except OSError as exc:  # URLError, refused connections, timeouts
        reason = getattr(exc, "reason", exc)
        print(
            f"error: cannot reach {url} ({reason}); is the runtime running with "
            "metrics.prometheus.enabled: true?",
            file=err,
        )
        return None
    except ValueError as exc:
        print(f"error: {url} is not a Prometheus metrics endpoint ({exc})", file=err)
        return None
    if not scrape.values("jarvis_runtime_info"):
        print(f"error: {url} serves metrics, but none of a jarvis runtime", file=err)
        return None
    return scrape


def run_top(
    url: str = DEFAULT_URL,
    *,
    interval_s: float = 2.0,
    once: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print frames every ``interval_s`` until Ctrl-C (one frame with ``once``).

    Returns 0 on Ctrl-C or after ``once``, 1 when the endpoint cannot be read (or stops being
    readable), 2 for a malformed URL or interval.
    """
    out, err = out or sys.stdout, err or sys.stderr
    problem = check_url(url)
    if problem is None and not interval_s > 0:
        problem = f"--interval must be a number of seconds > 0, got {interval_s!r}"
    if problem is not None:
        print(f"error: {problem}", file=err)
        return EXIT_USAGE
    before: Scrape | None = None
    try:
        while True:
            now = _scrape_or_explain(url, err)
            if now is None:
                return EXIT_FAILURE
            frame = render_frame(now, before, url=url, interval_s=interval_s)
            # A terminal gets the frame redrawn in place; a pipe gets frames one after another.
            out.write(_CLEAR + frame if not once and out.isatty() else frame)
            out.flush()
            if once:
                return EXIT_OK
            before = now
            sleep(interval_s)
            if not out.isatty():
                out.write("\n")
    except KeyboardInterrupt:
        return EXIT_OK


def add_top_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``top`` to the command line's subcommands; it runs ``run_top``."""
    parser = commands.add_parser(
        "top",
        help="live view of a running runtime, from its metrics endpoint",
        description="A live view of a running runtime (metrics.prometheus.enabled: true): "
        "latency per class against its target, queues, cache, resources, alerts, restarts.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"metrics endpoint ({DEFAULT_URL})")
    parser.add_argument(
        "--interval", type=_seconds, default=2.0, metavar="S", help="seconds between frames (2)"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.set_defaults(command=_command)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _command(args: argparse.Namespace) -> int:
    return run_top(args.url, interval_s=args.interval, once=args.once)
