"""The Sampler: resources of the machine, the runtime and its plugins, on a drift-free schedule.

``Sampler`` is the service (``rt.sampler``); ``Sample`` is one reading. The parts are pure
where they can be: ``schedule`` (the drift-free slots), ``cgroup`` (the container's budget),
``sample`` (gauges and averaging); ``collector`` and ``processes`` read psutil; ``history``
keeps samples in SQLite; ``ticker`` is the actor.
"""

from .sample import PluginStats as PluginStats
from .sample import Sample as Sample
from .service import Sampler as Sampler
from .stats import SamplerStatistics as SamplerStatistics
from .subscription import SampleSubscription as SampleSubscription

__all__ = ["PluginStats", "Sample", "SampleSubscription", "Sampler", "SamplerStatistics"]
