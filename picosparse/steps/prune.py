"""One-shot magnitude pruning with the training policy: the quick baseline before a long run."""

from dataclasses import dataclass
from pathlib import Path

from picosparse import paddle_env, weights as W
from picosparse.errors import ConfigError
from picosparse.sparsity import magnitude, policy, report
from picosparse.params import check, device_param, sparse_block_param
from picosparse.sparsity.report import to_numpy


@dataclass(frozen=True, kw_only=True)
class PruneParams:
    """`picosparse prune`: its own parameters are the device the weights are loaded on; the
    ratio, the skip rules and the block are the detector config's (--slim-config / --sparsity;
    --sparse-block sets the recipe's sparse_block when the config is resolved)."""

    device: str = device_param()
    sparse_block: list = sparse_block_param()

    def __post_init__(self):
        check(self)


def oneshot(cfg, weights, out):
    """Zero exactly ceil(ratio * n) smallest-|w| entries of each pruned parameter (local
    sparsity; of all pruned parameters together when local_sparsity is false), the trainer's
    rule (sparsity/magnitude.py), with ratio `cfg.prune.ratio`, and save to `out`. With a
    sparse_block other than [1, 1], whole blocks instead (ceil(ratio * blocks), smallest
    mean |w| first)."""
    if cfg.prune is None:
        raise ConfigError(f"{cfg.path}: no UnstructuredPruner section; pass --slim-config or "
                          "--sparsity")
    model = paddle_env.build_model(cfg)
    state = W.load_into(model, weights)
    decisions = policy.decide(model, cfg.prune)
    pruned = [d for d in decisions if d.pruned]
    arrays = {d.name: to_numpy(state[d.name]) for d in pruned}
    ratio, block = cfg.prune.ratio, cfg.prune.sparse_block
    new = {k: to_numpy(v) for k, v in state.items()}
    if cfg.prune.local_sparsity:
        new.update({n: magnitude.prune_local(a, ratio, block) for n, a in arrays.items()})
    else:
        new.update(zip(arrays, magnitude.prune(list(arrays.values()), ratio, block)))
    W.save(new, out)
    sp = report.sparsity(new, decisions, block if cfg.prune.blocked else None)
    res = {"weights": Path(out), "sparsity": sp["overall"], "layers": sp["layers"]}
    if "block_sparsity" in sp:
        res["block_sparsity"] = sp["block_sparsity"]
        res["sparse_block"] = list(block)
    return res

