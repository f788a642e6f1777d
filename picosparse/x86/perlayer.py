"""Per-layer timing of an x86-sparse model against the dense model it was made from.

For every node the rewrite replaced (a sparse 1x1 conv chain, a depthwise or KxK conv chain, an
upsampling) the
OpenVINO PERF_COUNT time of our op is set beside the time of the dense node that ran the same
chain, plus a bound: what the 1x1 convs would take if they got exactly faster by the fraction
of their weights that is zero. `benchmarks/x86_sparse.py --per-layer` and `picosparse bench
--per-layer` both call `per_layer` here.
"""

import json
from pathlib import Path

import numpy as np

from picosparse.deploy import sigstack
from picosparse.errors import DataError

WARMUP = 3


def dense_model_of(sparse_dir):
    """model.pdmodel the x86-sparse export in SPARSE_DIR was made from.

    OUT/x86_sparse's parent first (folders move together), else the source recorded in
    x86_sparse.json."""
    from picosparse.x86.runtime import read_meta
    d = Path(sparse_dir)
    meta = read_meta(d, "--per-layer")
    cands = [d.parent / "model.pdmodel"]
    if meta.get("source"):
        cands.append(Path(meta["source"]))
    for c in cands:
        if c.is_file() and c.suffix == ".pdmodel":
            return c
    raise DataError(f"--per-layer: {d}: the dense model it was made from is gone "
                    f"(looked for {', '.join(map(str, cands))})")


def _feed(compiled, inputs):
    """Only the inputs this model has; integer keys are positional (the benchmark's {0: x})."""
    names = {i.get_any_name() for i in compiled.inputs}
    return {k: v for k, v in inputs.items() if isinstance(k, int) or k in names}


def _profile(compiled, req, inputs, reps):
    """{node name: median ms}, {node name: node type} over `reps` profiled inferences."""
    acc, kinds = {}, {}
    feed = _feed(compiled, inputs)
    for i in range(reps + WARMUP):
        req.infer(feed)
        if i < WARMUP:
            continue
        for p in req.get_profiling_info():
            acc.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
            kinds[p.node_name] = p.node_type
    return {k: float(np.median(v)) for k, v in acc.items()}, kinds


def per_layer(dense_model, sparse_dir, inputs, threads=1, reps=20):
    """Per replaced layer: OpenVINO's dense node time vs the picosparse op time (ms).

    dense_model: the source model.pdmodel (or a folder holding it); inputs: {name or index:
    array}. Returns (rows, summary): rows are x86_sparse.json's layer records plus dense_ms,
    sparse_ms, speedup and (1x1 only) ideal_speedup = 1 / density; summary has model totals
    of the profiles and `bound_speedup`, the model speed-up if every sparse 1x1 ran exactly
    density x its dense time and nothing else changed.
    """
    import openvino as ov

    from picosparse.x86.runtime import META_NAME, compile_config, load_model

    dense_model = Path(dense_model)
    if dense_model.is_dir():
        dense_model = dense_model / "model.pdmodel"
    sparse_dir = Path(sparse_dir)
    meta = json.loads((sparse_dir / META_NAME).read_text())
    core = ov.Core()
    with sigstack.kept():
        dense_c = core.compile_model(core.read_model(str(dense_model)), "CPU",
                                     compile_config(threads, True, "f32"))
    # the CPU plugin fuses conv+BN+act into one node named after an internal node; its runtime
    # graph lists the original names, among them the one our op took (the chain's last node)
    owner = {}
    for op in dense_c.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "originalLayersNames" in info:
            for name in info["originalLayersNames"].astype(str).split(","):
                owner[name] = op.get_friendly_name()
    sparse = load_model(sparse_dir, threads, perf_counters=True)
    pd, dkinds = _profile(dense_c, dense_c.create_infer_request(), inputs, reps)
    ps, _ = _profile(sparse.compiled, sparse.request, inputs, reps)

    rows = []
    for layer in meta["layers"]:
        # the dense runtime nodes that ran this chain (the stem's conv and its max pool are two)
        nodes = {owner.get(n, n) for n in (layer["name"], layer["op"])}
        td = sum(pd[n] for n in nodes if n in pd) if nodes & pd.keys() else None
        # a squeeze-excite conv runs inside its consumer's op: its time is in that op's
        tsp = None if layer.get("fused_into") else ps.get(layer["op"])
        row = dict(layer, dense_ms=td, sparse_ms=tsp,
                   speedup=td / tsp if td and tsp else None)
        if layer["kind"] == "sparse1x1":
            density = 1.0 - layer["zero_fraction"]
            row["ideal_speedup"] = 1.0 / density if density > 0 else None
        rows.append(row)
    ours = {l["op"] for l in meta["layers"]}
    total_dense, total_sparse = sum(pd.values()), sum(ps.values())
    sp1 = [r for r in rows if r["kind"] == "sparse1x1" and r["dense_ms"] is not None]
    replaced_dense = sum(r["dense_ms"] for r in sp1)
    ideal = sum(r["dense_ms"] * (1.0 - r["zero_fraction"]) for r in sp1)
    bound_ms = total_dense - replaced_dense + ideal
    summary = {
        "threads": int(threads), "reps": int(reps),
        "dense_total_ms": total_dense, "x86_sparse_total_ms": total_sparse,
        "profile_speedup": total_dense / total_sparse if total_sparse else None,
        "dense_1x1_ms": sum(v for k, v in pd.items() if dkinds[k] == "Convolution"),
        "dense_depthwise_ms": sum(v for k, v in pd.items() if dkinds[k] == "GroupConvolution"),
        "dense_replaced_1x1_ms": replaced_dense,
        "sparse_1x1_ms": sum(r["sparse_ms"] or 0 for r in rows if r["kind"] == "sparse1x1"),
        "ideal_sparse_1x1_ms": ideal,
        "picosparse_depthwise_ms": sum(r["sparse_ms"] or 0 for r in rows
                                       if r["kind"] == "depthwise"),
        "picosparse_other_ops_ms": sum(r["sparse_ms"] or 0 for r in rows
                                       if r["kind"] in ("conv", "upsample")),
        "x86_sparse_other_ms": sum(v for k, v in ps.items() if k not in ours),
        "bound_ms": bound_ms,
        "bound_speedup": total_dense / bound_ms if bound_ms > 0 else None,
        "unmatched_layers": sum(1 for r in rows if r["dense_ms"] is None
                                or (r["sparse_ms"] is None and not r.get("fused_into"))),
    }
    summary["dense_other_ms"] = (total_dense - summary["dense_1x1_ms"]
                                 - summary["dense_depthwise_ms"])
    return rows, summary


def layer_shape(layer):
    """'Cin->Cout@HxW' of a sparse 1x1 layer, 'Cc kKsS@HxW' of a depthwise one, 'Cin->Cout
    kKsS@HxW' of a dense KxK one (+pool), 'x2x2' of an upsampling (HxW: the output)."""
    hw = "x".join(map(str, layer.get("hw") or ["?", "?"]))
    if layer["kind"] == "sparse1x1":
        return f"{layer['cin']}->{layer['cout']}@{hw}"
    if layer["kind"] == "upsample":
        return "x" + "x".join(map(str, layer.get("factors", [])))
    geo = f"k{layer['k']}s{layer['stride']}@{hw}"
    if layer["kind"] == "conv":
        pool = "+pool" if "MaxPool" in layer.get("folded", []) else ""
        return f"{layer['cin']}->{layer['cout']} {geo}{pool}"
    return f"{layer['cout']}c {geo}"
