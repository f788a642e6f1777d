"""The fastest PicoDet on this x86 CPU at any precision: `picosparse bench` on models made by
picosparse's own commands, dense OpenVINO FP32 / BF16 / INT8 (NNCF) against x86-sparse FP32 /
BF16, unstructured and in 1x2 blocks.

    .venv/bin/python benchmarks/x86_sparse.py                        # m, s, lcnet; 75% + 85%
    .venv/bin/python benchmarks/x86_sparse.py --cases m --threads 1 --json out.json
    PICOSPARSE_ISA=avx2 .venv/bin/python benchmarks/x86_sparse.py    # as on an AVX2-only CPU

Per case (a detector config at its input size):
  weights       random init (BN statistics randomised), or the real COCO PicoDet-S weights of
                ../shared/real when present (case `s`)
  dense         picosparse export --no-postprocess --input-size S
  dense@bf16    the same export at OpenVINO's BF16 (where the CPU has AVX512-BF16 or AMX)
  dense_int8    picosparse quant --backend openvino (NNCF post-training INT8, 32 images)
  sparseNN      picosparse prune --sparsity 0.NN (the built-in recipe, i.e. the tutorial's:
                head prediction convs and each stage's last SE convs kept dense, unstructured),
                then picosparse export --no-postprocess --x86-sparse: picosparse's FP32 kernel
  blockNN       the same recipe with --sparse-block 1x2 (pairs of input channels of each 1x1
                conv pruned together), then export --x86-sparse
  ...NN@bf16    an x86-sparse folder run by picosparse's BF16 sparse kernel (where it runs:
                AVX512-BF16 and the AVX-512 path); it pairs input channels, so it gains most
                on blockNN
and one `picosparse bench --runtime openvino` per case times, interleaved in one run,
  dense, dense@bf16, dense_int8, then per sparsity sparseNN, sparseNN@bf16, blockNN,
  blockNN@bf16 (the @bf16 ones where they run).
Speed-ups are bench's: the median over rounds of the per-round ratio (both ran back to back),
with the p25-p75 of those ratios as the spread. "vs best dense" pairs each sparse model with the
fastest dense variant of the same run; "best" per sparsity is the fastest sparse variant. Goal 1
(TARGET_F32, vs dense FP32) is judged on the unstructured FP32 sparseNN, goal 2 (TARGET_BEST,
vs the best dense) on the best sparse variant. With --map (and ../shared/real), `picosparse eval
--model` scores every artifact (DIR@bf16 too) on the 128 real COCO images.
With PICOSPARSE_ISA=avx2 both sides run as on an AVX2-only laptop CPU: picosparse's AVX2
kernels, and OpenVINO capped to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2); no @bf16 variants then.
Outputs are cached under --work (delete it to rebuild); timing always runs.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL = ROOT.parent / "shared" / "real"
CASES = {
    "m": ("PicoDet-m 320", "configs/picodet/picodet_m_320_coco.yml", 320, None),
    "s": ("PicoDet-S 320", "configs/picodet/picodet_s_320_coco.yml", 320,
          REAL / "picodet_s_320_coco_bnfolded.pdparams"),
    "lcnet": ("PicoDet-S LCNet v2 320", "configs/picodet/picodet_s_320_coco_lcnet.yml", 320,
              None),
}
# the seed's ARM ratios at 75% / 85%: goal vs dense FP32; and vs the best dense variant
TARGET_F32 = {0.75: 1.6, 0.85: 2.0}
TARGET_BEST = {0.75: 1.3, 0.85: 1.6}
DENSE = ("dense", "dense@bf16", "dense_int8")
# the sparse artifacts: name prefix -> extra prune flags (unstructured; pairs of input channels)
SPARSE_KINDS = {"sparse": (), "block": ("--sparse-block", "1x2")}
SPARSE_VARIANT = re.compile(r"^(sparse|block)(\d+)(@bf16)?$")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cli(*args, env=None):
    """`picosparse ARGS` as a user runs it; its stdout, or exit with its error."""
    cmd = [sys.executable, "-m", "picosparse", "-q", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): picosparse {' '.join(map(str, args))}\n"
                 f"{p.stderr[-2000:]}")
    return p.stdout


def dataset_overrides(work):
    """Calibration/eval images: the real COCO images when present, else generated shapes."""
    if (REAL / "coco128_train").is_dir():
        d, img, ann = REAL / "coco128_train", "train2017", "annotations/instances_train2017.json"
        return [f"{split}.{k}={v}" for split in ("TrainDataset", "EvalDataset")
                for k, v in (("dataset_dir", d), ("image_dir", img), ("anno_path", ann))]
    shapes = work / "shapes"
    if not (shapes / "train.json").is_file():
        cli("data", "synth", "--out", shapes, "--num-train", 64, "--num-val", 16)
    return [f"TrainDataset.dataset_dir={shapes}", "TrainDataset.image_dir=train",
            "TrainDataset.anno_path=train.json", f"EvalDataset.dataset_dir={shapes}",
            "EvalDataset.image_dir=val", "EvalDataset.anno_path=val.json"]


def prepare(work, key, sparsities, int8, overrides):
    """Build the case's artifacts (cached); -> {variant: path}, in bench order."""
    from picosparse.sparsity.random_model import save_random_weights
    title, cfg, size, real = CASES[key]
    case = work / key
    case.mkdir(parents=True, exist_ok=True)
    weights = real if real is not None and real.is_file() else case / "random.pdparams"
    if weights == case / "random.pdparams" and not weights.is_file():
        log(f"{title}: random-init weights")
        save_random_weights(ROOT / cfg, weights)
    o = [x for ov in overrides for x in ("-o", ov)]
    arts = {"dense": case / "dense"}
    if not (arts["dense"] / "model.pdmodel").is_file():
        log(f"{title}: dense export")
        cli("export", "-c", cfg, *o, "--weights", weights, "--no-postprocess",
            "--input-size", size, "--out", arts["dense"])
    if int8:
        arts["dense_int8"] = case / "dense_int8"
        if not (arts["dense_int8"] / "model.xml").is_file():
            log(f"{title}: NNCF INT8 of the dense export")
            cli("quant", "--model-dir", arts["dense"], "-c", cfg, *o, "--backend", "openvino",
                "--out", arts["dense_int8"])
    for s in sparsities:
        for kind, flags in SPARSE_KINDS.items():
            name = f"{kind}{round(s * 100)}"
            pruned, out = case / f"{name}.pdparams", case / name
            if not pruned.is_file():
                how = ", 1x2 blocks" if flags else ""
                log(f"{title}: prune to {s:.0%} (built-in recipe{how})")
                cli("prune", "-c", cfg, *o, "--weights", weights, "--sparsity", s, *flags,
                    "--out", pruned)
            if not (out / "x86_sparse" / "model.xml").is_file():
                log(f"{title}: export {name} --x86-sparse")
                cli("export", "-c", cfg, *o, "--weights", pruned, "--no-postprocess",
                    "--input-size", size, "--x86-sparse", "--out", out)
            arts[name] = out / "x86_sparse"
    return arts


def models_of(arts, sparsities, bf16, sparse_bf16):
    """{variant: --model argument} in bench order: dense, dense@bf16 (bf16: OpenVINO's BF16
    runs), dense_int8, then per sparsity sparseNN, sparseNN@bf16, blockNN, blockNN@bf16 (the
    @bf16 ones when sparse_bf16: picosparse's BF16 sparse kernel runs). Missing artifacts are
    skipped."""
    out = {"dense": str(arts["dense"])}
    if bf16:
        out["dense@bf16"] = f"{arts['dense']}@bf16"
    if "dense_int8" in arts:
        out["dense_int8"] = str(arts["dense_int8"])
    for s in sparsities:
        for kind in SPARSE_KINDS:
            k = f"{kind}{round(s * 100)}"
            if k in arts:
                out[k] = str(arts[k])
                if sparse_bf16:
                    out[f"{k}@bf16"] = f"{arts[k]}@bf16"
    return out


def sparse_bf16_runs():
    """True if picosparse's BF16 sparse kernel runs here (PICOSPARSE_ISA honoured)."""
    try:
        from picosparse.x86.kernel import bf16_supported
        return bool(bf16_supported())
    except Exception as e:  # no op library: bench would fail on @bf16 the same way
        log(f"picosparse's BF16 sparse kernel unavailable ({e}); no sparse @bf16 variants")
        return False


def bench_case(models, threads, repeats, warmup, isa):
    args = ["bench", "--runtime", "openvino", "--threads", ",".join(map(str, threads)),
            "--repeats", repeats, "--warmup", warmup, "--json", "-"]
    for m in models.values():
        args += ["--model", m]
    env = {"PICOSPARSE_ISA": isa} if isa else {}
    if isa == "avx2":  # an AVX2-only CPU for OpenVINO too (oneDNN's ISA cap), not just for us
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return json.loads(cli(*args, env=env))


def variant(name):
    """bench's row name -> the variant: dense, dense@bf16, dense_int8, sparse75 (from
    .../sparse75/x86_sparse), sparse75@bf16 (.../sparse75/x86_sparse@bf16), block75, ..."""
    base, sep, prec = name.rpartition("@")
    if not sep or "/" in prec:
        base, prec = name, ""
    parts = base.split("/")
    v = parts[-2] if parts[-1] == "x86_sparse" and len(parts) > 1 else parts[-1]
    return f"{v}@{prec}" if prec else v


def sparsity_of(v):
    """sparse75, block75@bf16 -> 75; a dense variant -> None."""
    m = SPARSE_VARIANT.match(v)
    return int(m.group(2)) if m else None


def label(s):
    """0.75 -> "0.75": how rows key a sparsity (JSON object keys are strings), rounded to a
    percent as the variants' names are."""
    return f"{round(s * 100) / 100:g}"


def rows_of(key, res, sparsities):
    """One row per thread count of a case's bench result. Per sparse variant: ms, vs_f32
    (bench's median paired ratio against dense FP32) and spread_vs_f32 (its p25-p75), vs_best
    and spread_vs_best (paired against the fastest dense variant, best_dense). Per sparsity
    (keyed "0.75"): best_sparse, the fastest sparse variant with its ratios, and targets: goal 1
    on the unstructured FP32 sparseNN, goal 2 on best_sparse."""
    from picosparse.deploy.timing import paired_speedup
    by = {variant(m["name"]): m for m in res["models"]}
    out = []
    for t in map(str, res["threads"]):
        med = {k: m["latency_ms"][t]["median"] for k, m in by.items()}
        dense = [k for k in by if sparsity_of(k) is None]
        best = min(dense, key=med.get)
        row = {"case": key, "model": CASES[key][0], "threads": int(t), "best_dense": best,
               "ms": {k: round(v, 3) for k, v in med.items()},
               "precision": {k: m["precision"] for k, m in by.items()},
               "vs_f32": {k: round(m["speedup_ratio"][t], 3) for k, m in by.items()},
               "vs_best": {}, "spread_vs_f32": {}, "spread_vs_best": {}, "best_sparse": {},
               "targets": {}}
        for s in sparsities:
            n = round(s * 100)
            ks = [k for k in by if sparsity_of(k) == n]
            if not ks:
                continue
            paired = {}
            for k in ks:
                vb = paired_speedup(by[best]["samples_ms"][t], by[k]["samples_ms"][t])
                vf = paired_speedup(by["dense"]["samples_ms"][t], by[k]["samples_ms"][t])
                paired[k] = vf, vb
                row["vs_best"][k] = round(vb["median"], 3)
                row["spread_vs_f32"][k] = [round(vf["p25"], 3), round(vf["p75"], 3)]
                row["spread_vs_best"][k] = [round(vb["p25"], 3), round(vb["p75"], 3)]
            top = min(ks, key=med.get)
            vf, vb = paired[top]
            row["best_sparse"][label(s)] = {
                "variant": top, "ms": round(med[top], 3), "precision": by[top]["precision"],
                "vs_f32": round(vf["median"], 3), "vs_best": round(vb["median"], 3),
                "spread_vs_best": [round(vb["p25"], 3), round(vb["p75"], 3)]}
            if s in TARGET_F32:
                f32 = f"sparse{n}"
                row["targets"][label(s)] = {
                    "f32": TARGET_F32[s], "f32_variant": f32 if f32 in paired else None,
                    "f32_met": f32 in paired and paired[f32][0]["median"] >= TARGET_F32[s],
                    "best": TARGET_BEST[s], "best_variant": top,
                    "best_met": vb["median"] >= TARGET_BEST[s]}
        out.append(row)
    return out


def map_of(models, key, overrides):
    """{variant: mAP} of every benched model ({variant: --model argument}, DIR@bf16 too)."""
    cfg = CASES[key][1]
    o = [x for ov in overrides for x in ("-o", ov)]
    got = {}
    for k, p in models.items():
        log(f"mAP of {k}")
        got[k] = json.loads(cli("eval", "-c", cfg, *o, "--model", p, "--json", "-"))["mAP"]
    return got


def markdown(rows, maps):
    """A README table: per case and thread count the dense FP32 / BF16 / INT8 ms, then per
    sparsity one cell per sparse variant, "ms (x vs dense FP32)" (BF16 and INT8 too), and the
    best one against the best dense variant with the p25-p75 of its paired ratios; then the
    mAP lines."""
    present = {k for r in rows for k in r["ms"]}
    dense = [c for c in DENSE if c in present]
    sparse = sorted((k for k in present if sparsity_of(k) is not None),
                    key=lambda k: (sparsity_of(k), k.startswith("block"), "@" in k))
    pcts = sorted({sparsity_of(k) for k in sparse})
    names = {"dense": "dense FP32", "dense@bf16": "BF16", "dense_int8": "INT8"}
    head = ["model", "thr"] + [f"{names[c]} ms" for c in dense]
    for n in pcts:
        head += [k for k in sparse if sparsity_of(k) == n] + [f"{n}% best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["threads"])]
        cells += ["-" if c not in r["ms"] else f"{r['ms'][c]:.2f}" + (
            "" if c == "dense" else f" ({r['vs_f32'][c]:.2f}x)") for c in dense]
        for n in pcts:
            for k in (k for k in sparse if sparsity_of(k) == n):
                cells.append("-" if k not in r["ms"] else
                             f"{r['ms'][k]:.2f} ({r['vs_f32'][k]:.2f}x)")
            b = r.get("best_sparse", {}).get(label(n / 100))
            if b is None:
                cells.append("-")
            else:
                lo, hi = b["spread_vs_best"]
                cells.append(f"{b['variant']} **{b['vs_best']:.2f}x** vs {r['best_dense']} "
                             f"({lo:.2f}-{hi:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    if sparse:
        lines += ["", "ms (x): median latency and the median per-round ratio against dense FP32; "
                  "sparseNN: unstructured, blockNN: 1x2 blocks, @bf16: picosparse's BF16 "
                  "kernel; best: the fastest sparse variant against the fastest dense one "
                  "(p25-p75 of the paired ratios)."]
    for key, m in maps.items():
        lines.append("")
        lines.append(f"mAP on the 128 real COCO images, {CASES[key][0]}: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="m,s,lcnet", help=f"of {', '.join(CASES)}")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.75, 0.85])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=40, help="rounds per bench run")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_x86"))
    ap.add_argument("--no-int8", action="store_true", help="skip the NNCF INT8 baseline")
    ap.add_argument("--map", action="store_true", help="also mAP of every artifact "
                    "(needs ../shared/real for a meaningful number)")
    ap.add_argument("--json", help="write rows (and raw bench results) here")
    ap.add_argument("--prepare-only", action="store_true", help="build the artifacts, no timing")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    bad = [k for k in keys if k not in CASES]
    if bad:
        ap.error(f"--cases: unknown {', '.join(bad)} (known: {', '.join(CASES)})")

    from picosparse.envcheck import cpu_features
    feats = cpu_features()
    isa = os.environ.get("PICOSPARSE_ISA")
    bf16 = bool(feats.get("avx512_bf16") or feats.get("amx_bf16")) and isa != "avx2"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = dataset_overrides(work)
    rows, raw, maps = [], {}, {}
    sparse_bf16 = None
    for key in keys:
        arts = prepare(work, key, args.sparsity, not args.no_int8, overrides)
        if args.prepare_only:
            continue
        if sparse_bf16 is None:  # after an export built the op library
            sparse_bf16 = sparse_bf16_runs()
        models = models_of(arts, args.sparsity, bf16, sparse_bf16)
        log(f"{CASES[key][0]}: picosparse bench ({len(models)} models, threads "
            f"{args.threads}, {args.repeats} rounds)")
        raw[key] = bench_case(models, args.threads, args.repeats, args.warmup, isa)
        rows += rows_of(key, raw[key], args.sparsity)
        if args.map:
            maps[key] = map_of(models, key, overrides)
    if args.prepare_only:
        return 0
    cpu = feats.get("model") or platform.processor() or platform.machine()
    print(f"\n{cpu}; {os.cpu_count()} logical CPUs; kernel path "
          f"{isa or 'auto'}; OpenVINO rows as `picosparse bench` ran them; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print(markdown(rows, maps))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "isa": isa, "rows": rows,
                                               "maps": maps, "bench": raw}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
