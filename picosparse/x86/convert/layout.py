"""Layout planning, the last pass: which tensors between picosparse ops go channel-blocked
([N, C/B, H*W, B], B the vector width: kernels/api.h) instead of NCHW.

A depthwise conv's output read only by picosparse ops goes blocked: the conv writes its
pixels' channel vectors as computed instead of transposing them back to NCHW through memory
(~25% of a 40x40 layer), and a sparse reader's tile packing transposes them in L1 at no
measurable cost. (The other way round does not pay: a sparse 1x1 writing blocked output cost
20-35% more than the depthwise conv saved.) Also when the conv is the last part of a channel
concat that only sparse 1x1s read (ESNet's [pointwise, depthwise] ghost concat): OpenVINO
concatenates per image as bytes, so the readers see the first parts NCHW, then the blocked
channels (`in_nchw`)."""

from picosparse.x86.convert.graph import CONV_OP, SPARSE_OP, live_names

BLOCK_CHANNELS = 16  # the widest ISA's block: a multiple of it suits every ISA's blocks


def writes_blocked(node):
    """A picosparse Conv2d that can write the blocked layout (the kernel's rule:
    conv_layout_error in kernels/conv2d.cpp)."""
    if node.get_type_name() != CONV_OP:
        return False
    a = node.get_attributes()
    c = node.get_input_partial_shape(0)[1].get_length()
    return (a["groups"] == c == a["cout"] and a["kernel"] in (3, 5) and a["stride"] in (1, 2)
            and not list(a["pool"]))


def plan_blocked(model):
    """Set the ops' in_blocked / out_blocked / in_nchw attributes; returns {op name: {"in":
    layout, "out": layout}} for the ops touched."""
    ops = model.get_ordered_ops()
    live = live_names(model)  # replaced nodes can still hold edges

    def readers(output):
        return [t for t in output.get_target_inputs() if t.get_node().get_name() in live]

    def concat_prefix(t):  # channels before the conv's part if `t` is a concat's last input
        cat = t.get_node()
        if (cat.get_type_name() != "Concat" or cat.get_attributes()["axis"] % 4 != 1
                or t.get_index() != cat.get_input_size() - 1
                or not cat.get_output_partial_shape(0).is_static):
            return None
        rs = readers(cat.output(0))
        if not rs or not all(r.get_index() == 0 and r.get_node().get_type_name() == SPARSE_OP
                             for r in rs):
            return None
        return cat.get_output_partial_shape(0).to_shape()[1] - \
            cat.get_input_partial_shape(t.get_index()).to_shape()[1], rs

    touched = {}

    def mark(node, side, layout):
        touched.setdefault(node.get_friendly_name(), {"in": "nchw", "out": "nchw"})[side] = \
            layout

    for node in ops:
        shape = node.get_output_partial_shape(0) if writes_blocked(node) else None
        if shape is None or not shape.is_static or shape.to_shape()[1] % BLOCK_CHANNELS:
            continue
        rs, prefix = readers(node.output(0)), 0
        if len(rs) == 1 and concat_prefix(rs[0]) is not None:
            prefix, rs = concat_prefix(rs[0])
        elif not rs or not all(t.get_index() == 0 and (
                t.get_node().get_type_name() == SPARSE_OP or writes_blocked(t.get_node()))
                for t in rs):
            continue
        node.set_attribute("out_blocked", 1)
        mark(node, "out", "blocked")
        for t in rs:
            t.get_node().set_attribute("in_blocked", 1)
            if prefix:
                t.get_node().set_attribute("in_nchw", int(prefix))
            mark(t.get_node(), "in", f"nchw {prefix} + blocked" if prefix else "blocked")
    return touched
