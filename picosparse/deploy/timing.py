"""How models are timed side by side: one definition for `picosparse bench` (its timing child,
deploy/worker.py) and benchmarks/, so the README's numbers are the command's numbers.

- Rounds, round robin: each round runs every model in turn (who goes first rotates), so drift
  in the machine's speed hits all alike. A model's value for a round is the median of its
  `iters` timed runs there (the median drops the odd run another tenant's burst landed on).
- Speed-up of a model over the baseline: the median over rounds of the per-round ratio
  baseline / model. The two ran back to back, at one machine speed, so the ratio holds even
  when that speed drifts between rounds (on a shared 2-vCPU VM it drifted by up to 1.7x within
  minutes); the 25th-75th percentiles of those ratios are its spread.
"""

import math
import statistics
import time
from dataclasses import dataclass


@dataclass
class Rounds:
    wall: dict  # {key: [ms per round]}
    cpu: dict  # {key: [process CPU ms per run, per round]}: what other tenants cannot inflate


def time_rounds(runs, rounds, iters=1, warmup=0, rewarm=False):
    """runs: {key: callable running one inference}. `warmup` untimed runs of each first;
    rewarm: one more untimed run of a model before its turn in every round (its caches after
    the others ran)."""
    keys = list(runs)
    for k in keys:
        for _ in range(warmup):
            runs[k]()
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotate who goes first
            run = runs[k]
            if rewarm:
                run()
            ts, c0 = [], time.process_time()
            for _ in range(iters):
                t0 = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t0)
            wall[k].append(statistics.median(ts) * 1e3)
            cpu[k].append((time.process_time() - c0) / iters * 1e3)
    return Rounds(wall, cpu)


def percentile(xs, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(xs)
    at = (len(xs) - 1) * q / 100
    lo, hi = math.floor(at), math.ceil(at)
    return xs[lo] + (xs[hi] - xs[lo]) * (at - lo)


def paired_speedup(base, other):
    """{"median", "p25", "p75"} over rounds of base[i] / other[i] (ms per round each)."""
    ratios = [b / o for b, o in zip(base, other) if o > 0]
    if not ratios:
        return {"median": None, "p25": None, "p75": None}
    return {"median": statistics.median(ratios), "p25": percentile(ratios, 25),
            "p75": percentile(ratios, 75)}


def summary(ms):
    """{"median", "p90" (nearest rank), "mean", "min", "max"} of a list of ms."""
    xs = sorted(ms)
    p90 = xs[max(0, math.ceil(0.9 * len(xs)) - 1)]
    return {"median": statistics.median(xs), "p90": p90, "mean": statistics.fmean(xs),
            "min": xs[0], "max": xs[-1]}
