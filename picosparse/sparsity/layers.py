"""`picosparse layers`: every parameter with its pruning decision and zero fraction."""

from picosparse import paddle_env, weights as W
from picosparse.sparsity import policy, report


def layer_table(cfg, weights=None):
    """[{name, paddle_name, shape, numel, pruned, reason, zeros}] for cfg's model.

    Without a pruning section every parameter is listed as dense. `zeros` is the exact-zero
    fraction in `weights` (or in the freshly built model when no weights are given).
    """
    model = paddle_env.build_model(cfg)
    state = W.load_into(model, weights) if weights else model.state_dict()
    rows = []
    for d in policy.decide(model, cfg.prune):
        rows.append({"name": d.name, "paddle_name": d.pname, "shape": list(d.shape),
                     "numel": d.numel, "pruned": d.pruned, "reason": d.reason, "why": d.why,
                     "zeros": report.zero_fraction(report.to_numpy(state[d.name]))})
    return rows
