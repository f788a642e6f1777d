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


_SE_CLASS = re.compile(r"SE(Module|Layer|Block)?$")


def _conv_params(layer, prefix):
    """Structured names of the conv weights in `layer` (named `prefix`) and below it."""
    return {f"{prefix}.{n}" for n, p in layer.named_parameters() if len(p.shape) == 4}


def _downsamples(layer):
    return any(getattr(sub, "_stride", [1])[0] == 2 for _, sub in layer.named_sublayers()
               if type(sub).__name__ == "Conv2D")


def structural(model):
    """{structure name: set of structured parameter names} for the `structure` skip rules."""
    subs = dict(model.named_sublayers())
    head = getattr(model, "head", None)
    heads = set()
    if head is not None:
        # the head's own convs outside its shared feature tower write the predictions
        for n, sub in head.named_sublayers():
            if type(sub).__name__ == "Conv2D" and not n.startswith("conv_feat."):
                heads |= _conv_params(sub, f"head.{n}")
    # backbone blocks holding a squeeze-excite module, in build order; a block is the last of
    # its stage when it is the backbone's last such block or the next one downsamples
    blocks = []
    for n, sub in subs.items():
        if n.startswith("backbone.") and _SE_CLASS.search(type(sub).__name__):
            blocks.append((n.rsplit(".", 1)[0], n, sub))
    last = set()
    for i, (parent, n, se) in enumerate(blocks):
        nxt = blocks[i + 1][0] if i + 1 < len(blocks) else None
        if nxt is None or _downsamples(subs[nxt]):
            last |= _conv_params(se, n)
    return {"head_outputs": heads, "stage_last_se": last}


def _rule_matches(rule, name, shape, found=None):
    if rule.structure is not None:
        return name in found[rule.structure]
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
    found = structural(model) if spec is not None and any(r.structure for r in spec.skip) \
        else None
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
                if _rule_matches(rule, name, shape, found):
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
