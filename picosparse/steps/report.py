"""The run report: report.md, report.json and PNG plots, from recorded step outputs only.

report.json (CI scripts read it; `validate` checks it against REPORT_SCHEMA):

    {
      "pipeline": str,                # title (default: the pipeline's name)
      "created": str,                 # ISO 8601, UTC
      "machine": {"platform": str, "machine": str, "cpu": str|null, "cpus": int|null,
                  "python": str},
      "runtime": str|null,            # bench runtime: paddle | lite | openvino (null: no bench)
      "precision": str|null,          # as reported by bench, e.g. fp32
      "threads": [int],               # thread counts benchmarked
      "baseline": str,                # the dense variant every speed-up is measured against
      "variants": [{
        "name": str,                  # variant name in the pipeline, e.g. dense, sparse75
        "model": str|null,            # label, e.g. PicoDet-m-1.0
        "input_size": int|null,       # exported input side (square)
        "precision": str|null,        # of the deployed model: fp32 | int8 (fp16)
        "quantization": str|null,     # how an INT8 model was made, e.g. "PTQ hist, 32 images"
        "sparsity": number|null,      # zero fraction of the pruned weights (0..1)
        "mAP": number|null,           # COCO bbox mAP@[.5:.95] (0..1)
        "mAP50": number|null,         # COCO bbox mAP@.5 (0..1)
        "nb_size_bytes": int|null,    # Paddle-Lite .nb file size
        "sparse_conv2d": int|null,    # 1x1 convs turned into sparse_conv2d by opt
        "sparse_conv2d_precision": str|null,  # their kernels' precision, read from the .nb
        "latency_ms": {"1": number|null, ...},        # median per thread count
        "speedup_fps_gain": {"1": number|null, ...},  # (base - this) / this: the seed's column
        "speedup_ratio": {"1": number|null, ...}      # base / this
      }],
      "notes": [str],                 # from bench (e.g. which runtime has sparse kernels)
      "plots": [str]                  # PNG paths relative to the run dir
    }

Thread-count keys are strings (JSON object keys); null means that step did not run.
"""

import datetime
import json
import os
import platform
from pathlib import Path

from picosparse.atomic import atomic_dir, atomic_path, write_json, write_text

_NUM = ["number", "null"]
_INT = ["integer", "null"]
_PER_THREAD = {"type": "object", "additionalProperties": {"type": _NUM}}
REPORT_SCHEMA = {
    "type": "object",
    "required": ["pipeline", "created", "machine", "runtime", "threads", "baseline", "variants",
                 "plots"],
    "properties": {
        "pipeline": {"type": "string"},
        "created": {"type": "string"},
        "machine": {"type": "object", "required": ["platform", "machine", "cpus", "python"]},
        "runtime": {"type": ["string", "null"]},
        "precision": {"type": ["string", "null"]},
        "threads": {"type": "array", "items": {"type": "integer"}},
        "baseline": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "plots": {"type": "array", "items": {"type": "string"}},
        "variants": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["name", "sparsity", "mAP", "nb_size_bytes", "latency_ms",
                         "speedup_fps_gain"],
            "properties": {
                "name": {"type": "string"},
                "model": {"type": ["string", "null"]},
                "input_size": {"type": _INT},
                "precision": {"type": ["string", "null"]},
                "quantization": {"type": ["string", "null"]},
                "sparsity": {"type": _NUM, "minimum": 0, "maximum": 1},
                "mAP": {"type": _NUM, "minimum": 0, "maximum": 1},
                "mAP50": {"type": _NUM, "minimum": 0, "maximum": 1},
                "nb_size_bytes": {"type": _INT, "minimum": 0},
                "sparse_conv2d": {"type": _INT},
                "sparse_conv2d_precision": {"type": ["string", "null"]},
                "latency_ms": _PER_THREAD,
                "speedup_fps_gain": _PER_THREAD,
                "speedup_ratio": _PER_THREAD,
            }}},
    },
}
_PY = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
       "array": list, "object": dict, "null": type(None)}


def validate(obj, schema=REPORT_SCHEMA, where="$"):
    """The JSON-Schema subset above (type, required, properties, additionalProperties, items,
    minItems, minimum, maximum) -> a list of "path: problem" strings; empty when valid."""
    errors = []
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types or []
    if types and not any(isinstance(obj, _PY[t]) and not (isinstance(obj, bool) and t != "boolean")
                         for t in types):
        return [f"{where}: expected {' or '.join(types)}, got {type(obj).__name__}"]
    if isinstance(obj, dict):
        for k in schema.get("required", []):
            if k not in obj:
                errors.append(f"{where}: missing '{k}'")
        props = schema.get("properties", {})
        for k, v in obj.items():
            sub = props.get(k, schema.get("additionalProperties"))
            if sub:
                errors += validate(v, sub, f"{where}.{k}")
    if isinstance(obj, list):
        if len(obj) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} item(s)")
        for i, v in enumerate(obj):
            errors += validate(v, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema and obj < schema["minimum"]:
            errors.append(f"{where}: {obj} is below {schema['minimum']}")
        if "maximum" in schema and obj > schema["maximum"]:
            errors.append(f"{where}: {obj} is above {schema['maximum']}")
    return errors


# ------------------------------------------------------------------ building

def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), None)
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version()}


def _median(v):
    return v.get("median") if isinstance(v, dict) else v


def _quantization(q):
    """"PTQ hist, 32 images" / "QAT, 1 epoch" / "NNCF, 32 images" from quant/qat outputs."""
    if not q:
        return None
    if q.get("algo") == "qat":
        n = q.get("epochs")
        return "QAT" + (f", {n} epoch{'s' * (n != 1)}" if n else "")
    how = "NNCF" if q.get("backend") == "openvino" else f"PTQ {q.get('algo')}"
    n = q.get("calib_images")
    return how + (f", {n} images" if n else "")


def _precision(v, op, q, timed):
    """The variant's precision as given, else what its .nb, quantization, timing run or eval
    run report (bf16 asked on a CPU without it runs, and says, fp32)."""
    if v.get("precision"):
        return v["precision"]
    for src in (op, q, timed, v.get("eval") or {}):
        if src.get("precision"):
            return src["precision"]
    return "fp32" if (v.get("eval") or v.get("export") or op) else None


def _sparse_precision(op):
    got = ((op.get("conv_precisions") or {}).get("sparse_conv2d")) or {}
    return "/".join(sorted(got)) or None


def make_report(variants, bench=None, baseline=None, title="picosparse"):
    """variants: {name: {"model", "eval": eval outputs, "export", "opt", "quant": quant or
    qat outputs, "precision", "input_size"}}; bench: bench-step outputs with `models` keyed by
    variant name. Pure: no files."""
    bench = bench or {}
    baseline = baseline or next(iter(variants))
    threads = [int(t) for t in bench.get("threads") or []]
    rows = []
    for name, v in variants.items():
        ev, ex, op = v.get("eval") or {}, v.get("export") or {}, v.get("opt") or {}
        q = v.get("quant") or {}
        timed = (bench.get("models") or {}).get(name) or {}
        lat_src = timed.get("latency_ms") or {}
        rows.append({
            "name": name, "model": v.get("model"),
            "input_size": v.get("input_size") or ex.get("input_size") or ev.get("input_size"),
            "precision": _precision(v, op, q, timed), "quantization": _quantization(q),
            "sparsity": (ev.get("sparsity") or {}).get("overall"),
            "mAP": ev.get("mAP"), "mAP50": ev.get("mAP50"),
            "nb_size_bytes": op.get("size_bytes"), "sparse_conv2d": op.get("sparse_conv2d"),
            "sparse_conv2d_precision": _sparse_precision(op),
            "latency_ms": {str(t): _median(lat_src.get(str(t))) for t in threads},
        })
    base = next(r for r in rows if r["name"] == baseline)
    bench_models = bench.get("models") or {}
    # bench's own ratios (median of per-round paired ratios) when it timed against the same
    # baseline; else the ratio of the medians
    paired = next(iter(bench_models), None) == baseline
    for r in rows:
        r["speedup_fps_gain"], r["speedup_ratio"] = {}, {}
        for t, lat in r["latency_ms"].items():
            b = base["latency_ms"].get(t)
            ok = lat and b
            ratio = ((bench_models.get(r["name"]) or {}).get("speedup_ratio") or {}).get(t) \
                if paired and ok else None
            ratio = ratio or (b / lat if ok else None)
            r["speedup_fps_gain"][t] = ratio - 1 if ratio else None
            r["speedup_ratio"][t] = ratio
    notes = list(bench.get("notes") or [])
    untimed = [r["name"] for r in rows if r["precision"] == "int8" and threads
               and not any(r["latency_ms"].values())]
    if untimed:
        notes.append(f"{', '.join(untimed)}: INT8 for Paddle-Lite's ARM kernels, not timed "
                     "here: on x86, Paddle Inference runs PaddleSlim's INT8 models as FP32 "
                     "plus quantize/dequantize ops (slower than FP32); time the .nb files on a "
                     "board with `picosparse bench --adb`")
    return {"pipeline": title,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "runtime": bench.get("runtime"),
            "precision": bench.get("precision"), "threads": threads, "baseline": baseline,
            "variants": rows, "notes": notes, "plots": []}


# ------------------------------------------------------------------ rendering

def _pct(x, signed=False):
    return "-" if x is None else (f"{x * 100:+.0f}%" if signed else f"{x * 100:.0f}%")


def _num(x, fmt):
    return "-" if x is None else format(x, fmt)


def _threads_label(t):
    return f"{t} thread" + ("" if int(t) == 1 else "s")


def table(report):
    """(columns, rows) of the seed-style table, cells as text; shared by report.md and the
    terminal. Speed-up cells: FPS gain (the seed's) and the latency ratio."""
    cols = ["Variant", "Model", "Input size", "Precision", "Sparsity", "mAP (0.5:0.95)", "mAP50",
            "Size .nb (MB)", "Sparse convs (.nb)"]
    for t in report["threads"]:
        cols += [f"Latency {_threads_label(t)} (ms)", f"Speed-up {_threads_label(t)}"]
    rows = []
    for v in report["variants"]:
        size = v.get("input_size")
        prec = (v.get("precision") or "-").upper()
        if v.get("quantization"):
            prec += f" ({v['quantization']})"
        n_sp = v.get("sparse_conv2d")
        sp_cell = "-" if n_sp is None else str(n_sp) + (
            f" {v['sparse_conv2d_precision'].upper()}" if n_sp and
            v.get("sparse_conv2d_precision") else "")
        row = [v["name"], v.get("model") or "-", f"{size}*{size}" if size else "-", prec,
               _pct(v["sparsity"]), _num(v["mAP"] and v["mAP"] * 100, ".1f"),
               _num(v.get("mAP50") and v["mAP50"] * 100, ".1f"),
               _num(v["nb_size_bytes"] and v["nb_size_bytes"] / 1e6, ".2f"), sp_cell]
        for t in report["threads"]:
            t = str(t)
            gain, ratio = v["speedup_fps_gain"].get(t), (v.get("speedup_ratio") or {}).get(t)
            row += [_num(v["latency_ms"].get(t), ".2f"),
                    "-" if gain is None else f"{_pct(gain, True)} ({ratio:.2f}x)"]
        rows.append(row)
    return cols, rows


def markdown(report):
    cols, rows = table(report)
    m = report["machine"]
    lines = [f"# picosparse report: {report['pipeline']}", "",
             f"Created {report['created']} on {m.get('cpu') or m['machine']} "
             f"({m['cpus']} CPUs), runtime {report['runtime'] or '-'} "
             f"{report.get('precision') or ''}, "
             f"threads {', '.join(map(str, report['threads'])) or '-'}.",
             "", "| " + " | ".join(cols) + " |",
             "|" + "|".join([" :--- "] + [" :---: "] * (len(cols) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Speed-up against `{report['baseline']}`: FPS gain "
              "(dense - sparse) / sparse, as in the seed table, and the ratio dense / sparse. "
              "mAP is COCO bbox mAP in percent (of the exported file where the eval step read "
              "a model folder); size is the Paddle-Lite .nb file "
              "(MB = 10^6 bytes); sparse convs: the .nb's sparse_conv2d kernels and their "
              "precision."]
    lines += [f"- {n}" for n in report.get("notes") or []]
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_latency(report, path):
    plt = _pyplot()
    threads, variants = [str(t) for t in report["threads"]], report["variants"]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(threads) * len(variants) / 2 + 3), 3.6))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(threads))]
        ys = [v["latency_ms"].get(t) or 0 for t in threads]
        bars = ax.bar(xs, ys, width, label=v["name"])
        ax.bar_label(bars, labels=[_num(v["latency_ms"].get(t), ".1f") for t in threads],
                     fontsize=7)
    ax.set_xticks(range(len(threads)), [_threads_label(t) for t in threads])
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"Latency, {report['runtime']} runtime")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_sparsity(name, layers, path):
    plt = _pyplot()
    names = [k[:-len(".weight")] if k.endswith(".weight") else k for k in layers]
    vals = [layers[k] or 0 for k in layers]
    fig, ax = plt.subplots(figsize=(min(40, max(6, 0.12 * len(names) + 2)), 4))
    ax.bar(range(len(names)), vals, color="tab:orange")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("zero fraction")
    ax.set_title(f"Per-layer sparsity: {name} ({len(names)} layers)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def write_report(out, variants, bench=None, baseline=None, title="picosparse"):
    """Write OUT/report.json, OUT/report.md, OUT/plots/*.png (each atomically)."""
    out = Path(out)
    report = make_report(variants, bench, baseline, title)
    plots = []
    with atomic_dir(out / "plots") as tmp:  # replaced whole: no stale charts of old variants
        if report["threads"] and any(any(v["latency_ms"].values()) for v in report["variants"]):
            plot_latency(report, tmp / "latency.png")
            plots.append("plots/latency.png")
        precision = {r["name"]: r["precision"] for r in report["variants"]}
        for name, v in variants.items():
            layers = ((v.get("eval") or {}).get("sparsity") or {}).get("layers") or {}
            # dense: no chart; INT8: its FP32 source's zeros plus rounding, charted there
            if layers and max(x or 0 for x in layers.values()) > 0.01 \
                    and precision[name] != "int8":
                plot_sparsity(name, layers, tmp / f"sparsity_{name}.png")
                plots.append(f"plots/sparsity_{name}.png")
    report["plots"] = plots
    problems = validate(report)
    if problems:  # our own bug, not the user's: say exactly what
        raise ValueError(f"report.json does not match its schema: {problems[0]}")
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    return {"report_md": out / "report.md", "report_json": out / "report.json",
            "plots": [str(out / p) for p in plots]}


def load(path):
    return json.loads(Path(path).read_text())
