"""One-shot magnitude pruning with the training policy: the quick baseline before a long run."""

from dataclasses import dataclass
from pathlib import Path

from picosparse import paddle_env, weights as W
from picosparse.errors import ConfigError
from picosparse.sparsity import magnitude, policy, report
from picosparse.params import device_param
from picosparse.sparsity.report import to_numpy


@dataclass(frozen=True, kw_only=True)
class PruneParams:
    """`picosparse prune`: its own parameters are the device the weights are loaded on; the
    ratio and the skip rules are the detector config's (--slim-config / --sparsity)."""

    device: str = device_param()


def oneshot(cfg, weights, out):
    """Zero exactly ceil(ratio * n) smallest-|w| entries of each pruned parameter (local
    sparsity; of all pruned parameters together when local_sparsity is false), the trainer's
    rule (sparsity/magnitude.py), with ratio `cfg.prune.ratio`, and save to `out`."""
    if cfg.prune is None:
        raise ConfigError(f"{cfg.path}: no UnstructuredPruner section; pass --slim-config or "
                          "--sparsity")
    model = paddle_env.build_model(cfg)
    state = W.load_into(model, weights)
    decisions = policy.decide(model, cfg.prune)
    pruned = [d for d in decisions if d.pruned]
    arrays = {d.name: to_numpy(state[d.name]) for d in pruned}
    ratio = cfg.prune.ratio
    new = {k: to_numpy(v) for k, v in state.items()}
    if cfg.prune.local_sparsity:
        new.update({n: magnitude.prune_local(a, ratio) for n, a in arrays.items()})
    else:
        new.update(zip(arrays, magnitude.prune(list(arrays.values()), ratio)))
    W.save(new, out)
    sp = report.sparsity(new, decisions)
    return {"weights": Path(out), "sparsity": sp["overall"], "layers": sp["layers"]}

