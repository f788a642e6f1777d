"""Latency of several models side by side, first one the baseline (issue 4).

On this machine (x86) with Paddle Inference, Paddle-Lite's Python API or OpenVINO; or on an ARM
board over adb with Paddle-Lite's benchmark_bin (deploy/adb.py), the only place sparse_conv2d
kernels exist. Models are timed round-robin (one run of each in turn) so drift in machine load
hits all of them alike.
"""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from picosparse import paddle_env, progress
from picosparse.deploy import infer_cfg, nbfile, program
from picosparse.errors import ConfigError, DataError, PicosparseError

RUNTIMES = ("paddle", "lite", "openvino")
PRECISIONS = ("f32", "bf16")
LABEL = {"paddle": "Paddle Inference (CPU, oneDNN)", "lite": "Paddle-Lite x86 (Python API)",
         "openvino": "OpenVINO (CPU)"}


def model_name(path):
    """runs/sparse75/inference -> sparse75; x/model.nb -> x; other.nb -> other."""
    p = Path(path)
    if p.suffix == ".nb":
        return p.parent.name if p.stem == "model" and p.parent.name else p.stem
    p = p.resolve()
    return p.parent.name if p.name == "inference" else p.name


def _sizes(path):
    """{"nb": bytes, "pdmodel+pdiparams": bytes}, each only when present."""
    p = Path(path)
    if p.suffix == ".nb":
        return {"nb": p.stat().st_size}
    out = {}
    if (p / "model.nb").is_file():
        out["nb"] = (p / "model.nb").stat().st_size
    files = [p / program.MODEL_FILE, p / program.PARAMS_FILE]
    if all(f.is_file() for f in files):
        out["pdmodel+pdiparams"] = sum(f.stat().st_size for f in files)
    return out


def _pick_sizes(specs, notes):
    """One kind of size for the whole table: the .nb (the seed's "deploy model size") when
    every model has one, else the Paddle files."""
    for kind in ("nb", "pdmodel+pdiparams"):
        if all(kind in s["sizes"] for s in specs):
            for s in specs:
                s["size_bytes"], s["size_kind"] = s["sizes"][kind], kind
            return
    for s in specs:
        s["size_kind"], s["size_bytes"] = next(iter(s["sizes"].items()))
    notes.append("sizes mix .nb files and Paddle model files (see size_kind)")


def _spec(path, runtime, input_size, adb):
    p = Path(path)
    if p.suffix == ".nb":
        if not p.is_file():
            raise DataError(f"--model {p}: file does not exist")
        if runtime != "lite" and not adb:
            raise ConfigError(f"--model {p}: --runtime {runtime} needs an exported inference "
                              "folder (model.pdmodel), not a .nb; use --runtime lite (x86 .nb) "
                              "or --adb (ARM .nb)")
    elif adb:
        if not (p / "model.nb").is_file():
            raise DataError(f"--model {p}: no model.nb to push over adb "
                            "(`picosparse export --lite` or `picosparse opt` makes one)")
    else:
        program.model_files(p, "--model")
    cfg_file = infer_cfg.find(p)
    cfg = infer_cfg.read(cfg_file) if cfg_file else None
    size = input_size or (infer_cfg.input_size(cfg) if cfg else None)
    if not size:
        raise DataError(f"--model {p}: no infer_cfg.yml beside it to read the input size "
                        "from; pass --input-size")
    zeros = ((cfg or {}).get("picosparse") or {}).get("conv1x1_zero_fraction")
    return {"name": model_name(p), "path": str(p), "input_size": int(size), "cfg": cfg,
            "sizes": _sizes(p), "conv1x1_zero_fraction": zeros}


def _unique_names(specs):
    seen = {}
    for s in specs:
        n = s["name"]
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            s["name"] = f"{n}#{seen[n]}"


def _stats(ms):
    xs = sorted(ms)
    p90 = xs[max(0, math.ceil(0.9 * len(xs)) - 1)]  # nearest rank
    return {"median": statistics.median(xs), "p90": p90, "mean": statistics.fmean(xs),
            "min": xs[0], "max": xs[-1]}


def _speedups(models, threads, basis):
    base = models[0]["latency_ms"]
    for m in models:
        m["speedup_fps_gain"], m["speedup_ratio"] = {}, {}
        for t in threads:
            b, x = base.get(t, {}).get(basis), m["latency_ms"].get(t, {}).get(basis)
            if b and x:
                m["speedup_fps_gain"][t] = (b - x) / x  # the seed's (dense - sparse) / sparse
                m["speedup_ratio"][t] = b / x


def _inputs(spec, image):
    rgb = infer_cfg.read_image(image) if image else infer_cfg.random_image(spec["input_size"])
    pre = (spec["cfg"] or {}).get("Preprocess") or [
        {"type": "Resize", "target_size": [spec["input_size"]] * 2, "interp": 2},
        {"type": "NormalizeImage", "is_scale": True, "mean": [0.485, 0.456, 0.406],
         "std": [0.229, 0.224, 0.225]}, {"type": "Permute"}]
    return infer_cfg.preprocess(rgb, pre, spec["input_size"])


def _check_args(models, threads, repeats, warmup, runtime, precision):
    if not models:
        raise ConfigError("--model: give at least one model (the first is the baseline)")
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision != "f32" and runtime != "openvino":
        raise ConfigError(f"--precision {precision}: only --runtime openvino runs other than "
                          "FP32 here")
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1
                          for t in threads):
        raise ConfigError(f"--threads {','.join(map(str, threads))}: expected integers >= 1")
    if repeats < 1 or warmup < 0:
        raise ConfigError("--repeats must be >= 1 and --warmup >= 0")


def bench(models, threads=(1, 4), repeats=50, warmup=5, runtime="paddle", precision="f32",
          image=None, input_size=None, adb=None, benchmark_bin=None):
    """Time each model (inference dir or .nb) at each thread count, in one process.

    Returns {"runtime": str, "precision": str, "threads": [int], "notes": [str],
             "repeats": int, "warmup": int, "image": str, "basis": "median"|"mean",
             "models": [{"name", "path", "size_bytes", "size_kind", "input_size",
                         "conv1x1_zero_fraction": float|None,
                         "latency_ms": {"1": {"median", "p90", "mean", "min", "max"}, ...},
                         "speedup_fps_gain": {"1": float, ...},  # (base - this) / this
                         "speedup_ratio": {"1": float, ...}}]}   # base / this
    Thread keys are strings (JSON). Over adb, benchmark_bin gives min/max/avg only: median and
    p90 are None and the speed-ups use the mean ("basis").
    """
    threads = list(threads)
    _check_args(models, threads, repeats, warmup, runtime, precision)
    if input_size is not None and (input_size <= 0 or input_size % 32):
        raise ConfigError(f"--input-size {input_size}: must be a positive multiple of 32")
    if adb and not benchmark_bin:
        raise ConfigError("--adb needs --benchmark-bin PATH (Paddle-Lite's benchmark_bin "
                          "built for the board)")
    if benchmark_bin and not adb:
        raise ConfigError("--benchmark-bin needs --adb SERIAL")
    specs = [_spec(m, runtime, input_size, adb) for m in models]
    _unique_names(specs)
    if image:
        infer_cfg.read_image(image)  # fail before any timing
    notes = []
    _pick_sizes(specs, notes)
    if adb:
        return _bench_adb(specs, adb, benchmark_bin, sorted(set(threads)), repeats, warmup,
                          image, notes)
    ncpu = os.cpu_count() or 1
    ran = sorted({min(t, ncpu) for t in threads})
    if any(t > ncpu for t in threads):
        notes.append(f"threads capped at {ncpu} (os.cpu_count() on this machine): asked "
                     f"{','.join(map(str, threads))}, ran {','.join(map(str, ran))}")
    if runtime == "lite" and ran != [1]:
        notes.append("Paddle-Lite's Python MobileConfig has no thread setting: ran 1 thread only")
        ran = [1]
    notes.append(f"{LABEL[runtime]} has no sparse kernels on x86: sparse weights run the "
                 "same dense convolutions, so no speed-up is expected here; the seed's "
                 "speed-ups come from Paddle-Lite's ARM sparse_conv2d (time those with --adb)")
    tmp = Path(tempfile.mkdtemp(prefix="picosparse-bench-"))
    try:
        run_paths = [_lite_nb(s, tmp / f"lite{i}.nb", notes) if runtime == "lite"
                     else s["path"] for i, s in enumerate(specs)]
        np = paddle_env.stack().np
        arrays = {f"{i}/{k}": v for i, s in enumerate(specs)
                  for k, v in _inputs(s, image).items()}
        np.savez(tmp / "inputs.npz", **arrays)
        results = {s["name"]: {} for s in specs}
        precisions = set()
        for t in ran:
            progress.say(f"bench {runtime}: {t} thread{'s' * (t > 1)}, {len(specs)} model(s)")
            got = _worker(tmp, runtime, run_paths, [s["path"] for s in specs], t, precision,
                          warmup, repeats)
            precisions.update(got["precisions"])
            for s, ms in zip(specs, got["times_ms"]):
                results[s["name"]][str(t)] = _stats(ms)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out_models = [_model_out(s, results[s["name"]]) for s in specs]
    keys = [str(t) for t in ran]
    _speedups(out_models, keys, "median")
    prec = "/".join(sorted(precisions))
    if runtime == "openvino":
        notes.append(f"OpenVINO ran {prec} (INFERENCE_PRECISION_HINT; --precision {precision})")
    return {"runtime": runtime, "runtime_label": LABEL[runtime], "precision": prec,
            "threads": ran, "notes": notes, "repeats": repeats, "warmup": warmup,
            "image": str(image) if image else "random (seed 0)", "basis": "median",
            "models": out_models}


def _worker(tmp, runtime, paths, names, threads, precision, warmup, repeats):
    """Time in a child process (deploy/worker.py): a runtime crash must not take us down."""
    spec = {"runtime": runtime, "paths": [str(p) for p in paths], "names": names,
            "inputs": str(tmp / "inputs.npz"), "threads": threads, "precision": precision,
            "warmup": warmup, "repeats": repeats, "result": str(tmp / "result.json")}
    (tmp / "spec.json").write_text(json.dumps(spec))
    result = tmp / "result.json"
    if result.exists():
        result.unlink()
    r = subprocess.run([sys.executable, "-m", "picosparse.deploy.worker", str(tmp / "spec.json")],
                       capture_output=True, text=True)
    if r.returncode != 0 or not result.is_file():
        why = f"signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}"
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "Error" in ln or "fault" in ln),
                      lines[-1] if lines else "")
        hint = ("; OpenVINO 2026.4's multiclass_nms crashed here on some inputs: time "
                "models exported with --no-postprocess" if runtime == "openvino" else "")
        raise PicosparseError(f"--runtime {runtime} crashed ({why}) timing "
                              f"{', '.join(map(str, names))}: {detail[:200]}{hint}")
    got = json.loads(result.read_text())
    if "error" in got:
        raise PicosparseError(got["error"])
    return got


def _model_out(spec, latency):
    return {"name": spec["name"], "path": spec["path"], "size_bytes": spec["size_bytes"],
            "size_kind": spec["size_kind"], "input_size": spec["input_size"],
            "conv1x1_zero_fraction": spec["conv1x1_zero_fraction"], "latency_ms": latency}


def _lite_nb(spec, out, notes):
    """A .nb for Paddle-Lite's x86 Python API: the given one, or one converted from a dir."""
    p = Path(spec["path"])
    if p.suffix == ".nb":
        return p
    from picosparse.steps.lite import optimize
    optimize(p, out, sparse=False, valid_targets="x86")
    notes.append(f"{spec['name']}: converted to an x86 .nb for Paddle-Lite "
                 "(`picosparse opt --valid-targets x86 --no-sparse`)")
    return out


def _bench_adb(specs, serial, bench_bin, threads, repeats, warmup, image, notes):
    from picosparse.deploy.adb import bench_adb
    notes += ["ARM board over adb: Paddle-Lite's benchmark_bin reports min/max/avg only; "
             "speed-ups use the mean", "benchmark_bin feeds all-ones inputs"
             + (f" (--image {image} is not used over adb)" if image else "")]
    models = []
    for s in specs:
        p = Path(s["path"])
        nb = p if p.suffix == ".nb" else p / "model.nb"
        info = nbfile.inspect(nb)
        tg = nbfile.compute_targets(info)
        if "arm" not in tg:
            raise PicosparseError(f"--model {nb}: built for {', '.join(sorted(tg))}, not arm; "
                                  "make it with `picosparse opt --valid-targets arm`")
        if not info["ops"].get("sparse_conv2d"):
            notes.append(f"{s['name']}: dense .nb (no sparse_conv2d ops)")
        shapes = infer_cfg.input_shapes(s["cfg"], s["input_size"])
        models.append((s["name"], nb, shapes))
    raw = bench_adb(models, serial, bench_bin, threads, repeats, warmup)
    out_models = []
    for s in specs:
        lat = {str(t): {"median": None, "p90": None, "mean": r["avg_ms"], "min": r["min_ms"],
                        "max": r["max_ms"]} for t, r in raw[s["name"]].items()}
        out_models.append(_model_out(s, lat))
    keys = [str(t) for t in threads]
    _speedups(out_models, keys, "mean")
    return {"runtime": f"lite-arm (adb {serial})",
            "runtime_label": f"Paddle-Lite ARM benchmark_bin (adb {serial})",
            "precision": "fp32", "threads": list(threads), "notes": notes, "repeats": repeats,
            "warmup": warmup, "image": "all ones (benchmark_bin)", "basis": "mean",
            "models": out_models}
