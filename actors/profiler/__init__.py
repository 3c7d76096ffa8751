"""Profiler: where the time goes, what blocks the event loop, and what to do about it.

Per task class latency histograms (queue wait, run time, end to end) fed by the scheduler's
events; an event-loop lag monitor (a heartbeat plus a watchdog thread that captures the stack of
whatever blocks the loop); on-demand cProfile windows; a bottleneck report with recommendations.

``histogram`` holds the latency histogram, ``stacks`` reads another thread's stack, ``lag`` the
heartbeat and the watchdog, ``blocking`` groups blocking calls by place, ``tasks`` the per-class
latencies, ``profile`` the profile windows, ``report`` the bottleneck report and ``service``
the ``Profiler``.
"""

from .blocking import BlockingSite as BlockingSite
from .histogram import BUCKET_BOUNDS_S as BUCKET_BOUNDS_S
from .histogram import LatencyHistogram as LatencyHistogram
from .histogram import LatencySummary as LatencySummary
from .lag import BlockingCall as BlockingCall
from .lag import LoopMonitor as LoopMonitor
from .profile import FunctionStat as FunctionStat
from .profile import ProfileReport as ProfileReport
from .report import BottleneckReport as BottleneckReport
from .report import ClassVerdict as ClassVerdict
from .service import Profiler as Profiler
from .service import ProfilerStatistics as ProfilerStatistics
from .stacks import StackFrame as StackFrame
from .tasks import ClassLatency as ClassLatency

__all__ = [
    "BUCKET_BOUNDS_S",
    "BlockingCall",
    "BlockingSite",
    "BottleneckReport",
    "ClassLatency",
    "ClassVerdict",
    "FunctionStat",
    "LatencyHistogram",
    "LatencySummary",
    "LoopMonitor",
    "ProfileReport",
    "Profiler",
    "ProfilerStatistics",
    "StackFrame",
]
