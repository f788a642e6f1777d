"""Magnitude pruning, the one rule every path uses: zero exactly ceil(ratio * n) of n weights,
the smallest |w| first, ties broken by position.

Blocks (`sparse_block: [m, n]`, PaddleSlim's key): a block is m output channels x n input
channels of a weight (dims 0 and 1; a conv weight [cout, cin, kh, kw] has its own blocks at
each kernel tap), and whole blocks are zeroed: exactly ceil(ratio * b) of its b blocks, the
smallest score first, ties by position. A block's score is its mean |w| (L1), not PaddleSlim's
|mean w| (cal_mxn_avg_matrix), under which a block of +w and -w would score 0. Blocks at the
edge (cin not a multiple of n) are smaller and still count as one block each. [1, 1] is
unstructured, as are weights with fewer than two dims (biases, norms), whatever the block.
Dims 0 and 1 are taken as they are, as PaddleSlim does: a Paddle Linear weight is [in, out],
so there a block is m inputs x n outputs (PicoDet's pruned weights are all convs).

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


def block_of(shape, block=None):
    """The block (m, n) used for a weight of `shape`: `block` ([1, 1] when None), or (1, 1)
    where blocks make no sense (fewer than two dims)."""
    if block is None or len(shape) < 2:
        return (1, 1)
    m, n = (int(b) for b in block)
    if m < 1 or n < 1:
        raise ValueError(f"sparse block must be two integers >= 1, got {list(block)}")
    return (m, n)


def block_ids(shape, block=None):
    """(block index of each entry, number of blocks) of a weight of `shape`. Blocks are
    numbered in the order of their first entry, so ranking ties still go by position."""
    m, n = block_of(shape, block)
    size = int(np.prod(shape, dtype=np.int64))
    if (m, n) == (1, 1):
        return np.arange(size).reshape(shape), size
    d0, d1 = int(shape[0]), int(shape[1])
    rest = int(np.prod(shape[2:], dtype=np.int64))
    nb1 = -(-d1 // n)
    rows = np.arange(d0) // m
    cols = np.arange(d1) // n
    ids = (rows[:, None, None] * nb1 + cols[None, :, None]) * rest \
        + np.arange(rest)[None, None, :]
    return ids.reshape(shape), -(-d0 // m) * nb1 * rest


def keep_masks(weights, ratio, pruned_before=None, block=None):
    """Float32 masks (1 keep, 0 prune) over `weights` (arrays ranked together: one array for
    local sparsity, every pruned layer for global) zeroing exactly zero_count(ratio, b) of
    their b blocks (entries when `block` is None or [1, 1]; see the module docstring).
    pruned_before: earlier masks of the same shapes; a block all of whose entries they zero
    ranks below every live block, so it stays pruned (a block only partly zeroed before
    ranks by its mean |w| and, if kept, is kept whole)."""
    scores, ids = [], []
    for i, w in enumerate(weights):
        a = np.abs(np.asarray(w, np.float64))
        bid, nb = block_ids(a.shape, block)
        if nb == a.size:  # one entry per block: the entries themselves, in order
            score = a.ravel().copy()
            if pruned_before is not None:
                # |w| >= 0: previously pruned entries rank first
                score[np.asarray(pruned_before[i]).ravel() == 0] = -1.0
        else:
            flat = bid.ravel()
            count = np.bincount(flat, minlength=nb)
            score = np.bincount(flat, weights=a.ravel(), minlength=nb) / count
            if pruned_before is not None:
                zeros = np.bincount(flat, weights=(np.asarray(pruned_before[i]).ravel() == 0),
                                    minlength=nb)
                score[zeros == count] = -1.0  # wholly pruned blocks rank first
        scores.append(score)
        ids.append((bid, nb))
    score = np.concatenate(scores) if scores else np.zeros(0)
    keep = np.ones(score.size, dtype="float32")
    keep[np.argsort(score, kind="stable")[:zero_count(ratio, score.size)]] = 0
    out, at = [], 0
    for bid, nb in ids:
        out.append(keep[at:at + nb][bid])
        at += nb
    return out


def prune(weights, ratio, block=None):
    """Copies of `weights` (ranked together, see keep_masks) with the pruned entries 0."""
    masks = keep_masks(weights, ratio, block=block)
    return [np.where(m == 0, 0, np.asarray(w)).astype(np.asarray(w).dtype)
            for w, m in zip(weights, masks)]


def prune_local(weight, ratio, block=None):
    """One array pruned on its own (local sparsity)."""
    return prune([weight], ratio, block=block)[0]
