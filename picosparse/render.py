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
        t.add_row(k, str(v) if v else "[red]missing[/]")
    feats = rep["cpu"]["features"]
    t.add_row("cpu", rep["cpu"]["machine"] + "  " +
              " ".join(k for k, on in feats.items() if on))
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
