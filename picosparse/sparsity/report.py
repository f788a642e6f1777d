"""Zero fractions of weights: per layer and overall over the pruned parameters."""

import numpy as np


def zero_fraction(arr):
    arr = np.asarray(arr)
    return float((arr == 0).sum()) / arr.size if arr.size else 0.0


def sparsity(state, decisions):
    """{"overall": zeros/numel over pruned params, "layers": {name: fraction}} (None if dense)."""
    layers, zeros, total = {}, 0, 0
    for d in decisions:
        if not d.pruned or d.name not in state:
            continue
        arr = to_numpy(state[d.name])
        z = int((arr == 0).sum())
        layers[d.name] = z / arr.size
        zeros += z
        total += arr.size
    return {"overall": (zeros / total) if total else None, "layers": layers}


def to_numpy(v):
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)
