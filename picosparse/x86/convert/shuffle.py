"""Fusion pass after the node passes: ESNet's concat + 2-group channel shuffle.

Concat(a, b) on channels -> Reshape [N, 2, C, H, W] -> Transpose [0, 2, 1, 3, 4] -> Reshape
[N, 2C, H, W] (ESNet's block output): if b is a sparse 1x1's only output use, that op writes
the shuffled tensor itself (its rows to the odd channels, a copied to the even ones); else one
ConcatShuffle op. Either way one pass instead of OpenVINO's copy of a into the concat plus a
shuffle pass."""

from picosparse.x86.convert.graph import (SHUFFLE_OP, SPARSE_OP, is_transpose, live_names,
                                          replace_output, same, sole_consumer, static_shape,
                                          swap_in)


def fuse(model, ctx):
    """Fuse every such pattern in `model`; returns how many. The records of sparse ops that
    took one over say so in `folded`."""
    live = live_names(model)

    def sole(node):
        return sole_consumer(node, live=live)

    count = 0
    for cat in [op for op in model.get_ordered_ops() if op.get_type_name() == "Concat"]:
        shape = static_shape(cat.output(0))
        if (cat.get_input_size() != 2 or shape is None or len(shape) != 4
                or cat.get_attributes()["axis"] % 4 != 1):
            continue
        a, b = cat.input_value(0), cat.input_value(1)
        if a.get_partial_shape() != b.get_partial_shape():
            continue
        n, c2, h, w = shape
        r1 = sole(cat)
        if (r1 is None or r1.get_type_name() != "Reshape"
                or static_shape(r1.output(0)) != [n, 2, c2 // 2, h, w]):
            continue
        tr = sole(r1)
        if tr is None or not is_transpose(tr, [0, 2, 1, 3, 4]):
            continue
        r2 = sole(tr)
        if r2 is None or r2.get_type_name() != "Reshape" or static_shape(r2.output(0)) != shape:
            continue
        conv = b.get_node()
        attrs = conv.get_attributes() if conv.get_type_name() == SPARSE_OP else None
        if (attrs is not None and b.get_index() == 0 and not len(attrs["out_parts"])
                and sole(conv) is not None and same(sole(conv), cat)):
            node = ctx.factory.create(SPARSE_OP, [conv.input_value(i) for i in
                                                  range(conv.get_input_size())] + [a],
                                      {**attrs, "shuffle": 1})
            node.set_friendly_name(conv.get_friendly_name())  # per-layer records name it
            replace_output(r2.output(0), node.output(0))
            record = ctx.record(conv.get_friendly_name())
            if record is not None:
                record.folded.append("Concat, ChannelShuffle")
        else:
            swap_in(r2, ctx.factory.create(SHUFFLE_OP, [a, b], {}))
        count += 1
    return count
