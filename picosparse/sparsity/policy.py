"""Which parameters are pruned, and why the others are not.

Decided from structured names (`backbone.2_3._se.conv1.weight`), never from build-order names
(`conv2d_17.w_0`), so the same YAML rules hold however the model was built.
"""

import fnmatch
import re
from dataclasses import dataclass

NORM_LAYERS = {
    "BatchNorm", "GroupNorm", "LayerNorm", "SpectralNorm", "BatchNorm1D", "BatchNorm2D",
    "BatchNorm3D", "InstanceNorm1D", "InstanceNorm2D", "InstanceNorm3D", "SyncBatchNorm",
    "LocalResponseNorm",
}


@dataclass
class ParamDecision:
    name: str  # structured name, as in state_dict()
    pname: str  # paddle's parameter name (what PaddleSlim keys masks by)
    shape: tuple
    pruned: bool
    reason: str
    why: str = ""

    @property
    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


def _is_conv1x1(shape):
    return len(shape) == 4 and shape[2] == 1 and shape[3] == 1


def _rule_matches(rule, name, shape):
    if rule.name is not None:
        return fnmatch.fnmatchcase(name, rule.name)
    if rule.regex is not None:
        return re.search(rule.regex, name) is not None
    return len(rule.shape) == len(shape) and all(
        r in (-1, s) for r, s in zip(rule.shape, shape))


def decide(model, spec):
    """One ParamDecision per parameter of `model` under PruneSpec `spec` (None = dense)."""
    norm_params = set()
    for _, layer in model.named_sublayers(include_self=True):
        if type(layer).__name__ in NORM_LAYERS:
            norm_params.update(id(p) for p in layer.parameters(include_sublayers=False))
    conv1x1_only = spec is None or spec.prune_params_type == "conv1x1_only"
    out = []
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        reason, why = None, ""
        if spec is None:
            reason = "dense config (no pruning section)"
        elif id(p) in norm_params:
            reason = "normalization"
        elif len(shape) == 1:
            reason = "bias / 1-D"
        elif conv1x1_only and not _is_conv1x1(shape):
            reason = "not a 1x1 conv"
        else:
            for rule in spec.skip:
                if _rule_matches(rule, name, shape):
                    reason, why = f"skip rule {rule.describe()}", rule.why
                    break
        out.append(ParamDecision(name, p.name, shape, reason is None, reason or "pruned", why))
    return out


def skip_func(decisions, model):
    """PaddleSlim's skip_params_func: the set of paddle names (and norm layers) to leave dense."""
    skipped = {d.pname for d in decisions if not d.pruned}

    def _func(_model):
        names = set(skipped)
        for _, layer in model.named_sublayers():
            if type(layer).__name__ in NORM_LAYERS:
                names.add(layer.full_name())
        return names
    return _func
