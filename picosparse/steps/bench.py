"""Latency of several models side by side, first one the baseline (issue 4)."""

from picosparse.errors import NotYetAvailable


def bench(models, threads=(1, 4), repeats=50, warmup=5, runtime="paddle"):
    """Time each model (inference dir or .nb) at each thread count, in one process.

    Returns {"runtime": str, "precision": str, "threads": [int], "notes": [str],
             "models": [{"name", "path", "size_bytes",
                         "latency_ms": {"1": {"median", "p90", "mean"}, ...},
                         "speedup_fps_gain": {"1": float, ...},  # (base - this) / this
                         "speedup_ratio": {"1": float, ...}}]}   # base / this
    """
    raise NotYetAvailable("'picosparse bench' is not available yet (issue #4)")
