"""The runtime's actors: Sampler, Profiler, CacheTier, Scheduler, QuotaEnforcer, Alerter."""
