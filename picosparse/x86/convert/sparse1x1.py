"""Fusion pass: a sparse 1x1 conv and its chain (chain.py) -> picosparse SparseConv1x1.

Matched: Convolution 1x1, stride 1, no padding, groups 1, constant fp32 weight whose zero
fraction reaches the threshold, or any such conv with `dense_1x1`: a kept-dense 1x1 conv (the
recipe's head outputs and SE convs) next to picosparse's NCHW ops costs OpenVINO's conv plus a
layout reorder on each side; on the same op with all its weights it costs neither, and the
head's outputs fuse into it (measured faster on PicoDet). Built with what it reads fused in (a squeeze-excite gate:
squeeze_excite.py) and what reads it (a detection head's channels-last parts: head.py)."""

from dataclasses import dataclass

import numpy as np

from picosparse.x86.convert import head, squeeze_excite
from picosparse.x86.convert.chain import Activation, fold_chain
from picosparse.x86.convert.graph import SPARSE_OP, const, swap_in
from picosparse.x86.convert.layers import Layer
from picosparse.x86.kernel import pack


@dataclass
class SparseLayer(Layer):
    kind: str  # "sparse1x1"
    name: str
    cout: int
    cin: int
    hw: list
    zero_fraction: float
    nnz: int
    folded: list
    activation: str
    op: str
    fused_into: str = None  # a squeeze-excite conv run inside this op
    layout: dict = None
    below_threshold: bool = None  # True: fewer zeros than the threshold, run here anyway


@dataclass
class Skipped:
    """A 1x1 conv left dense, and why."""

    name: str
    why: str
    zero_fraction: float = None

    def to_json(self):
        out = {"name": self.name, "why": self.why}
        if self.zero_fraction is not None:
            out["zero_fraction"] = self.zero_fraction
        return out


@dataclass
class Sparse1x1:
    """A matched sparse 1x1 conv with its chain folded in."""

    first: object  # the Convolution
    last: object  # the end of the fused chain
    weight: np.ndarray  # float32 [cout, cin], the chain's scale folded in, zeros kept
    bias: np.ndarray  # float32 [cout]
    act: Activation
    zero_fraction: float
    folded: list
    cin: int
    cout: int
    parts: list  # head.Part list when only channels-last parts read it, else None
    below_threshold: bool = False

    def build(self, ctx):
        sw = pack(self.weight, self.bias)
        x = self.first.input_value(0)
        gate = squeeze_excite.match(x)
        if gate is not None:
            x = gate.x
        parts = self.parts if gate is None else None
        attrs = {**self.act.attrs(), "cout": int(self.cout),
                 **(gate.attrs() if gate else {"se_channels": 0}),
                 **(head.attrs(parts) if parts else {})}
        weights = np.concatenate([sw.segment()] + (gate.weights() if gate else []))
        node = ctx.factory.create(SPARSE_OP, [x, ctx.ops.constant(weights).output(0)]
                                  + (gate.inputs() if gate else []), attrs)
        if parts:
            node.set_friendly_name(self.last.get_friendly_name())
            head.attach(node, parts)
        else:
            swap_in(self.last, node)
        op = node.get_friendly_name()
        for name in gate.block_ops() if gate else []:  # the SE convs' records: run in here
            record = ctx.record(name)
            if record is not None:
                record.fused_into = op
        ctx.dense_bytes += self.weight.nbytes + self.bias.nbytes
        ctx.sparse_bytes += sw.nbytes()
        ctx.gates += gate is not None
        shape = x.get_partial_shape()
        return SparseLayer(
            "sparse1x1", self.first.get_friendly_name(), self.cout, self.cin,
            [int(d.get_length()) for d in list(shape)[2:]] if shape.is_static else None,
            round(self.zero_fraction, 4), sw.nnz,
            self.folded + (gate.folded() if gate else []) + (head.folded(parts) if parts else []),
            self.act.name, op, below_threshold=self.below_threshold or None)


def match(conv, ctx):
    """Sparse1x1, Skipped (a 1x1 conv left dense) or None (not a 1x1 conv)."""
    if not _is_1x1(conv):
        return None
    name = conv.get_friendly_name()
    w = const(conv.input_value(1))
    if w is None:
        return Skipped(name, "weight is not a constant")
    if conv.get_input_element_type(0).get_type_name() != "f32" or w.dtype != np.float32:
        return Skipped(name, f"not fp32 ({w.dtype})")
    cout, cin = w.shape[:2]
    zf = float(np.count_nonzero(w == 0)) / w.size
    below = zf < ctx.sparse_threshold
    if below and not ctx.dense_1x1:
        return Skipped(name, f"zero fraction {zf:.3f} < {ctx.sparse_threshold}", zf)
    chain = fold_chain(conv, cout)
    wf = (w.reshape(cout, cin).astype(np.float64) * chain.scale[:, None]).astype(np.float32)
    wf[w.reshape(cout, cin) == 0] = 0.0  # exact zeros stay zeros (0 * inf guard)
    return Sparse1x1(conv, chain.last, wf, chain.shift.astype(np.float32), chain.act, zf,
                     chain.folded, int(cin), int(cout), head.match(chain.last, int(cout)), below)


def _is_1x1(conv):
    if conv.get_type_name() != "Convolution":
        return False
    wshape = conv.get_input_partial_shape(1)
    if not wshape.is_static or len(wshape) != 4:
        return False
    a = conv.get_attributes()
    return (list(wshape.to_shape())[2:] == [1, 1] and list(a["strides"]) == [1, 1]
            and list(a["pads_begin"]) == [0, 0] and list(a["pads_end"]) == [0, 0]
            and a.get("auto_pad", "explicit") in ("explicit", "valid", "notset"))
