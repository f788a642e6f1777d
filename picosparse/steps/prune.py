"""One-shot magnitude pruning with the training policy: the quick baseline before a long run."""

from pathlib import Path

from picosparse import paddle_env, weights as W
from picosparse.errors import ConfigError
from picosparse.sparsity import policy, report
from picosparse.sparsity.report import to_numpy


def oneshot(cfg, weights, out):
    """Zero the smallest-|w| fraction `cfg.prune.ratio` of each pruned parameter (local
    sparsity; one global threshold when local_sparsity is false) and save to `out`."""
    if cfg.prune is None:
        raise ConfigError(f"{cfg.path}: no UnstructuredPruner section; pass --slim-config or "
                          "--sparsity")
    np = paddle_env.stack().np
    model = paddle_env.build_model(cfg)
    state = W.load_into(model, weights)
    decisions = policy.decide(model, cfg.prune)
    pruned = [d for d in decisions if d.pruned]
    arrays = {d.name: to_numpy(state[d.name]) for d in pruned}
    ratio = cfg.prune.ratio
    new = {k: to_numpy(v) for k, v in state.items()}
    if cfg.prune.local_sparsity:
        new.update({n: _prune_local(a, ratio) for n, a in arrays.items()})
    else:
        flat = np.abs(np.concatenate([a.ravel() for a in arrays.values()]))
        k = int(round(ratio * flat.size))
        t = np.partition(flat, k - 1)[k - 1] if k > 0 else -1.0
        new.update({n: np.where(np.abs(a) <= t, 0, a).astype(a.dtype) for n, a in arrays.items()})
    W.save(new, out)
    sp = report.sparsity(new, decisions)
    return {"weights": Path(out), "sparsity": sp["overall"], "layers": sp["layers"]}


def _prune_local(a, ratio):
    """Zero the ceil(ratio * n) smallest-|w| entries (ties broken by position): never fewer
    zeros than asked, as in training."""
    import math
    import numpy as np
    flat = a.ravel().copy()
    flat[np.argsort(np.abs(flat), kind="stable")[:math.ceil(ratio * flat.size - 1e-9)]] = 0
    return flat.reshape(a.shape)
