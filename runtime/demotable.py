"""The demo's text: the progress line while it runs and the final table. Pure functions.

Every result carries a mark and a word (``✓ PASS``, ``✗ FAIL``, ``- n/a``) so that it reads
without color and in a log; on a terminal that can show them the marks are colored, and on one
that cannot encode them they fall back to ASCII.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple, TextIO

from .demoreport import CACHE_TARGET, CacheRow, ClassRow, PluginRow, Resources, Summary

__all__ = ["Marks", "progress_line", "render_summary"]

_GREEN, _RED, _DIM, _RESET = "\033[32m", "\033[31m", "\033[2m", "\033[0m"


class Marks(NamedTuple):
    """How a result is marked: passed, failed, or nothing to judge."""

    passed: str = "✓ PASS"
    failed: str = "✗ FAIL"
    none: str = "- n/a"
    color: bool = False

    @classmethod
    def for_stream(cls, stream: TextIO, env: Mapping[str, str] = os.environ) -> Marks:
        """Marks ``stream`` can show: colored on a terminal (unless NO_COLOR is set), ASCII
        when its encoding has no check mark."""
        try:
            "✓✗".encode(getattr(stream, "encoding", None) or "utf-8")  # StringIO: None
            marks = cls()
        except (UnicodeEncodeError, LookupError):
            marks = cls("+ PASS", "x FAIL", "- n/a")
        tty = hasattr(stream, "isatty") and stream.isatty()
        return marks._replace(color=tty and "NO_COLOR" not in env)

    def of(self, passed: bool | None, width: int = 0) -> str:
        """The mark for ``passed`` (None: nothing to judge), padded to ``width``."""
        if passed is None:
            text, code = self.none, _DIM
        else:
            text, code = (self.passed, _GREEN) if passed else (self.failed, _RED)
        padded = text.ljust(width)
        return f"{code}{padded}{_RESET}" if self.color else padded


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _target(row: ClassRow) -> str:
    return "progress" if row.target_ms is None else f"< {row.target_ms:g} ms"


def _class_lines(rows: list[ClassRow], marks: Marks) -> list[str]:
    head = (
        f"{'task class':<12} {'done':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  "
        f"{'target p99':<12} {'result':<8} {'misses':>7} {'refused':>8} {'failed':>7}"
    )
    lines = [head]
    for r in rows:
        measured = r.measured > 0
        p50, p95, p99 = (_ms(v) if measured else "-" for v in (r.p50_ms, r.p95_ms, r.p99_ms))
        lines.append(
            f"{r.name:<12} {r.completed:>5} {p50:>8} {p95:>8} {p99:>8}  {_target(r):<12} "
            f"{marks.of(r.passed, 8)} {r.deadline_misses:>7} {r.refused:>8} {r.failed:>7}"
        )
    return lines


def _plugin_lines(rows: list[PluginRow]) -> list[str]:
    if not rows:
        return ["plugins: quotas are not running"]
    width = max(len(f"{r.name} ({r.quota})") for r in rows)
    lines = [
        f"{'plugin (quota)':<{width}} {'calls':>6} {'done':>6} {'throttled':>10} "
        f"{'refused':>8} {'terminated':>11}"
    ]
    for r in rows:
        label = f"{r.name} ({r.quota})"
        lines.append(
            f"{label:<{width}} {r.calls:>6} {r.completed:>6} {r.throttled:>10} "
            f"{r.refused:>8} {r.terminated:>11}"
        )
    return lines


def _cache_lines(rows: list[CacheRow] | None, marks: Marks) -> list[str]:
    if rows is None:
        return ["cache: not running (cache.enabled is false, or no cache service)"]
    target = f"> {CACHE_TARGET:.0%}"
    lines = [
        f"{'cache namespace':<16} {'hits':>6} {'misses':>7} {'hit rate':>9} "
        f"{'repeated':>9} {'hit rate on repeats':>20}  {'target':<7} result"
    ]
    for r in rows:
        repeat = "-" if r.repeat_hit_rate is None else f"{r.repeat_hit_rate:.1%}"
        lines.append(
            f"{r.namespace:<16} {r.hits:>6} {r.misses:>7} {r.hit_rate:>9.1%} "
            f"{r.repeats:>9} {repeat:>20}  {target:<7} {marks.of(r.passed)}"
        )
    return lines


def _resource_lines(res: Resources | None, marks: Marks) -> list[str]:
    if res is None:
        return ["resources: no sample yet (the sampler is off, or the run was too short)"]
    cpu_ok = res.cpu_avg_percent < res.cpu_budget_percent
    memory_ok = res.rss_peak_mb < res.memory_budget_mb
    return [
        f"{'resources (process + workers)':<30} {'measured':>10}  {'budget':<11} result",
        f"{'CPU, average':<30} {res.cpu_avg_percent:>8.1f} %  "
        f"{f'< {res.cpu_budget_percent:g} %':<11} {marks.of(cpu_ok)}",
        f"{'CPU, peak sample':<30} {res.cpu_peak_percent:>8.1f} %",
        f"{'memory, peak RSS':<30} {res.rss_peak_mb:>7.0f} MB  "
        f"{f'< {res.memory_budget_mb:g} MB':<11} {marks.of(memory_ok)}",
        f"(CPU in % of the machine; {res.samples} samples; the whole machine averaged "
        f"{res.machine_cpu_avg_percent:.0f} %)",
    ]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "none"


def render_summary(summary: Summary, marks: Marks) -> str:
    """The final table, as lines of text (no trailing newline)."""
    s = summary
    lines = [
        f"jarvis-runtime demo: {s.duration_s:.1f} s at load {s.load:g}x (seed {s.seed}), "
        f"config {s.config}",
        "",
        *_class_lines(s.classes, marks),
        "",
        *_plugin_lines(s.plugins),
        "",
        *_cache_lines(s.caches, marks),
        "",
        *_resource_lines(s.resources, marks),
        "",
        f"alerts fired: {_counts(s.alerts)}; pending at the end: {', '.join(s.pending) or 'none'}",
        f"actor restarts: {sum(s.restarts.values())}"
        + (f" ({_counts(s.restarts)})" if s.restarts else ""),
    ]
    if s.unfinished:
        lines.append(f"requests unfinished when the demo stopped waiting: {s.unfinished}")
    if s.log_file:
        lines.append(f"logs: {s.log_file}  (try: jarvis-runtime logs {s.log_file} --stats)")
    else:
        lines.append("logs: none (logging.file is null)")
    return "\n".join(lines)


def progress_line(
    elapsed_s: float,
    duration_s: float,
    done: Mapping[str, int],
    p99_ms: Mapping[str, float],
    cpu_percent: float | None,
) -> str:
    """One short status line: elapsed time, the runtime's CPU, then per class the tasks done
    and the p99 so far in ms (``voice 18/240``; ``-`` before the first task ends)."""
    cpu = "-" if cpu_percent is None else f"{cpu_percent:.0f}%"
    classes = " ".join(
        f"{name} {count}/{_ms(p99_ms[name]) if name in p99_ms else '-'}"
        for name, count in done.items()
    )
    return f"[{elapsed_s:.1f}/{duration_s:g} s] CPU {cpu} | {classes}"
