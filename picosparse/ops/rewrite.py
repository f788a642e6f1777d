"""`export_x86_sparse`: an exported Paddle model -> OpenVINO IR whose sparse 1x1 convs run the
picosparse op, everything else staying OpenVINO's own dense ops.

Rewrite, per Convolution read from model.pdmodel by OpenVINO's Paddle frontend:
  Convolution(1x1, stride 1, pad 0, groups 1, constant weight, zero fraction >= threshold)
    -> [BatchNormInference | Add(const) | Multiply(const)]*   (per-channel affine, folded)
    -> [Relu | HSwish | HardSigmoid | PRelu(scalar slope)]?   (fused)
becomes one SparseConv1x1 node. Folding scales each weight row, so zeros stay exactly zero.
Depthwise convs (GroupConvolution, groups = channels) and dense KxK convs (PicoDet's stem) with
the same chain (+ a max pool after the stem) can become picosparse Conv2d nodes (dense, plain
NCHW), and nearest 2x Interpolates Upsample nodes; see rewrite_model's `nchw_ops`.
Each step of the chain is absorbed only if it is the sole consumer of the previous output.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from picosparse.atomic import atomic_dir
from picosparse.errors import DataError, PicosparseError

META_NAME = "x86_sparse.json"
XML_NAME = "model.xml"
OP_TYPE = "SparseConv1x1"
CONV_TYPE = "Conv2d"
UPSAMPLE_TYPE = "Upsample"
SHUFFLE_TYPE = "ConcatShuffle"


def _find_model(model_dir):
    d = Path(model_dir)
    if d.is_file():
        return d
    for name in ("model.pdmodel", "model.xml", "model.onnx"):
        if (d / name).is_file():
            return d / name
    raise DataError(f"{d}: no model.pdmodel (or model.xml / model.onnx) to convert; "
                    "run `picosparse export` first")


def _const(output):
    """numpy value of an output if it is a Constant (after constant folding), else None."""
    node = output.get_node()
    if node.get_type_name() == "Constant":
        return np.array(node.get_data())
    return None


def _same(a, b):
    return a.get_name() == b.get_name()  # unique per node; Python wrappers are not identical


def _sole_consumer(node, index=0, live=None):
    """The one node reading node's output `index`, else None; live: names of the nodes still
    in the graph (after replacements, dead nodes can still hold edges)."""
    targets = [t for t in node.output(index).get_target_inputs()
               if live is None or t.get_node().get_name() in live]
    if len(targets) != 1:
        return None
    return targets[0].get_node()


def _is_transpose(node, perm):
    p = _const(node.input_value(1)) if node.get_type_name() == "Transpose" else None
    return p is not None and [int(v) for v in np.ravel(p)] == perm


def _channel_vector(value, cout):
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


def _conv_geometry(node):
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


def _fold_chain(conv, cout):
    """Absorb the per-channel affine ops and one activation after `conv`.

    Returns (last node, scale [Cout], shift [Cout], folded op types, act, alpha, beta)."""
    scale, shift = np.ones(cout), np.zeros(cout)
    last, folded = conv, []
    while True:
        nxt = _sole_consumer(last)
        if nxt is None:
            break
        got = _absorb_affine(nxt, last, scale, shift, cout)
        if got is None:
            break
        scale, shift = got
        folded.append(nxt.get_type_name())
        last = nxt
    act, alpha, beta = "none", 0.0, 0.0
    nxt = _sole_consumer(last)
    if nxt is not None and _activation(nxt) is not None:
        act, alpha, beta = _activation(nxt)
        last = nxt
    return last, scale, shift, folded, act, alpha, beta


def _upsample_factors(node):
    """(fh, fw) if node is a nearest, integer-factor Interpolate the Upsample op reproduces
    exactly (asymmetric coordinates: out[y] = in[floor(y / f)]), else None."""
    if node.get_type_name() != "Interpolate":
        return None
    a = node.get_attributes()
    if (a.get("mode") != "nearest" or a.get("antialias")
            or a.get("coordinate_transformation_mode") != "asymmetric"
            or a.get("nearest_mode") not in ("simple", "floor")
            or any(a.get("pads_begin", [0])) or any(a.get("pads_end", [0]))):
        return None
    xs, ys = node.get_input_partial_shape(0), node.get_output_partial_shape(0)
    if not (xs.is_static and ys.is_static) or len(xs) != 4:
        return None
    (n, c, h, w), (n2, c2, h2, w2) = xs.to_shape(), ys.to_shape()
    if (n, c) != (n2, c2) or h2 % h or w2 % w or node.get_input_element_type(0).get_type_name() != "f32":
        return None
    return h2 // h, w2 // w


def _fused_pool(node):
    """(max pool node, [k, stride, pad t, l, b, r]) if `node`'s sole consumer is a square max
    pool the Conv2d op can fuse (floor rounding, explicit pads, no indices used), else None."""
    pool = _sole_consumer(node)
    if pool is None or pool.get_type_name() != "MaxPool":
        return None
    a = pool.get_attributes()
    k, st = list(a["kernel"]), list(a["strides"])
    if (k[0] != k[1] or st[0] != st[1] or a.get("rounding_type", "floor") != "floor"
            or a.get("auto_pad", "explicit") != "explicit"
            or list(a.get("dilations", [1, 1])) != [1, 1]
            or any(len(pool.output(i).get_target_inputs()) for i in range(1, pool.get_output_size()))):
        return None
    pb, pe = list(a["pads_begin"]), list(a["pads_end"])
    if max(pb + pe) >= k[0]:  # a window entirely in the padding has no defined max
        return None
    return pool, [int(k[0]), int(st[0]), int(pb[0]), int(pb[1]), int(pe[0]), int(pe[1])]


def _absorb_affine(node, prev, scale, shift, cout):
    """If `node` is a per-channel affine of prev's output, update (scale, shift) and return True."""
    t = node.get_type_name()
    ins = [node.input_value(i) for i in range(node.get_input_size())]
    if t == "BatchNormInference":
        # opset5: (data, gamma, beta, mean, var); opset1: (gamma, beta, data, mean, var)
        order = (0, 1, 2, 3, 4) if _same(ins[0].get_node(), prev) else (2, 0, 1, 3, 4)
        if not _same(ins[order[0]].get_node(), prev):
            return None
        vals = [_const(ins[i]) for i in order[1:]]
        if any(v is None for v in vals):
            return None
        gamma, beta, mean, var = (_channel_vector(v, cout) for v in vals)
        if any(v is None for v in (gamma, beta, mean, var)):
            return None
        s = gamma / np.sqrt(var + float(node.get_attributes()["epsilon"]))
        return scale * s, (shift - mean) * s + beta
    if t in ("Add", "Multiply", "Subtract"):
        if len(ins) != 2:
            return None
        if _same(ins[0].get_node(), prev):
            other = ins[1]
        elif _same(ins[1].get_node(), prev) and t != "Subtract":
            other = ins[0]
        else:
            return None
        c = _const(other)
        if c is None or c.ndim > 4:
            return None
        c = _channel_vector(c, cout)
        if c is None:
            return None
        if t == "Add":
            return scale, shift + c
        if t == "Subtract":
            return scale, shift - c
        return scale * c, shift * c
    return None


def _activation(node):
    """(name, alpha, beta) if node is an activation the op can fuse, else None."""
    t = node.get_type_name()
    if t == "Relu":
        return "relu", 0.0, 0.0
    if t == "HSwish":
        return "hswish", 0.0, 0.0
    if t == "HardSigmoid":
        a, b = _const(node.input_value(1)), _const(node.input_value(2))
        if a is None or b is None or a.size != 1 or b.size != 1:
            return None
        return "hsigmoid", float(a.reshape(())), float(b.reshape(()))
    if t == "PRelu":
        s = _const(node.input_value(1))
        if s is None or s.size != 1:
            return None
        return "leaky", float(s.reshape(())), 0.0
    return None


def plan_replacements(model, sparse_threshold, nchw_ops=True):
    """What the rewrite would replace; nothing is modified.

    Returns (replace, skipped): replace is a list of dicts (kind "sparse1x1", "depthwise",
    "conv" (dense KxK) or "upsample"; conv = the first node, last = the end of the fused chain,
    folded float32 weight, bias [Cout], act, alpha, beta, ...); skipped lists the 1x1 convs
    left dense with the reason.
    """
    replace, skipped = [], []
    for conv in model.get_ordered_ops():
        name = conv.get_friendly_name()
        if nchw_ops and _upsample_factors(conv) is not None:
            replace.append(dict(kind="upsample", conv=conv, last=conv, name=name,
                                factors=_upsample_factors(conv)))
            continue
        geo = _conv_geometry(conv) if nchw_ops else None
        if geo is not None:
            w = _const(conv.input_value(1))
            if w is None or w.dtype != np.float32:
                continue
            groups, k, stride, pads = geo
            cout = w.shape[0] * (w.shape[1] if groups > 1 else 1)  # group conv: [G, 1, 1, K, K]
            w = w.reshape(cout, -1, k, k)
            last, scale, shift, folded, act, alpha, beta = _fold_chain(conv, cout)
            pool = _fused_pool(last)
            if pool is not None:
                last, pool = pool
                folded = folded + ["MaxPool"]
            wf = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
            replace.append(dict(kind="depthwise" if groups > 1 else "conv", conv=conv, last=last,
                                name=name, weight=wf, bias=shift.astype(np.float32), act=act,
                                alpha=alpha, beta=beta, folded=folded, k=k, stride=stride,
                                pads=pads, groups=groups, cin=int(w.shape[1] * groups),
                                cout=int(cout), pool=pool or []))
            continue
        if not _is_1x1(conv):
            continue
        w = _const(conv.input_value(1))
        if w is None:
            skipped.append({"name": name, "why": "weight is not a constant"})
            continue
        if conv.get_input_element_type(0).get_type_name() != "f32" or w.dtype != np.float32:
            skipped.append({"name": name, "why": f"not fp32 ({w.dtype})"})
            continue
        cout, cin = w.shape[:2]
        zf = float(np.count_nonzero(w == 0)) / w.size
        if zf < sparse_threshold:
            skipped.append({"name": name, "why": f"zero fraction {zf:.3f} < {sparse_threshold}",
                            "zero_fraction": zf})
            continue
        last, scale, shift, folded, act, alpha, beta = _fold_chain(conv, cout)
        wf = (w.reshape(cout, cin).astype(np.float64) * scale[:, None]).astype(np.float32)
        wf[w.reshape(cout, cin) == 0] = 0.0  # exact zeros stay zeros (0 * inf guard)
        replace.append(dict(kind="sparse1x1", conv=conv, last=last, name=name, weight=wf,
                            bias=shift.astype(np.float32), act=act, alpha=alpha, beta=beta,
                            zero_fraction=zf, folded=folded, cin=int(cin), cout=int(cout),
                            nlc=_nlc_parts(last, int(cout))))
    return replace, skipped


def rewrite_model(model, sparse_threshold=0.6, lib_path=None, nchw_ops=True):
    """Replace sparse 1x1 conv chains in `model` (an ov.Model, modified in place). Returns stats.

    nchw_ops: True also moves every depthwise and dense KxK conv (+BN+act, + a following max
    pool) to the picosparse Conv2d op and nearest integer upsampling to its Upsample op; False
    leaves them to OpenVINO. Why: OpenVINO runs those in a blocked or NHWC layout, so each one
    next to a sparse op (plain NCHW) gets a layout reorder on both sides (measured ~3 ms of a
    17 ms PicoDet-m, with the stem's NCHW max pool ~1 ms more).
    """
    from openvino import passes
    import openvino.opset13 as ops
    from openvino.utils.node_factory import NodeFactory

    from picosparse.ops.build import library_path
    from picosparse.ops.kernel import pack

    mgr = passes.Manager()
    mgr.register_pass(passes.ConstantFolding())  # bias Reshape(Constant) -> Constant
    mgr.run_passes(model)

    factory = NodeFactory("opset13")
    factory.add_extension(str(lib_path or library_path()))
    replace, skipped = plan_replacements(model, sparse_threshold, nchw_ops)
    layers, dense_bytes, sparse_bytes, n_dw, n_kxk, n_up, n_gates = [], 0, 0, 0, 0, 0, 0
    for r in replace:
        x = r["conv"].input_value(0)
        if r["kind"] == "upsample":
            node = factory.create(UPSAMPLE_TYPE, [x], {"factor_h": r["factors"][0],
                                                       "factor_w": r["factors"][1]})
            _swap_in(r["last"], node)
            n_up += 1
            layers.append({"kind": "upsample", "name": r["name"], "factors": list(r["factors"]),
                           "op": node.get_friendly_name()})
            continue
        act = {"activation": r["act"], "alpha": float(r["alpha"]), "beta": float(r["beta"])}
        if r["kind"] in ("depthwise", "conv"):
            weights = np.concatenate([np.ravel(r["weight"]), np.ravel(r["bias"])])
            node = factory.create(CONV_TYPE, [x, ops.constant(weights.astype(np.float32))
                                              .output(0)],
                                  {"cout": int(r["cout"]), "kernel": int(r["k"]),
                                   "groups": r["groups"], "stride": r["stride"],
                                   "pads": r["pads"], "pool": r["pool"], **act})
            _swap_in(r["last"], node)
            n_dw += r["kind"] == "depthwise"
            n_kxk += r["kind"] == "conv"
            shape = node.get_output_partial_shape(0)
            layers.append({"kind": r["kind"], "name": r["name"], "cin": r["cin"],
                           "cout": r["cout"], "groups": r["groups"],
                           "k": r["k"], "stride": r["stride"],
                           "hw": [int(d.get_length()) for d in list(shape)[2:]],
                           "folded": r["folded"], "activation": r["act"],
                           "op": node.get_friendly_name()})
            continue
        sw = pack(r["weight"], r["bias"])
        x, gate = _se_gate(x)
        se = _se_block(x, gate) if gate is not None else None
        extra, se_folded = [gate] if gate is not None else [], []
        weights = [sw.segment()]
        act.update(cout=int(r["cout"]), se_channels=0)
        if se is not None:  # the gate's convs move into this op, the squeeze with them
            extra = []
            weights += [_const(op.input_value(1)) for op in se]
            for op, role in zip(se, ("reduce", "expand")):
                a = op.get_attributes()
                act.update({f"se_{role}_activation": a["activation"],
                            f"se_{role}_alpha": float(a["alpha"]),
                            f"se_{role}_beta": float(a["beta"])})
                se_folded.append(op.get_friendly_name())
            act["se_channels"] = int(se[0].get_attributes()["cout"])
        nlc = r["nlc"] if gate is None else None
        if nlc:
            act.update(out_parts=[c for c, _, _ in nlc], out_sigmoid=[int(s) for _, s, _ in nlc])
        node = factory.create(OP_TYPE, [x, ops.constant(np.concatenate(weights)).output(0)]
                              + extra, act)
        n_gates += gate is not None
        if nlc:  # the op's outputs stand in for the transposes; split / sigmoid drop out
            node.set_friendly_name(r["last"].get_friendly_name())
            for k, (_, _, transpose) in enumerate(nlc):
                names = set(transpose.output(0).get_names())
                transpose.output(0).replace(node.output(k))
                if names:
                    node.output(k).get_tensor().set_names(names)
        else:
            _swap_in(r["last"], node)
        for layer in layers:  # the SE convs' records point at the op now running them
            if layer.get("op") in se_folded:
                layer["fused_into"] = node.get_friendly_name()
        dense_bytes += r["weight"].nbytes + r["bias"].nbytes
        sparse_bytes += sw.nbytes()
        shape = x.get_partial_shape()
        layers.append({"kind": "sparse1x1", "name": r["name"], "cout": r["cout"],
                       "cin": r["cin"],
                       "hw": [int(d.get_length()) for d in list(shape)[2:]] if shape.is_static
                       else None,
                       "zero_fraction": round(r["zero_fraction"], 4), "nnz": sw.nnz,
                       "folded": r["folded"] + (["SE gate"] if gate is not None else [])
                       + (["SE block"] if se is not None else [])
                       + ([("Split, " if len(nlc) > 1 else "")
                           + ("Sigmoid, " if any(sig for _, sig, _ in nlc) else "")
                           + "Transpose"] if nlc else []),
                       "activation": r["act"],
                       "op": node.get_friendly_name()})
    _drop_identity_scales(model)
    n_shuffles = _concat_shuffles(model, factory, layers) if nchw_ops else 0
    model.validate_nodes_and_infer_types()
    live = {op.get_friendly_name() for op in model.get_ordered_ops()}
    for layer in layers:
        if layer.get("fused_into") and layer["op"] in live:  # still read elsewhere: runs too
            del layer["fused_into"]
    blocked = _plan_blocked(model) if nchw_ops else {}
    for layer in layers:
        if layer["op"] in blocked:
            layer["layout"] = blocked[layer["op"]]
    return {"replaced": len(layers) - n_dw - n_kxk - n_up, "depthwise": n_dw, "dense_kxk": n_kxk,
            "upsample": n_up, "se_gates": n_gates,
            "blocked_tensors": sum(1 for v in blocked.values() if v["out"] == "blocked"),
            "concat_shuffles": n_shuffles,
            "kept_dense_1x1": len(skipped),
            "layers": layers,
            "skipped": skipped, "dense_1x1_weight_bytes": dense_bytes,
            "sparse_weight_bytes": sparse_bytes}


def _se_gate(x):
    """(input, gate) if `x` is Multiply(input [N, C, H, W], gate [N, C, 1, 1]) used only by the
    1x1 conv being replaced (a squeeze-excite output): the op then takes the gate and folds it
    into its weights per image, and the Multiply's pass over the whole tensor disappears.
    Otherwise (x, None)."""
    node = x.get_node()
    if node.get_type_name() != "Multiply" or len(x.get_target_inputs()) != 1:
        return x, None
    a, b = node.input_value(0), node.input_value(1)
    for full, gate in ((a, b), (b, a)):
        fs, gs = full.get_partial_shape(), gate.get_partial_shape()
        if not (fs.is_static and gs.is_static) or len(fs) != 4 or len(gs) != 4:
            continue
        fs, gs = fs.to_shape(), gs.to_shape()
        if (gs[0] == fs[0] and gs[1] == fs[1] and gs[2] == gs[3] == 1 and fs[2] * fs[3] > 1
                and gate.get_element_type().get_type_name() == "f32"):
            return full, gate
    return x, None


BLOCK_CHANNELS = 16  # the widest ISA's block: a multiple of it suits every ISA's blocks


def _is_depthwise(node):
    """A picosparse Conv2d that can write the blocked layout (spconv.h: conv_layout_error)."""
    if node.get_type_name() != CONV_TYPE:
        return False
    a = node.get_attributes()
    c = node.get_input_partial_shape(0)[1].get_length()
    return (a["groups"] == c == a["cout"] and a["kernel"] in (3, 5) and a["stride"] in (1, 2)
            and not list(a["pool"]))


def _plan_blocked(model):
    """A depthwise conv's output read only by picosparse ops goes in the blocked layout: the
    conv writes its pixels' channel vectors as computed instead of transposing them back to
    NCHW through memory (~25% of a 40x40 layer), and a sparse reader's tile packing
    transposes them in L1 at no measurable cost. (The other way round does not pay: a sparse
    1x1 writing blocked output cost 20-35% more than the depthwise conv saved.)
    Also when the conv is the last part of a channel concat that only sparse 1x1s read
    (ESNet's [pointwise, depthwise] ghost concat): OpenVINO concatenates per image as bytes,
    so the readers see the first parts NCHW, then the blocked channels (`in_nchw`).
    Returns {op name: {"in": layout, "out": layout}} for the ops touched."""
    ops_ = model.get_ordered_ops()
    live = {op.get_name() for op in ops_}  # replaced nodes can still hold edges

    def readers(output):
        return [t for t in output.get_target_inputs() if t.get_node().get_name() in live]

    def concat_prefix(t):  # channels before the conv's part if `t` is a concat's last input
        cat = t.get_node()
        if (cat.get_type_name() != "Concat" or cat.get_attributes()["axis"] % 4 != 1
                or t.get_index() != cat.get_input_size() - 1
                or not cat.get_output_partial_shape(0).is_static):
            return None
        rs = readers(cat.output(0))
        if not rs or not all(r.get_index() == 0 and r.get_node().get_type_name() == OP_TYPE
                             for r in rs):
            return None
        return cat.get_output_partial_shape(0).to_shape()[1] - \
            cat.get_input_partial_shape(t.get_index()).to_shape()[1], rs

    touched = {}

    def mark(node, side, layout):
        touched.setdefault(node.get_friendly_name(), {"in": "nchw", "out": "nchw"})[side] = \
            layout

    for node in ops_:
        shape = node.get_output_partial_shape(0) if _is_depthwise(node) else None
        if shape is None or not shape.is_static or shape.to_shape()[1] % BLOCK_CHANNELS:
            continue
        rs, prefix = readers(node.output(0)), 0
        if len(rs) == 1 and concat_prefix(rs[0]) is not None:
            prefix, rs = concat_prefix(rs[0])
        elif not rs or not all(t.get_index() == 0 and (
                t.get_node().get_type_name() == OP_TYPE or _is_depthwise(t.get_node()))
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


def _concat_shuffles(model, factory, layers):
    """Concat(a, b) on channels -> Reshape [N, 2, C, H, W] -> Transpose [0, 2, 1, 3, 4] ->
    Reshape [N, 2C, H, W] (a 2-group channel shuffle: ESNet's block output): if b is a sparse
    1x1's only output use, that op writes the shuffled tensor itself (its rows to the odd
    channels, a copied to the even ones); else one ConcatShuffle op. Either way one pass instead
    of OpenVINO's copy of a into the concat plus a shuffle pass. Returns how many; `layers`'
    records of the sparse ops that took one over say so."""
    live = {op.get_name() for op in model.get_ordered_ops()}
    by_op = {layer["op"]: layer for layer in layers}

    def sole(node):
        return _sole_consumer(node, live=live)

    def static(node):
        ps = node.get_output_partial_shape(0)
        return list(ps.to_shape()) if ps.is_static else None

    count = 0
    for cat in [op for op in model.get_ordered_ops() if op.get_type_name() == "Concat"]:
        shape = static(cat)
        if (cat.get_input_size() != 2 or shape is None or len(shape) != 4
                or cat.get_attributes()["axis"] % 4 != 1):
            continue
        a, b = cat.input_value(0), cat.input_value(1)
        if a.get_partial_shape() != b.get_partial_shape():
            continue
        n, c2, h, w = shape
        r1 = sole(cat)
        if r1 is None or r1.get_type_name() != "Reshape" or static(r1) != [n, 2, c2 // 2, h, w]:
            continue
        tr = sole(r1)
        if tr is None or not _is_transpose(tr, [0, 2, 1, 3, 4]):
            continue
        r2 = sole(tr)
        if r2 is None or r2.get_type_name() != "Reshape" or static(r2) != shape:
            continue
        conv = b.get_node()
        attrs = conv.get_attributes() if conv.get_type_name() == OP_TYPE else None
        if (attrs is not None and b.get_index() == 0 and not len(attrs["out_parts"])
                and sole(conv) is not None and _same(sole(conv), cat)):
            node = factory.create(OP_TYPE, [conv.input_value(i) for i in
                                            range(conv.get_input_size())] + [a],
                                  {**attrs, "shuffle": 1})
            node.set_friendly_name(conv.get_friendly_name())  # per-layer records name it
            names = set(r2.output(0).get_names())
            r2.output(0).replace(node.output(0))
            if names:
                node.output(0).get_tensor().set_names(names)
            if conv.get_friendly_name() in by_op:
                by_op[conv.get_friendly_name()]["folded"].append("Concat, ChannelShuffle")
        else:
            _swap_in(r2, factory.create(SHUFFLE_TYPE, [a, b], {}))
        count += 1
    return count


def _drop_identity_scales(model):
    """Bypass x * 1 and x + 0 by constants (Paddle's save_infer_model scale on every output):
    next to a picosparse op the CPU plugin runs each as a copy of the tensor."""
    for node in model.get_ordered_ops():
        t = node.get_type_name()
        if t not in ("Multiply", "Add"):
            continue
        for data, c in ((node.input_value(0), node.input_value(1)),
                        (node.input_value(1), node.input_value(0))):
            v = _const(c)
            if (v is None or not np.all(v == (1.0 if t == "Multiply" else 0.0))
                    or data.get_partial_shape() != node.get_output_partial_shape(0)
                    or data.get_element_type() != node.get_output_element_type(0)):
                continue
            names = set(node.output(0).get_names()) | set(data.get_names())
            node.output(0).replace(data)
            data.get_tensor().set_names(names)
            break


def _nlc_parts(last, cout):
    """[(channels, sigmoid?, transpose node)] if `last` (a 1x1 conv chain's end) is read only as
    channels-last parts: a VariadicSplit on the channel axis (or none), then per part an
    optional Sigmoid, a Reshape to [N, C, H*W] and a Transpose [0, 2, 1] (PicoDet's head
    outputs: class scores and box distributions); else None. The op then writes those parts."""
    shape = last.get_output_partial_shape(0)
    if not shape.is_static or len(shape) != 4:
        return None
    n, _, h, w = shape.to_shape()
    node = _sole_consumer(last)
    if node is None:
        return None
    if node.get_type_name() == "VariadicSplit":
        axis, lengths = _const(node.input_value(1)), _const(node.input_value(2))
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
        node = _sole_consumer(src, index)
        sig = node is not None and node.get_type_name() == "Sigmoid"
        if sig:
            node = _sole_consumer(node)
        if node is None or node.get_type_name() != "Reshape":
            return None
        rs = node.get_output_partial_shape(0)
        if not rs.is_static or list(rs.to_shape()) != [n, c, h * w]:
            return None
        tr = _sole_consumer(node)
        if tr is None or not _is_transpose(tr, [0, 2, 1]):
            return None
        parts.append((c, sig, tr))
    return parts


def _se_block(x, gate):
    """(reduce, expand): the two picosparse ops making `gate` as expand(reduce(ReduceMean(x)))
    over H, W (a squeeze-excite block whose squeeze reads the same x), else None. The consumer
    then runs the block itself, on its own input; the originals drop out of the graph unless
    something else still reads them (consumer counts would include replaced, dead nodes)."""
    def plain(node):  # one sparse 1x1, no gate / SE block / split outputs of its own
        if node.get_type_name() != OP_TYPE or node.get_input_size() != 2:
            return False
        a = node.get_attributes()
        return a["se_channels"] == 0 and not len(a["out_parts"])

    expand = gate.get_node()
    reduce_ = expand.input_value(0).get_node()
    if not (plain(expand) and plain(reduce_)):
        return None
    mean = reduce_.input_value(0).get_node()
    if (mean.get_type_name() != "ReduceMean"
            or not _same(mean.input_value(0).get_node(), x.get_node())
            or mean.input_value(0).get_index() != x.get_index()
            or not mean.get_attributes().get("keep_dims")):
        return None
    axes = _const(mean.input_value(1))
    if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]:
        return None
    return reduce_, expand


def _swap_in(last, node):
    """Put `node` where `last` (the end of the fused conv pattern) was, keeping its names."""
    node.set_friendly_name(last.get_friendly_name())
    names = set(last.output(0).get_names())
    last.output(0).replace(node.output(0))
    if names:
        node.output(0).get_tensor().set_names(names)


def export_x86_sparse(model_dir, out_dir, sparse_threshold=0.6, nchw_ops=True):
    """Convert MODEL_DIR/model.pdmodel into OUT_DIR/model.xml+.bin with sparse 1x1 ops.

    OUT_DIR also gets libpicosparse_ops.so (the OpenVINO extension, built for the installed
    OpenVINO), x86_sparse.json (what was replaced) and MODEL_DIR's infer_cfg.yml if any;
    `picosparse.ops.load_model(OUT_DIR)` runs it. nchw_ops: see
    rewrite_model. Raises DataError when no 1x1 conv reaches `sparse_threshold`, and checks
    that OpenVINO compiles the result; OUT_DIR is written atomically (nothing on error).
    Returns {"out_dir", "model_xml", "extension", "replaced", "depthwise", "kept_dense_1x1",
    "conv_1x1_total", "sparse_threshold", "dense_1x1_weight_bytes", "sparse_weight_bytes",
    "bin_bytes", "openvino"}.
    """
    if "paddle" in sys.modules:
        # ov.save_model of a model holding our ops segfaulted in a process that had imported
        # paddle before loading the extension (`picosparse export` has): convert in a clean one
        return _export_in_child(model_dir, out_dir, sparse_threshold, nchw_ops)
    return _export(model_dir, out_dir, sparse_threshold, nchw_ops)


def _export_in_child(model_dir, out_dir, sparse_threshold, nchw_ops):
    import subprocess
    import tempfile

    from picosparse import errors
    from picosparse.ops.build import library_path
    library_path()  # build (with its message) here, so the child finds it cached
    with tempfile.TemporaryDirectory(prefix="picosparse-x86-") as tmp:
        result = Path(tmp) / "result.json"
        args = [str(model_dir), str(out_dir), repr(float(sparse_threshold)),
                json.dumps(nchw_ops), str(result)]
        r = subprocess.run([sys.executable, "-m", "picosparse.ops.rewrite", *args],
                           capture_output=True, text=True)
        if r.returncode != 0 or not result.is_file():
            why = f"signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}"
            lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
            raise PicosparseError(f"converting {model_dir} to x86-sparse crashed ({why}): "
                                  f"{(lines[-1] if lines else 'no output')[:200]}")
        got = json.loads(result.read_text())
    if "error" in got:
        raise getattr(errors, got["type"], PicosparseError)(got["error"])
    res = got["result"]
    for k in ("out_dir", "model_xml", "extension"):
        res[k] = Path(res[k])
    return res


def _export(model_dir, out_dir, sparse_threshold, nchw_ops):
    from picosparse.ops.build import LIB_NAME, library_path, openvino_dirs

    openvino_dirs()  # a one-line StackError when openvino (or its C++ files) is missing
    import openvino as ov

    if not 0.0 <= sparse_threshold <= 1.0:
        raise DataError(f"--sparse-threshold must be in [0, 1], got {sparse_threshold}")
    src = _find_model(model_dir)
    core = ov.Core()
    try:
        model = core.read_model(str(src))
    except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
        raise DataError(f"{src}: OpenVINO cannot read it ({str(e).splitlines()[0]})") from None
    for p in model.inputs:
        if not p.get_partial_shape().is_static:
            raise DataError(f"{src}: input {p.get_any_name()} has a dynamic shape "
                            f"{p.get_partial_shape()}; export with a fixed input size")
    lib = library_path()
    try:
        stats = rewrite_model(model, sparse_threshold, lib, nchw_ops)
    except RuntimeError as e:  # OpenVINO's errors (node creation, shape inference)
        raise PicosparseError(f"{src}: rewriting it for the x86 sparse op failed in OpenVINO "
                              f"({_first_line(e)})") from e
    if stats["replaced"] == 0:
        # a model with no sparse op is only a slower dense model: refuse, before writing
        if not stats["skipped"]:
            raise DataError(f"{src}: no 1x1 convolution (stride 1, no padding, groups 1) "
                            "to make sparse")
        zfs = [s["zero_fraction"] for s in stats["skipped"] if "zero_fraction" in s]
        most = f", the sparsest {max(zfs):.1%} zeros" if zfs else ""
        raise DataError(f"--sparse-threshold {sparse_threshold}: no 1x1 conv of {src} has "
                        f"that many zeros ({len(stats['skipped'])} 1x1 convs{most}); lower "
                        "the threshold or export sparse weights")
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        ov.save_model(model, str(tmp / XML_NAME), compress_to_fp16=False)
        shutil.copy2(lib, tmp / LIB_NAME)
        cfg = src.parent / "infer_cfg.yml"
        if cfg.is_file():  # preprocessing and input size travel with the deployable model
            shutil.copy2(cfg, tmp / cfg.name)
        meta = {"source": str(src.resolve()), "sparse_threshold": sparse_threshold,
                "extension": LIB_NAME, "openvino": ov.__version__, **stats}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        _check_compiles(tmp, lib)
    return {
        "out_dir": out, "model_xml": out / XML_NAME, "extension": out / LIB_NAME,
        "replaced": stats["replaced"], "depthwise": stats["depthwise"],
        "dense_kxk": stats["dense_kxk"], "upsample": stats["upsample"],
        "se_gates": stats["se_gates"],
        "kept_dense_1x1": stats["kept_dense_1x1"],
        "conv_1x1_total": stats["replaced"] + stats["kept_dense_1x1"],
        "sparse_threshold": sparse_threshold,
        "dense_1x1_weight_bytes": stats["dense_1x1_weight_bytes"],
        "sparse_weight_bytes": stats["sparse_weight_bytes"],
        "bin_bytes": (out / "model.bin").stat().st_size, "openvino": ov.__version__,
    }


def _first_line(e):
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _check_compiles(model_dir, lib):
    """Compile the saved IR once (FP32, 1 thread) so a broken export fails here, not at deploy
    time; nothing is run (an OpenVINO crash in NMS shows up only when running)."""
    import openvino as ov

    from picosparse.ops.runtime import compile_config
    core = ov.Core()
    core.add_extension(str(lib))
    try:
        core.compile_model(str(Path(model_dir) / XML_NAME), "CPU", compile_config(1))
    except RuntimeError as e:
        raise PicosparseError(f"OpenVINO cannot compile the x86-sparse model "
                              f"({_first_line(e)})") from e


def _main(argv):
    """`python -m picosparse.ops.rewrite MODEL_DIR OUT_DIR THRESHOLD DEPTHWISE_JSON RESULT`:
    export_x86_sparse in a process without paddle; RESULT gets {"result": ...} or
    {"error": message, "type": PicosparseError subclass name}."""
    model_dir, out_dir, thr, dw, result = argv
    try:
        res = _export(model_dir, out_dir, float(thr), json.loads(dw))
        out = {"result": {k: str(v) if isinstance(v, Path) else v for k, v in res.items()}}
    except PicosparseError as e:
        out = {"error": str(e), "type": type(e).__name__}
    Path(result).write_text(json.dumps(out))


if __name__ == "__main__":
    _main(sys.argv[1:])
