"""`rewrite_model`: an OpenVINO model (read from an exported model.pdmodel) -> the same model
with picosparse's ops where they pay, everything else staying OpenVINO's own dense ops.

The passes, in order (each in its own module: match -> typed attributes -> build -> layer
record):
  node passes, matched on the whole graph first, then built in graph order:
    upsample.py    nearest integer Interpolate -> Upsample                     (nchw_ops)
    conv2d.py      depthwise / dense KxK conv + chain (+ max pool) -> Conv2d    (nchw_ops)
    sparse1x1.py   1x1 conv (>= threshold zeros, or any with dense_1x1) + chain ->
                   SparseConv1x1, with a
                   squeeze-excite gate (squeeze_excite.py) or head outputs (head.py) fused
  identity.py      x * 1, x + 0 bypassed
  shuffle.py       concat + channel shuffle into the sparse op writing it     (nchw_ops)
  layout.py        blocked tensors between depthwise and sparse ops           (nchw_ops)
A new fusion is one more module with `match(node, ctx)` returning an object with `build(ctx)`
(listed in NODE_PASSES), or a whole-graph pass like shuffle.py, plus a test.
"""

from dataclasses import dataclass, field

from picosparse.sparsity import SPARSE_THRESHOLD
from picosparse.x86.convert import conv2d, identity, layout, shuffle, sparse1x1, upsample

NODE_PASSES = (upsample, conv2d, sparse1x1)  # the first whose match claims a node builds it


@dataclass
class Context:
    """What the passes share: the node factory (with picosparse's ops), the options, the
    records built so far and the totals."""

    factory: object
    ops: object  # openvino.opset13
    sparse_threshold: float
    nchw_ops: bool
    dense_1x1: bool = True
    records: list = field(default_factory=list)
    dense_bytes: int = 0
    sparse_bytes: int = 0
    gates: int = 0

    def record(self, op):
        """The layer record of the picosparse op named `op`, or None."""
        return next((r for r in self.records if r.op == op), None)


def plan(model, ctx):
    """(matches to build, in graph order; Skipped 1x1 convs): nothing is modified."""
    matches, skipped = [], []
    for node in model.get_ordered_ops():
        for p in NODE_PASSES:
            m = p.match(node, ctx)
            if m is not None:
                (skipped if isinstance(m, sparse1x1.Skipped) else matches).append(m)
                break
    return matches, skipped


def rewrite_model(model, sparse_threshold=SPARSE_THRESHOLD, lib_path=None, nchw_ops=True,
                  dense_1x1=True):
    """Replace what the passes match in `model` (an ov.Model, modified in place). Returns
    stats: counts per kind, "layers" (the records, as JSON), "skipped" 1x1 convs with why,
    and the 1x1 weight bytes dense / sparse.

    nchw_ops: True also moves every depthwise and dense KxK conv (+BN+act, + a following max
    pool) to the picosparse Conv2d op and nearest integer upsampling to its Upsample op; False
    leaves them to OpenVINO (see conv2d.py for why they move). dense_1x1: 1x1 convs below the
    threshold run the sparse op too, with all their weights (sparse1x1.py); False leaves them
    to OpenVINO.
    """
    from openvino import passes
    import openvino.opset13 as ops
    from openvino.utils.node_factory import NodeFactory

    from picosparse.x86.build import library_path

    mgr = passes.Manager()
    mgr.register_pass(passes.ConstantFolding())  # bias Reshape(Constant) -> Constant
    mgr.run_passes(model)

    factory = NodeFactory("opset13")
    factory.add_extension(str(lib_path or library_path()))
    ctx = Context(factory, ops, sparse_threshold, nchw_ops, dense_1x1)
    matches, skipped = plan(model, ctx)
    for m in matches:
        ctx.records.append(m.build(ctx))
    identity.drop_identity_scales(model)
    n_shuffles = shuffle.fuse(model, ctx) if nchw_ops else 0
    model.validate_nodes_and_infer_types()
    live = {op.get_friendly_name() for op in model.get_ordered_ops()}
    for r in ctx.records:
        if getattr(r, "fused_into", None) and r.op in live:  # still read elsewhere: runs too
            r.fused_into = None
    blocked = layout.plan_blocked(model) if nchw_ops else {}
    for r in ctx.records:
        if r.op in blocked:
            r.layout = blocked[r.op]
    kinds = [r.kind for r in ctx.records]
    below = sum(1 for r in ctx.records if getattr(r, "below_threshold", None))
    return {"replaced": kinds.count("sparse1x1") - below, "dense_1x1_on_op": below,
            "depthwise": kinds.count("depthwise"),
            "dense_kxk": kinds.count("conv"), "upsample": kinds.count("upsample"),
            "se_gates": ctx.gates,
            "blocked_tensors": sum(1 for v in blocked.values() if v["out"] == "blocked"),
            "concat_shuffles": n_shuffles,
            "kept_dense_1x1": len(skipped),
            "layers": [r.to_json() for r in ctx.records],
            "skipped": [s.to_json() for s in skipped],
            "dense_1x1_weight_bytes": ctx.dense_bytes,
            "sparse_weight_bytes": ctx.sparse_bytes}
