"""OpenVINO graph helpers shared by the fusion passes: constants, consumers, shapes, and
putting a new node where an old pattern was."""

import numpy as np

# the picosparse ops (openvino/extension.cpp), opset "picosparse"
SPARSE_OP = "SparseConv1x1"
CONV_OP = "Conv2d"
UPSAMPLE_OP = "Upsample"
SHUFFLE_OP = "ConcatShuffle"


def const(output):
    """numpy value of an output if it is a Constant (after constant folding), else None."""
    node = output.get_node()
    if node.get_type_name() == "Constant":
        return np.array(node.get_data())
    return None


def same(a, b):
    return a.get_name() == b.get_name()  # unique per node; Python wrappers are not identical


def live_names(model):
    """Names of the nodes still in `model`: after replacements, dead nodes can still hold
    edges, so consumer counts must ignore them."""
    return {op.get_name() for op in model.get_ordered_ops()}


def sole_consumer(node, index=0, live=None):
    """The one node reading node's output `index`, else None; live: live_names, when nodes
    were already replaced."""
    targets = [t for t in node.output(index).get_target_inputs()
               if live is None or t.get_node().get_name() in live]
    if len(targets) != 1:
        return None
    return targets[0].get_node()


def static_shape(output):
    """The output's shape as a list, None if it is not static."""
    ps = output.get_partial_shape()
    return list(ps.to_shape()) if ps.is_static else None


def is_transpose(node, perm):
    p = const(node.input_value(1)) if node.get_type_name() == "Transpose" else None
    return p is not None and [int(v) for v in np.ravel(p)] == perm


def channel_vector(value, cout):
    """A constant broadcastable over [N, Cout, H, W] along channels -> float64 [Cout] or None."""
    v = np.asarray(value, np.float64)
    if v.size == 1:
        return np.full(cout, float(v.reshape(())))
    if v.size != cout:
        return None
    if v.ndim == 1 or (v.ndim == 4 and v.shape[1] == cout):
        return v.reshape(cout)
    if v.ndim == 3 and v.shape[0] == cout:
        return v.reshape(cout)
    return None


def replace_output(old, new):
    """Consumers of output `old` read output `new` instead; new keeps old's tensor names."""
    names = set(old.get_names())
    old.replace(new)
    if names:
        new.get_tensor().set_names(names)


def swap_in(last, node):
    """Put `node` where `last` (the end of a fused pattern) was, keeping its names."""
    node.set_friendly_name(last.get_friendly_name())
    replace_output(last.output(0), node.output(0))
