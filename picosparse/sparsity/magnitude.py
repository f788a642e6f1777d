"""Magnitude pruning, the one rule every path uses: zero exactly ceil(ratio * n) of n weights,
the smallest |w| first, ties broken by position.

Used by the GMP trainer (sparsity/pruner.py: per layer or over all pruned layers together,
previously pruned weights ranked first so masks never grow back), one-shot `picosparse prune`
(steps/prune.py) and the random sparse models the x86 op is tested and benchmarked on
(sparsity/random_model.py). "Exactly": never one weight short of the target, as PaddleSlim's
own `>= k-th smallest` threshold is (74.5% for a 196-weight layer at 75%).
"""

import math

import numpy as np


def zero_count(ratio, n):
    """How many of n weights a ratio prunes (the float guard keeps 0.75 * 4 at 3, not 4)."""
    return min(n, max(0, math.ceil(ratio * n - 1e-9)))


def keep_masks(weights, ratio, pruned_before=None):
    """Float32 masks (1 keep, 0 prune) over `weights` (arrays ranked together: one array for
    local sparsity, every pruned layer for global) zeroing exactly zero_count(ratio, n) of
    their n entries. pruned_before: earlier masks of the same shapes; their zeros rank below
    every live weight, so they stay pruned."""
    score = np.concatenate([np.abs(np.asarray(w, np.float64)).ravel() for w in weights])
    if pruned_before is not None:
        old = np.concatenate([np.asarray(m).ravel() for m in pruned_before])
        score[old == 0] = -1.0  # |w| >= 0: previously pruned entries rank first
    keep = np.ones(score.size, dtype="float32")
    keep[np.argsort(score, kind="stable")[:zero_count(ratio, score.size)]] = 0
    out, at = [], 0
    for w in weights:
        size = int(np.asarray(w).size)
        out.append(keep[at:at + size].reshape(np.shape(w)))
        at += size
    return out


def prune(weights, ratio):
    """Copies of `weights` (ranked together, see keep_masks) with the pruned entries 0."""
    masks = keep_masks(weights, ratio)
    return [np.where(m == 0, 0, np.asarray(w)).astype(np.asarray(w).dtype)
            for w, m in zip(weights, masks)]


def prune_local(weight, ratio):
    """One array pruned on its own (local sparsity)."""
    return prune([weight], ratio)[0]
