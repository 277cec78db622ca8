"""The process's own parts: metrics, worker threads, GC policy, lag probe, admission and rate
limits."""
