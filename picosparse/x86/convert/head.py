"""Output-side fusion for the sparse 1x1 op: a detection head's channels-last outputs.

PicoDet's head ends each level in a 1x1 conv whose output is read only as [N, H*W, C] parts:
VariadicSplit on channels (class scores, box distributions; or no split), per part an optional
Sigmoid, a Reshape to [N, C, H*W] and a Transpose [0, 2, 1]. The op then writes those parts
itself (through register transposes), and split / sigmoid / reshape / transpose drop out."""

from dataclasses import dataclass

import numpy as np

from picosparse.x86.convert.graph import const, is_transpose, replace_output, sole_consumer


@dataclass(frozen=True)
class Part:
    channels: int
    sigmoid: bool
    transpose: object  # the node whose output the op's output stands in for


def match(last, cout):
    """[Part] if `last` (a 1x1 conv chain's end) is read only as channels-last parts, else
    None."""
    shape = last.get_output_partial_shape(0)
    if not shape.is_static or len(shape) != 4:
        return None
    n, _, h, w = shape.to_shape()
    node = sole_consumer(last)
    if node is None:
        return None
    if node.get_type_name() == "VariadicSplit":
        axis, lengths = const(node.input_value(1)), const(node.input_value(2))
        if axis is None or lengths is None or int(np.ravel(axis)[0]) % 4 != 1:
            return None
        lengths = [int(v) for v in np.ravel(lengths)]
        if min(lengths) <= 0 or sum(lengths) != cout:
            return None
        heads = [(c, node, i) for i, c in enumerate(lengths)]
    else:
        heads = [(cout, last, 0)]
    parts = []
    for c, src, index in heads:
        node = sole_consumer(src, index)
        sig = node is not None and node.get_type_name() == "Sigmoid"
        if sig:
            node = sole_consumer(node)
        if node is None or node.get_type_name() != "Reshape":
            return None
        rs = node.get_output_partial_shape(0)
        if not rs.is_static or list(rs.to_shape()) != [n, c, h * w]:
            return None
        tr = sole_consumer(node)
        if tr is None or not is_transpose(tr, [0, 2, 1]):
            return None
        parts.append(Part(c, sig, tr))
    return parts


def attrs(parts):
    return {"out_parts": [p.channels for p in parts],
            "out_sigmoid": [int(p.sigmoid) for p in parts]}


def attach(node, parts):
    """The op's outputs stand in for the parts' transposes."""
    for k, p in enumerate(parts):
        replace_output(p.transpose.output(0), node.output(k))


def folded(parts):
    return [("Split, " if len(parts) > 1 else "")
            + ("Sigmoid, " if any(p.sigmoid for p in parts) else "") + "Transpose"]
