"""Rich tables for the terminal. Library code returns data; this turns it into tables."""

from rich.console import Console
from rich.table import Table


def _out():
    # CI logs are not terminals; rich would wrap tables at 80 columns there
    import sys
    return Console() if sys.stdout.isatty() else Console(width=160)


def env_table(rep):
    t = Table(title="picosparse env", show_header=True)
    t.add_column("component")
    t.add_column("version / value")
    for k, v in rep["versions"].items():
        if v or k not in ("paddlepaddle", "paddlepaddle-gpu"):  # one of the two is enough
            t.add_row(k, str(v) if v else "[red]missing[/]")
    feats = rep["cpu"]["features"]
    t.add_row("cpu", f"{feats.get('model') or rep['cpu']['machine']}  " +
              " ".join(k for k, on in feats.items() if on is True))
    dev = rep.get("device")
    if dev:
        t.add_row("paddle build", f"{dev['paddle_build']}, {dev['gpus']} GPU(s) visible")
        t.add_row("--device auto", f"{dev['auto']} ({dev['auto_reason']})")
    _out().print(t)
    c = Table(show_header=True)
    c.add_column("check")
    c.add_column("")
    c.add_column("detail")
    for ch in rep["checks"]:
        c.add_row(ch["name"], "[green]ok[/]" if ch["ok"] else "[red]FAIL[/]", ch["detail"])
    _out().print(c)


def table(title, columns, rows):
    """A generic table: columns are headers, rows lists of cells (already formatted)."""
    t = Table(title=title, show_header=True)
    for col in columns:
        t.add_column(col, justify="right" if col[:1].isupper() is False else "left")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    _out().print(t)


def layers_table(rows, show_all=False):
    t = Table(title="parameters (pruned first)" if not show_all else "parameters")
    for col, just in (("name", "left"), ("shape", "left"), ("params", "right"),
                      ("decision", "left"), ("zeros", "right")):
        t.add_column(col, justify=just)
    shown = rows if show_all else [r for r in rows if r["pruned"] or len(r["shape"]) > 1]
    for r in sorted(shown, key=lambda r: not r["pruned"]):
        dec = "[green]pruned[/]" if r["pruned"] else f"[dim]{r['reason'].replace('skip rule ', 'rule ')}[/]"
        t.add_row(r["name"], "x".join(map(str, r["shape"])), f"{r['numel']:,}", dec,
                  f"{r['zeros']:.1%}")
    _out().print(t)
    pruned = [r for r in rows if r["pruned"]]
    n_all = sum(r["numel"] for r in rows)
    n_pr = sum(r["numel"] for r in pruned)
    z = sum(r["zeros"] * r["numel"] for r in pruned) / n_pr if n_pr else 0.0
    _out().print(f"{len(pruned)} of {len(rows)} parameters pruned: {n_pr:,} of {n_all:,} "
                 f"weights ({n_pr / n_all:.1%}); zeros in pruned: {z:.1%}")


def train_summary(res):
    t = Table(title=f"train -> {res['out']}")
    t.add_column("")
    t.add_column("")
    t.add_row("final weights", str(res["weights"]))
    t.add_row("epochs / iterations", f"{res['epochs']} / {res['iters']}")
    if res.get("sparsity") is not None:
        t.add_row("sparsity (pruned params)", f"{res['sparsity']:.2%} (target {res['target']:.0%},"
                  f" min layer {res['min_layer_sparsity']:.2%})")
    bs = res.get("block_sparsity")
    if bs and bs.get("overall") is not None:
        t.add_row(f"all-zero {bs['block'][0]}x{bs['block'][1]} blocks", f"{bs['overall']:.2%}")
    if res.get("best"):
        b = res["best"]
        t.add_row("best mAP", f"{b['mAP']:.4f} (mAP50 {b['mAP50']:.4f}) at epoch {b['epoch']}")
    t.add_row("time", f"{res['seconds']:.0f} s")
    _out().print(t)


def metrics_table(m, title="COCO bbox"):
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"):
        t.add_row(k, f"{m[k]:.4f}")
    sp = m.get("sparsity") or {}
    if sp.get("overall") is not None:
        t.add_row("sparsity (pruned params)", f"{sp['overall']:.2%}")
    _out().print(t)


def report_table(report):
    """The seed-style table of a report.json (picosparse.steps.report.table)."""
    from picosparse.steps.report import table as report_rows
    cols, rows = report_rows(report)
    t = Table(title=f"{report['pipeline']}: {report['runtime'] or 'no'} runtime, "
                    f"speed-up vs {report['baseline']}", show_header=True)
    for i, col in enumerate(cols):  # headers may wrap; numbers never get cut
        t.add_column(col, justify="left" if i < 2 else "right",
                     min_width=max([len(r[i]) for r in rows] + [4]))
    for r in rows:
        t.add_row(*r)
    _out().print(t)


def _plan_lines(key, sym, res, indent):
    """Resolved values, but a whole `${steps.X}` stays symbolic (its outputs are long)."""
    pad = " " * indent
    if isinstance(res, (dict, list)) and isinstance(sym, str):
        return [f"{pad}{key}: {sym}"]
    if isinstance(res, dict):
        lines = [f"{pad}{key}:"]
        for k, v in res.items():
            lines += _plan_lines(k, (sym or {}).get(k, v) if isinstance(sym, dict) else v, v,
                                 indent + 2)
        return lines
    if isinstance(res, list) and res and all(not isinstance(v, (dict, list)) for v in res):
        return [f"{pad}{key}:"] + [f"{pad}  - {v}" for v in res]
    return [f"{pad}{key}: {str(res).lower() if isinstance(res, bool) else res}"]


def pipeline_plan(result):
    """--dry-run: per step what it would do and why, its resolved params and input hashes."""
    out = _out()
    out.print(f"[bold]{result.pipeline.path}[/] -> {result.run_dir}  (dry run: nothing runs)",
              highlight=False)
    colour = {"run": "yellow", "cached": "green", "skip": "dim"}
    for sp in result.steps:
        out.print(f"\n[bold]{sp.name}[/] ({sp.kind}): [{colour[sp.action]}]{sp.action}[/] "
                  f"- {sp.reason}", highlight=False)
        resolved = sp.resolved or sp.params
        for k, sym in sp.params.items():
            if resolved.get(k) not in (None, [], {}):
                for line in _plan_lines(k, sym, resolved[k], 4):
                    out.print(line, highlight=False, markup=False)
        for k, h in (sp.inputs or {}).items():
            out.print(f"    input {k}: sha256:{h[:12]}", highlight=False, markup=False)
    counts = {a: sum(sp.action == a for sp in result.steps) for a in ("run", "cached", "skip")}
    out.print(f"\nwould run {counts['run']}, skip {counts['cached']} cached"
              + (f", {counts['skip']} not selected" if counts["skip"] else ""), highlight=False)


def run_summary(result):
    _out().print(f"picosparse run {result.pipeline.path} -> {result.run_dir}", highlight=False)
    t = Table(show_header=True)
    for col in ("step", "kind", "action", "seconds"):
        t.add_column(col, justify="right" if col == "seconds" else "left")
    for sp in result.steps:
        action = {"run": "ran", "cached": "cached", "skip": "not selected"}[sp.action]
        t.add_row(sp.name, sp.kind, action, "-" if sp.seconds is None else f"{sp.seconds:.1f}")
    _out().print(t)
    if result.report:
        report_table(result.report)
        _out().print(f"report: {result.run_dir / 'report.md'}", highlight=False)


def _pct_ratio(gain, ratio):
    if gain is None:
        return "-"
    return f"{gain:+.0%} ({ratio:.2f}x)"


def bench_table(res):
    """The seed's table: model, input size, sparsity, size, latency and speed-up per thread."""
    basis = res.get("basis", "median")
    t = Table(title=f"bench: {res['runtime_label']}, {res['precision']}, "
                    f"{res['repeats']} runs ({basis} ms{', p90' if basis == 'median' else ''})")
    t.add_column("Model", justify="left")
    t.add_column("Input size", justify="right")
    t.add_column("Precision", justify="right")
    t.add_column("1x1 zeros", justify="right")
    kinds = {m["size_kind"] for m in res["models"]}
    t.add_column("Size (MB)" + {frozenset({"nb"}): " .nb",
                                frozenset({"pdmodel+pdiparams"}): " paddle"}.get(
        frozenset(kinds), ""), justify="right")
    for th in res["threads"]:
        label = f"{th} thread" + ("s" if th != 1 else "")
        t.add_column(f"Latency {label} (ms)", justify="right")
        t.add_column(f"speed-up {label}", justify="right")
    for i, m in enumerate(res["models"]):
        zf = m.get("conv1x1_zero_fraction")
        row = [m["name"] + (" (base)" if i == 0 else ""),
               f"{m['input_size']}*{m['input_size']}", m.get("precision") or "-",
               f"{zf:.0%}" if zf is not None else "-", f"{m['size_bytes'] / 1e6:.2f}"]
        for th in res["threads"]:
            lat = m["latency_ms"].get(str(th)) or {}
            v = lat.get(basis)
            cell = "-" if v is None else f"{v:.2f}"
            if lat.get("p90") is not None and basis == "median":
                cell += f" (p90 {lat['p90']:.2f})"
            row += [cell, _pct_ratio(m["speedup_fps_gain"].get(str(th)),
                                     m["speedup_ratio"].get(str(th)))]
        t.add_row(*row)
    out = _out()
    out.print(t)
    out.print("speed-up = (base - this) / this, the seed's FPS gain; (x) = base / this")
    for n in res.get("notes", []):
        out.print(f"note: {n}", highlight=False)


def per_layer_tables(res):
    """bench --per-layer: per x86-sparse model, each replaced layer's dense vs sparse-op time
    per thread count, and how far the whole model is from its bound."""
    from picosparse.x86.perlayer import layer_shape
    out = _out()

    def ms(v):
        return "-" if v is None else f"{v:.3f}"

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    for m in res["models"]:
        pl = m.get("per_layer")
        if not pl:
            continue
        keys = list(pl)
        t = Table(title=f"per layer: {m['name']} vs the dense nodes it replaced "
                        f"(OpenVINO PERF_COUNT medians, ms)")
        for col in ("#", "kind", "shape", "zeros"):
            t.add_column(col, justify="left" if col in ("kind", "shape") else "right")
        for k in keys:
            sfx = f" {k}t"
            t.add_column("dense" + sfx, justify="right")
            t.add_column("sparse" + sfx, justify="right")
            t.add_column("x" + sfx, justify="right")
        t.add_column("ideal x", justify="right")
        first = pl[keys[0]]["layers"]
        for i, layer in enumerate(first):
            zf = layer.get("zero_fraction")
            row = [str(i), layer["kind"], layer_shape(layer), "-" if zf is None else f"{zf:.0%}"]
            for k in keys:
                r = pl[k]["layers"][i]
                row += [ms(r["dense_ms"]), ms(r["sparse_ms"]), x(r["speedup"])]
            row.append(x(layer.get("ideal_speedup")))
            t.add_row(*row)
        out.print(t)
        for k in keys:
            s = pl[k]["summary"]
            out.print(
                f"{k} thread{'s' * (k != '1')}: dense {s['dense_total_ms']:.2f} ms (1x1 it "
                f"replaced {s['dense_replaced_1x1_ms']:.2f}) -> x86-sparse "
                f"{s['x86_sparse_total_ms']:.2f} ms (sparse 1x1 {s['sparse_1x1_ms']:.2f}, ideal "
                f"{s['ideal_sparse_1x1_ms']:.2f}; depthwise {s['picosparse_depthwise_ms']:.2f}; "
                f"stem/upsample {s.get('picosparse_other_ops_ms', 0):.2f}; "
                f"other {s['x86_sparse_other_ms']:.2f}): {x(s['profile_speedup'])} of a "
                f"{x(s['bound_speedup'])} bound", highlight=False)
        out.print("ideal x = 1 / (1 - zeros): the speed-up if time fell with the nonzeros; the "
                  "bound = the model's speed-up if every sparse 1x1 reached it", highlight=False)


def infer_table(res):
    """`picosparse infer`: one row per detection (an image without any gets one dash row)."""
    from pathlib import Path
    out = _out()
    out.print(f"infer: {res['model']} ({res['kind']} model, {res['runtime']} runtime, "
              f"{res['input_size']}x{res['input_size']}), score >= {res['threshold']:g}",
              highlight=False)
    t = Table()
    for col, just in (("image", "left"), ("label", "left"), ("score", "right"),
                      ("box x1, y1, x2, y2", "right"), ("ms", "right")):
        t.add_column(col, justify=just)
    for im in res["images"]:
        name = Path(im["image"]).name
        dets = im["detections"] or [None]
        for i, d in enumerate(dets):
            first = i == 0
            t.add_row(name if first else "", d["label"] if d else "-",
                      f"{d['score']:.3f}" if d else "-",
                      ", ".join(f"{v:.1f}" for v in d["box"]) if d else "-",
                      f"{im['ms']:.1f}" if first else "")
    out.print(t)
    n = sum(len(im["detections"]) for im in res["images"])
    written = [im["output"] for im in res["images"] if im.get("output")]
    out.print(f"{n} detection(s) in {len(res['images'])} image(s)"
              + (f"; drawn copies in {res['out']}" if written else ""), highlight=False)
