"""Zero fractions of weights: per layer and overall over the pruned parameters; with a
sparse_block, also the fraction of all-zero blocks."""

import numpy as np

from picosparse.sparsity.magnitude import block_ids


def zero_fraction(arr):
    arr = np.asarray(arr)
    return float((arr == 0).sum()) / arr.size if arr.size else 0.0


def sparsity(state, decisions, block=None):
    """{"overall": zeros/numel over pruned params, "layers": {name: fraction}} (None if dense).

    With `block` ([m, n], not [1, 1]) also "block_sparsity": {"block": [m, n], "overall":
    all-zero blocks / blocks over pruned params, "layers": {name: fraction}} (magnitude.py's
    blocks: [1, 1] for parameters with fewer than two dims)."""
    blocked = block is not None and list(block) != [1, 1]
    layers, zeros, total = {}, 0, 0
    blayers, bzeros, btotal = {}, 0, 0
    for d in decisions:
        if not d.pruned or d.name not in state:
            continue
        arr = to_numpy(state[d.name])
        z = int((arr == 0).sum())
        layers[d.name] = z / arr.size
        zeros += z
        total += arr.size
        if blocked:
            bz, nb = zero_blocks(arr, block)
            blayers[d.name] = bz / nb if nb else 0.0
            bzeros += bz
            btotal += nb
    out = {"overall": (zeros / total) if total else None, "layers": layers}
    if blocked:
        out["block_sparsity"] = {"block": list(block), "layers": blayers,
                                 "overall": (bzeros / btotal) if btotal else None}
    return out


def zero_blocks(arr, block):
    """(all-zero blocks, blocks) of `arr` under sparse_block `block` (magnitude.block_ids)."""
    arr = np.asarray(arr)
    ids, nb = block_ids(arr.shape, block)
    live = np.bincount(ids.ravel(), weights=(arr.ravel() != 0), minlength=nb)
    return int((live == 0).sum()), nb


def to_numpy(v):
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)
