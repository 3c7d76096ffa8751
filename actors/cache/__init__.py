"""CacheTier: tiered caching (memory, compressed memory, SQLite, shared) with eviction policies.

``Cache`` is the service (``rt.cache``). The parts: ``policy`` holds the pure eviction logic
(lru, lfu, fifo, W-TinyLFU with an adaptive window) and ``sketch`` the count-min frequency
sketch that W-TinyLFU admits by; ``occupancy`` bounds a tier in entries and bytes under a
policy; ``memory``, ``sqlite`` (over ``sqlite_file``) and ``redis_tier`` are the tiers;
``reads`` reads through them with promotion, ``writes`` writes to and invalidates them;
``coalesce`` and ``flight`` make concurrent reads and computations of a key happen once and
``compute`` runs ``get_or_compute``'s computations, in the background when stale; ``codec`` is
msgpack (never pickle); ``actor`` owns the I/O and maintenance.
"""

from .service import Cache as Cache
from .service import Compute as Compute
from .stats import CacheStatistics as CacheStatistics
from .stats import NamespaceStatistics as NamespaceStatistics
from .stats import TierStatistics as TierStatistics

__all__ = ["Cache", "CacheStatistics", "Compute", "NamespaceStatistics", "TierStatistics"]
