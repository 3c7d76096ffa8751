"""CacheTier: tiered caching (memory, compressed memory, SQLite, shared) with eviction policies.

``policy`` holds the pure eviction logic (lru, lfu, fifo, W-TinyLFU with an adaptive window) and
``sketch`` the count-min frequency sketch that W-TinyLFU admits by.
"""
