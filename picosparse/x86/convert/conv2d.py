"""Fusion pass: a depthwise conv (GroupConvolution, groups = channels) or a dense KxK conv
(K > 1: PicoDet's stem), with its chain (chain.py) and a max pool after it -> picosparse Conv2d
(dense, plain NCHW).

Why: OpenVINO runs those in a blocked or NHWC layout, so each one next to a sparse op (plain
NCHW) gets a layout reorder on both sides (measured ~3 ms of a 17 ms PicoDet-m, with the
stem's NCHW max pool ~1 ms more)."""

from dataclasses import dataclass, field

import numpy as np

from picosparse.x86.convert.chain import Activation, fold_chain
from picosparse.x86.convert.graph import CONV_OP, const, sole_consumer, swap_in
from picosparse.x86.convert.layers import Layer


@dataclass
class ConvLayer(Layer):
    kind: str  # "depthwise" | "conv"
    name: str
    cin: int
    cout: int
    groups: int
    k: int
    stride: int
    hw: list
    folded: list
    activation: str
    op: str
    layout: dict = None


@dataclass
class Conv:
    """A matched KxK conv with everything folded into it."""

    first: object  # the conv node
    last: object  # the end of the fused chain (the conv, an activation, a max pool)
    weight: np.ndarray  # float32 [cout, cin / groups, k, k], the chain's scale folded in
    bias: np.ndarray  # float32 [cout]
    act: Activation
    folded: list
    k: int
    stride: int
    pads: list  # top, left, bottom, right
    groups: int
    cin: int
    cout: int
    pool: list = field(default_factory=list)  # [] or [k, stride, pad t, l, b, r]

    @property
    def kind(self):
        return "depthwise" if self.groups > 1 else "conv"

    def build(self, ctx):
        weights = np.concatenate([np.ravel(self.weight), np.ravel(self.bias)]).astype(np.float32)
        node = ctx.factory.create(
            CONV_OP, [self.first.input_value(0), ctx.ops.constant(weights).output(0)],
            {"cout": int(self.cout), "kernel": int(self.k), "groups": self.groups,
             "stride": self.stride, "pads": self.pads, "pool": self.pool, **self.act.attrs()})
        swap_in(self.last, node)
        shape = node.get_output_partial_shape(0)
        return ConvLayer(self.kind, self.first.get_friendly_name(), self.cin, self.cout,
                         self.groups, self.k, self.stride,
                         [int(d.get_length()) for d in list(shape)[2:]], self.folded,
                         self.act.name, node.get_friendly_name())


def match(node, ctx):
    """Conv if `node` is a square KxK conv Conv2d runs (with a constant fp32 weight)."""
    geo = _geometry(node) if ctx.nchw_ops else None
    if geo is None:
        return None
    w = const(node.input_value(1))
    if w is None or w.dtype != np.float32:
        return None
    groups, k, stride, pads = geo
    cout = w.shape[0] * (w.shape[1] if groups > 1 else 1)  # group conv: [G, 1, 1, K, K]
    w = w.reshape(cout, -1, k, k)
    chain = fold_chain(node, cout)
    last, folded, pool = chain.last, chain.folded, []
    fused = _fused_pool(last)
    if fused is not None:
        last, pool = fused
        folded = folded + ["MaxPool"]
    wf = (w.astype(np.float64) * chain.scale[:, None, None, None]).astype(np.float32)
    return Conv(node, last, wf, chain.shift.astype(np.float32), chain.act, folded, k, stride,
                pads, groups, int(w.shape[1] * groups), int(cout), pool)


def _geometry(node):
    """(groups, k, stride, pads t/l/b/r) if node is a square KxK conv the picosparse Conv2d op
    runs: a depthwise GroupConvolution, or a dense Convolution with K > 1; else None."""
    t = node.get_type_name()
    if t not in ("GroupConvolution", "Convolution"):
        return None
    ws, xs = node.get_input_partial_shape(1), node.get_input_partial_shape(0)
    if not (ws.is_static and xs.is_static) or len(xs) != 4:
        return None
    cin = xs.to_shape()[1]
    if t == "GroupConvolution":
        if len(ws) != 5:
            return None
        g, co, ci, kh, kw = ws.to_shape()
        if not (co == 1 and ci == 1 and g == cin):  # depthwise only
            return None
    else:
        if len(ws) != 4:
            return None
        g = 1
        _, ci, kh, kw = ws.to_shape()
        if kh == 1 or ci != cin:
            return None
    a = node.get_attributes()
    st, dil = list(a["strides"]), list(a["dilations"])
    if not (kh == kw and st[0] == st[1] and st[0] in (1, 2) and dil == [1, 1]
            and a.get("auto_pad", "explicit") == "explicit"):
        return None
    pb, pe = list(a["pads_begin"]), list(a["pads_end"])
    return int(g), int(kh), int(st[0]), [int(pb[0]), int(pb[1]), int(pe[0]), int(pe[1])]


def _fused_pool(node):
    """(max pool node, [k, stride, pad t, l, b, r]) if `node`'s sole consumer is a square max
    pool the Conv2d op can fuse (floor rounding, explicit pads, no indices used), else None."""
    pool = sole_consumer(node)
    if pool is None or pool.get_type_name() != "MaxPool":
        return None
    a = pool.get_attributes()
    k, st = list(a["kernel"]), list(a["strides"])
    if (k[0] != k[1] or st[0] != st[1] or a.get("rounding_type", "floor") != "floor"
            or a.get("auto_pad", "explicit") != "explicit"
            or list(a.get("dilations", [1, 1])) != [1, 1]
            or any(len(pool.output(i).get_target_inputs())
                   for i in range(1, pool.get_output_size()))):
        return None
    pb, pe = list(a["pads_begin"]), list(a["pads_end"])
    if max(pb + pe) >= k[0]:  # a window entirely in the padding has no defined max
        return None
    return pool, [int(k[0]), int(st[0]), int(pb[0]), int(pb[1]), int(pe[0]), int(pe[1])]
