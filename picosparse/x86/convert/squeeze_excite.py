"""Input-side fusion for the sparse 1x1 op: a squeeze-excite gate in front of it.

ESNet's blocks end in x * gate, gate = hsigmoid(expand(relu(reduce(mean over H, W of x)))),
then a 1x1 conv. The op takes the gate and folds it into its weights per image (the
Multiply's pass over the whole tensor disappears); when the gate's two convs are picosparse
sparse ops themselves and the squeeze reads the same x, the op runs the whole block on its
own input (no ReduceMean / gate nodes left)."""

from dataclasses import dataclass

import numpy as np

from picosparse.x86.convert.chain import Activation
from picosparse.x86.convert.graph import SPARSE_OP, const, same


@dataclass
class Gate:
    """What the sparse op reads: `x` (the Multiply's full-size input) times `gate`
    [N, C, 1, 1]; `block`: the (reduce, expand) sparse ops making the gate, if it can run
    them itself."""

    x: object
    gate: object
    block: tuple = None

    def inputs(self):
        """Extra op inputs: the gate, unless the op makes it itself."""
        return [] if self.block else [self.gate]

    def weights(self):
        """The block's convs' weight segments, to follow the op's own."""
        return [const(op.input_value(1)) for op in self.block] if self.block else []

    def attrs(self):
        if not self.block:
            return {"se_channels": 0}
        out = {}
        for op, role in zip(self.block, ("reduce", "expand")):
            a = op.get_attributes()
            out.update(Activation(a["activation"], a["alpha"], a["beta"]).attrs(f"se_{role}_"))
        out["se_channels"] = int(self.block[0].get_attributes()["cout"])
        return out

    def folded(self):
        return ["SE gate"] + (["SE block"] if self.block else [])

    def block_ops(self):
        """Names of the sparse ops the block's convs became (their records now point here)."""
        return [op.get_friendly_name() for op in self.block] if self.block else []


def match(x):
    """The Gate the sparse op reading `x` takes over, or None: `x` must be Multiply(input
    [N, C, H, W], gate [N, C, 1, 1]) read only by that op (H * W > 1, f32 gate)."""
    node = x.get_node()
    if node.get_type_name() != "Multiply" or len(x.get_target_inputs()) != 1:
        return None
    a, b = node.input_value(0), node.input_value(1)
    for full, gate in ((a, b), (b, a)):
        fs, gs = full.get_partial_shape(), gate.get_partial_shape()
        if not (fs.is_static and gs.is_static) or len(fs) != 4 or len(gs) != 4:
            continue
        fs, gs = fs.to_shape(), gs.to_shape()
        if (gs[0] == fs[0] and gs[1] == fs[1] and gs[2] == gs[3] == 1 and fs[2] * fs[3] > 1
                and gate.get_element_type().get_type_name() == "f32"):
            return Gate(full, gate, _block(full, gate))
    return None


def _block(x, gate):
    """(reduce, expand): the two picosparse ops making `gate` as expand(reduce(ReduceMean(x)))
    over H, W, else None. The originals drop out of the graph unless something else still
    reads them (consumer counts would include replaced, dead nodes)."""
    def plain(node):  # one sparse 1x1, no gate / SE block / split outputs of its own
        if node.get_type_name() != SPARSE_OP or node.get_input_size() != 2:
            return False
        a = node.get_attributes()
        return a["se_channels"] == 0 and not len(a["out_parts"])

    expand = gate.get_node()
    reduce_ = expand.input_value(0).get_node()
    if not (plain(expand) and plain(reduce_)):
        return None
    mean = reduce_.input_value(0).get_node()
    if (mean.get_type_name() != "ReduceMean"
            or not same(mean.input_value(0).get_node(), x.get_node())
            or mean.input_value(0).get_index() != x.get_index()
            or not mean.get_attributes().get("keep_dims")):
        return None
    axes = const(mean.input_value(1))
    if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]:
        return None
    return reduce_, expand
