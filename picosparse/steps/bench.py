"""Latency of several models side by side, first one the baseline.

On this machine (x86) with Paddle Inference, Paddle-Lite's Python API or OpenVINO; or on an ARM
board over adb with Paddle-Lite's benchmark_bin (deploy/adb.py), where sparse_conv2d kernels
exist. With --runtime openvino a model may also be an x86-sparse export (`picosparse export
--x86-sparse`, loaded by picosparse.x86.runtime): it runs picosparse's sparse 1x1 op, the others
OpenVINO's dense ops, in the same child process, same threads. Timing and speed-ups are
deploy/timing.py's (round robin; speed-up = median of the per-round paired ratios), the same
as benchmarks/x86_sparse.py's.
"""

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from picosparse import paddle_env, progress, subproc
from picosparse.deploy import infer_cfg, nbfile, program, timing
from picosparse.deploy.runtimes import PRECISIONS, reported, split_precision
from picosparse.errors import ConfigError, DataError, ParamError, PicosparseError
from picosparse.params import at_least, check, multiple_of_32, param
from picosparse.x86.runtime import META_NAME, is_x86_sparse, read_meta

RUNTIMES = ("paddle", "lite", "openvino")
LABEL = {"paddle": "Paddle Inference (CPU, oneDNN)", "lite": "Paddle-Lite x86 (Python API)",
         "openvino": "OpenVINO (CPU)"}


# The timing child's bound: time to load/compile the models, plus per timed run a generous
# multiple of what a detector takes on a CPU; a hung runtime ends as one error, not forever.
WORKER_SETUP_S = 600
WORKER_PER_RUN_S = 10


def model_name(path):
    """runs/sparse75/inference -> sparse75; x/model.nb -> x; other.nb -> other;
    runs/sparse75/inference/x86_sparse -> sparse75/x86_sparse."""
    p = Path(path)
    if (p / META_NAME).is_file() and not (p / program.MODEL_FILE).is_file():
        # an x86-sparse folder is named after the export it came from
        return f"{model_name(p.resolve().parent)}/{p.resolve().name}"
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
    ir = [p / "model.xml", p / "model.bin"]
    if all(f.is_file() for f in ir) and not (p / program.MODEL_FILE).is_file():
        out["xml+bin"] = sum(f.stat().st_size for f in ir)
    if (p / "model.nb").is_file():
        out["nb"] = (p / "model.nb").stat().st_size
    files = [p / program.MODEL_FILE, p / program.PARAMS_FILE]
    if all(f.is_file() for f in files):
        out["pdmodel+pdiparams"] = sum(f.stat().st_size for f in files)
    return out


def _pick_sizes(specs, notes):
    """One kind of size for the whole table: the .nb (the seed's "deploy model size") when
    every model has one, else the Paddle files."""
    for kind in ("nb", "pdmodel+pdiparams", "xml+bin"):
        if all(kind in s["sizes"] for s in specs):
            for s in specs:
                s["size_bytes"], s["size_kind"] = s["sizes"][kind], kind
            return
    for s in specs:
        s["size_kind"], s["size_bytes"] = next(iter(s["sizes"].items()))
    kinds = sorted({s["size_kind"] for s in specs})
    notes.append(f"sizes mix {' and '.join(kinds)} files (see size_kind)")


def _int8_kind(p, runtime, adb):
    """"openvino-ir" for an NNCF INT8 folder (`quant --backend openvino`), "paddle-int8" for a
    PaddleSlim one (`quant`, `qat`), None otherwise; a one-line error where it cannot run."""
    from picosparse.steps.quant import QUANT_JSON, is_quantized
    meta = p / QUANT_JSON
    backend = None
    if meta.is_file():
        try:
            backend = json.loads(meta.read_text()).get("backend")
        except ValueError as e:
            raise DataError(f"--model {p}: unreadable {QUANT_JSON} ({e})") from None
    elif (p / program.MODEL_FILE).is_file() and is_quantized(p):
        backend = "paddle"
    if backend == "openvino":
        if runtime != "openvino" or adb:
            raise ConfigError(f"--model {p}: an OpenVINO INT8 model (NNCF) runs on OpenVINO "
                              "only; use --runtime openvino")
        return "openvino-ir"
    if backend == "paddle" and runtime == "openvino" and not adb:
        raise ConfigError(f"--model {p}: OpenVINO cannot read PaddleSlim's INT8 model "
                          "(dequantize_linear); for x86 INT8 quantize the FP32 export with "
                          "`picosparse quant --backend openvino`")
    return "paddle-int8" if backend == "paddle" else None


def _x86_spec(p, runtime, adb):
    """The x86-sparse export's metadata, or a one-line error when it cannot run here."""
    if runtime != "openvino" or adb:
        raise ConfigError(f"--model {p}: an x86-sparse export runs on OpenVINO only; "
                          "use --runtime openvino")
    return read_meta(p, "--model")


def _spec(path, runtime, input_size, adb, precision="f32"):
    path, precision, suffixed = split_precision(path, precision)
    if precision != "f32" and (runtime != "openvino" or adb):
        raise ConfigError(f"--model {path}@{precision}: only --runtime openvino runs other "
                          "than FP32 here")
    p = Path(path)
    x86 = None
    int8 = _int8_kind(p, runtime, adb) if p.is_dir() else None
    if int8 == "openvino-ir":
        pass
    elif is_x86_sparse(p) and not (p / program.MODEL_FILE).is_file():
        x86 = _x86_spec(p, runtime, adb)
    elif p.suffix == ".nb":
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
    if cfg_file is None and x86:  # made before infer_cfg.yml was copied in: the source's
        cfg_file = infer_cfg.find(p.parent) or infer_cfg.find(Path(x86.get("source", p)))
    cfg = infer_cfg.read(cfg_file) if cfg_file else None
    size = input_size or (infer_cfg.input_size(cfg) if cfg else None)
    if not size:
        raise DataError(f"--model {p}: no infer_cfg.yml beside it to read the input size "
                        "from; pass --input-size")
    zeros = ((cfg or {}).get("picosparse") or {}).get("conv1x1_zero_fraction")
    kind = "x86-sparse" if x86 else int8 or "dense"
    hinted = kind in ("dense", "openvino-ir")  # OpenVINO picks these models' kernels
    if not hinted and not suffixed:
        precision = "f32"  # --precision sets the OpenVINO models'; ours run as asked: DIR@bf16
    if precision != "f32" and not hinted and kind != "x86-sparse":
        raise ConfigError(f"--model {path}@{precision}: only OpenVINO models (dense exports, "
                          f"NNCF INT8) and x86-sparse folders run at another precision; a "
                          f"{kind} model runs as it was made")
    name = model_name(p) + (f"@{precision}" if suffixed else "")
    return {"name": name, "path": str(p), "input_size": int(size), "cfg": cfg,
            "sizes": _sizes(p), "conv1x1_zero_fraction": zeros, "kind": kind,
            "x86_sparse": x86, "asked": precision}


def _unique_names(specs):
    seen = {}
    for s in specs:
        n = s["name"]
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            s["name"] = f"{n}#{seen[n]}"


def _speedups(models, threads, basis):
    """speedup_ratio: the baseline's time / this one's: with per-round samples the median of
    the paired per-round ratios (deploy/timing.py), else (adb: means only) the ratio of the
    `basis` values; speedup_fps_gain = ratio - 1, the seed's (dense - sparse) / sparse."""
    base = models[0]
    for m in models:
        m["speedup_fps_gain"], m["speedup_ratio"] = {}, {}
        for t in threads:
            if "samples_ms" in m:
                r = timing.paired_speedup(base["samples_ms"][t], m["samples_ms"][t])["median"]
            else:
                b = base["latency_ms"].get(t, {}).get(basis)
                x = m["latency_ms"].get(t, {}).get(basis)
                r = b / x if b and x else None
            if r:
                m["speedup_fps_gain"][t] = r - 1
                m["speedup_ratio"][t] = r


def _inputs(spec, image):
    rgb = infer_cfg.read_image(image) if image else infer_cfg.random_image(spec["input_size"])
    pre = (spec["cfg"] or {}).get("Preprocess") or [
        {"type": "Resize", "target_size": [spec["input_size"]] * 2, "interp": 2},
        {"type": "NormalizeImage", "is_scale": True, "mean": [0.485, 0.456, 0.406],
         "std": [0.229, 0.224, 0.225]}, {"type": "Permute"}]
    return infer_cfg.preprocess(rgb, pre, spec["input_size"])


def _thread_counts(text):
    """--threads "1,4" -> [1, 4]."""
    try:
        return [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ParamError("threads", "expected comma-separated integers, e.g. 1,4", text,
                         BenchParams) from None


def _check_threads(v):
    if not isinstance(v, (list, tuple)) or not v or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in v):
        return "expected integers >= 1"
    return None


@dataclass(frozen=True)
class BenchParams:
    """`picosparse bench` / the pipeline kind `bench`; checked when made. The models are the
    step's input (the CLI's --model, the pipeline's `models` mapping)."""

    threads: list = param([1, 4], "list[int]", check=_check_threads, parse=_thread_counts,
                          click=dict(default="1,4", show_default=True),
                          help="Thread counts, comma separated.")
    repeats: int = param(50, "int", check=at_least(1),
                         help="Timed runs (interleaved rounds) per model and thread count.")
    warmup: int = param(5, "int", check=at_least(0), help="Untimed runs first.")
    runtime: str = param("paddle", "str", choices=RUNTIMES,
                         help="x86 runtime (lite needs/makes an x86 .nb).")
    precision: str = param("f32", "str", choices=PRECISIONS, only="cli", help=(
        "OpenVINO precision of the dense models (MODEL@bf16 sets one model's, and runs an "
        "x86-sparse model on picosparse's BF16 kernels; FP32 where the CPU has no BF16)."))
    image: str = param(None, "path?", only="cli", click=dict(path="file"),
                       help="Input image [a fixed random image].")
    input_size: int = param(None, "int?", check=multiple_of_32, only="cli",
                            help="Input side for a .nb without infer_cfg.yml beside it.")
    adb: str = param(None, "str?", only="cli", metavar="SERIAL",
                     help="Time on an ARM board over adb (needs --benchmark-bin).")
    benchmark_bin: str = param(None, "path?", only="cli", click=dict(path="file"),
                               help="Paddle-Lite's benchmark_bin built for the board (same "
                                    "release as opt).")
    per_layer: bool = param(False, "bool", only="cli", help=(
        "With --runtime openvino: per-layer times of each x86-sparse model vs the dense "
        "convs it replaced."))

    def __post_init__(self):
        object.__setattr__(self, "threads", list(self.threads)
                           if isinstance(self.threads, tuple) else self.threads)
        check(self)
        if self.precision != "f32" and self.runtime != "openvino":
            raise ParamError("precision", "only {runtime} openvino runs other than FP32 here",
                             self.precision, BenchParams)
        if self.adb and not self.benchmark_bin:
            raise ParamError("adb", "needs {benchmark_bin} PATH (Paddle-Lite's benchmark_bin "
                             "built for the board)", self.adb, BenchParams)
        if self.benchmark_bin and not self.adb:
            raise ParamError("benchmark_bin", "needs {adb} SERIAL", self.benchmark_bin,
                             BenchParams)
        if self.per_layer and self.adb:
            raise ParamError("per_layer", "not over {adb} (it profiles x86-sparse models "
                             "here)", None, BenchParams)
        if self.per_layer and self.runtime != "openvino":
            raise ParamError("per_layer", "needs {runtime} openvino (it profiles x86-sparse "
                             f"models), got {{runtime}} {self.runtime}", None, BenchParams)


def bench(models, params=None, names=None, **fields):
    """Time each model (inference dir, .nb, x86-sparse or OpenVINO IR folder; DIR@bf16 for
    another OpenVINO precision) at each thread count, interleaved, in a child process.
    `params`: BenchParams (`fields` replace its values: BenchParams(**fields) in short).
    `names`: what to call each model in rows and notes [from its path].

    Returns {"runtime": str, "precision": str, "threads": [int], "notes": [str],
             "repeats": int, "warmup": int, "image": str, "basis": "median"|"mean",
             "models": [{"name", "path", "size_bytes", "size_kind", "input_size",
                         "conv1x1_zero_fraction": float|None,
                         "latency_ms": {"1": {"median", "p90", "mean", "min", "max"}, ...},
                         "samples_ms": {"1": [ms per round], ...},  # not over adb
                         "speedup_ratio": {"1": float, ...},  # median of per-round base/this
                         "speedup_fps_gain": {"1": float, ...},  # ratio - 1
                         "kind": "dense"|"x86-sparse", "precision": "fp32"|"bf16"|None,
                         # x86-sparse only:
                         "x86_sparse": {"replaced", "conv_1x1_total", "depthwise",
                                        "dense_kxk", "upsample", "sparse_threshold"},
                         # with per_layer, x86-sparse only (picosparse.x86.perlayer):
                         "per_layer": {"1": {"summary": {...}, "layers": [...]}, ...}}]}
    Thread keys are strings (JSON). Over adb, benchmark_bin gives min/max/avg only: median and
    p90 are None, there are no samples and the speed-ups are ratios of means ("basis").
    """
    p = replace(params, **fields) if params is not None else BenchParams(**fields)
    if not models:
        raise ConfigError("--model: give at least one model (the first is the baseline)")
    threads, repeats, warmup, runtime = list(p.threads), p.repeats, p.warmup, p.runtime
    precision, image, input_size, adb = p.precision, p.image, p.input_size, p.adb
    benchmark_bin, per_layer = p.benchmark_bin, p.per_layer
    specs = [_spec(m, runtime, input_size, adb, precision) for m in models]
    for s, name in zip(specs, names or ()):
        s["name"] = str(name)
    if per_layer and not any(s["x86_sparse"] for s in specs):
        raise ConfigError("--per-layer: no x86-sparse model among --model (give the "
                          "OUT/x86_sparse folder of `picosparse export --x86-sparse`)")
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
    notes += _kernel_notes(specs, runtime)
    dense_of = {}  # model index -> the dense model.pdmodel its x86-sparse export came from
    if per_layer:
        from picosparse.x86.perlayer import dense_model_of
        dense_of = {str(i): str(dense_model_of(s["path"])) for i, s in enumerate(specs)
                    if s["x86_sparse"]}
    tmp = Path(tempfile.mkdtemp(prefix="picosparse-bench-"))
    try:
        run_paths = [_lite_nb(s, tmp / f"lite{i}.nb", notes) if runtime == "lite"
                     else s["path"] for i, s in enumerate(specs)]
        np = paddle_env.stack().np
        arrays = {f"{i}/{k}": v for i, s in enumerate(specs)
                  for k, v in _inputs(s, image).items()}
        np.savez(tmp / "inputs.npz", **arrays)
        results = {s["name"]: {} for s in specs}
        samples = {s["name"]: {} for s in specs}
        precisions = set()
        for t in ran:
            progress.say(f"bench {runtime}: {t} thread{'s' * (t > 1)}, {len(specs)} model(s)")
            got = _worker(tmp, runtime, run_paths, [s["path"] for s in specs], t,
                          [s["asked"] for s in specs], warmup, repeats,
                          [s["kind"] for s in specs], dense_of)
            precisions.update(got["precisions"])
            for s, ms, prec in zip(specs, got["times_ms"], got["precisions"]):
                results[s["name"]][str(t)] = timing.summary(ms)
                samples[s["name"]][str(t)] = ms
                s["precision"] = prec
            for i, pl in (got.get("per_layer") or {}).items():
                specs[int(i)].setdefault("per_layer", {})[str(t)] = pl
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out_models = [dict(_model_out(s, results[s["name"]]), samples_ms=samples[s["name"]])
                  for s in specs]
    keys = [str(t) for t in ran]
    _speedups(out_models, keys, "median")
    for s, m in zip(specs, out_models):
        # the runtimes report their FP32/BF16 hint; what an INT8 model really ran is known here
        m["precision"] = {"openvino-ir": "int8", "paddle-int8": "int8-simulated"}.get(
            s["kind"], s.get("precision"))
        if s["kind"] == "openvino-ir" and s.get("precision") not in (None, "fp32"):
            m["precision"] = f"int8+{s['precision']}"  # its unquantized ops at the hint
        if s.get("per_layer"):
            m["per_layer"] = s["per_layer"]
    prec = "/".join(sorted(precisions))
    if runtime == "openvino":
        notes.append(f"OpenVINO ran {prec} (INFERENCE_PRECISION_HINT; --precision {precision}"
                     + (", @PRECISION per model" if any(s["asked"] != precision
                                                         for s in specs) else "") + ")")
        for s in specs:
            if s["kind"] in ("dense", "x86-sparse") and \
                    reported(s["asked"]) != s.get("precision"):
                # an INT8 model's reported hint is for its non-INT8 parts: not compared
                notes.append(f"{s['name']}: asked {s['asked']}, OpenVINO ran "
                             f"{s.get('precision')} (this CPU has no {s['asked']} kernels)")
    return {"runtime": runtime, "runtime_label": LABEL[runtime], "precision": prec,
            "threads": ran, "notes": notes, "repeats": repeats, "warmup": warmup,
            "image": str(image) if image else "random (seed 0)", "basis": "median",
            "models": out_models}


def _kernel_notes(specs, runtime):
    """Which models can be faster here: only x86-sparse ones (picosparse's op) on OpenVINO."""
    x86 = [s for s in specs if s["x86_sparse"]]
    notes = []
    sim = [s["name"] for s in specs if s["kind"] == "paddle-int8"]
    if sim:
        notes.append(f"{', '.join(sim)}: PaddleSlim INT8, run by {LABEL[runtime]} as FP32 "
                     "with quantize/dequantize ops (simulated INT8, slower than FP32 here); "
                     "its INT8 kernels are Paddle-Lite's on ARM: time the .nb with --adb")
    for s in specs:
        if s["kind"] == "openvino-ir":
            notes.append(f"{s['name']}: OpenVINO INT8 (NNCF), the x86 INT8 baseline; it has "
                         "no sparse kernels")
    # only a model with pruned weights run by dense kernels deserves the warning
    pruned = [s["name"] for s in specs
              if not s["x86_sparse"] and (s["conv1x1_zero_fraction"] or 0) > 0.3]
    if pruned:
        notes.append(f"{LABEL[runtime]} has no sparse kernels on x86: {', '.join(pruned)} "
                     f"run{'s' * (len(pruned) == 1)} pruned weights through dense "
                     "convolutions, so no speed-up is expected from the zeros; the seed's "
                     "speed-ups come from Paddle-Lite's ARM sparse_conv2d (time those with "
                     "--adb)" + ("" if x86 else "; picosparse's x86-sparse export has them "
                                 "(`picosparse export --x86-sparse`)"))
    for s in x86:
        m = s["x86_sparse"]
        on_op = m.get("dense_1x1_on_op", 0)
        total = m.get("replaced", 0) + on_op + m.get("kept_dense_1x1", 0)
        stem = " and dense KxK convs" if m.get("dense_kxk") else ""  # the stem's BF16 GEMM
        notes.append(f"{s['name']}: x86-sparse export, {m.get('replaced')} of {total} 1x1 "
                     f"convs on picosparse's sparse op (>= {m.get('sparse_threshold')} zeros)"
                     + (f", {on_op} below that on the same op with all their weights"
                        if on_op else "")
                     + (f", {m['depthwise']} depthwise + {m.get('dense_kxk', 0)} dense KxK "
                        f"convs and {m.get('upsample', 0)} upsamplings on its NCHW ops"
                        if m.get("depthwise") or m.get("dense_kxk") else "")
                     + (f"; asked BF16: its sparse 1x1 convs{stem} on picosparse's BF16 "
                        "kernels (bf16 weights and activations, fp32 sums), its depthwise convs "
                        "FP32" if s["asked"] == "bf16" else
                        f"; FP32 (DIR@bf16 runs its sparse 1x1 convs{stem} on the BF16 "
                        "kernels)"))
    return notes


def _worker(tmp, runtime, paths, names, threads, precision, warmup, repeats, kinds=None,
            per_layer=None):
    """Time in a child process (deploy/worker.py): a runtime crash must not take us down.
    `precision`: one OpenVINO hint per model."""
    spec = {"runtime": runtime, "paths": [str(p) for p in paths], "names": names,
            "inputs": str(tmp / "inputs.npz"), "threads": threads, "precision": precision,
            "warmup": warmup, "repeats": repeats,
            "kinds": list(kinds or ["dense"] * len(paths)), "per_layer": dict(per_layer or {})}
    runs = (warmup + repeats) * len(paths) * (2 if per_layer else 1)
    timeout = WORKER_SETUP_S + WORKER_PER_RUN_S * runs
    try:
        return subproc.call_python("picosparse.deploy.worker:time_models", spec, timeout)
    except subprocess.TimeoutExpired:
        raise PicosparseError(f"--runtime {runtime}: timing {', '.join(map(str, names))} did "
                              f"not finish within {timeout} s ({runs} runs) and was "
                              "stopped") from None
    except subproc.ChildCrashed as e:
        hint = ("; OpenVINO 2026.4's multiclass_nms crashed here on some inputs: time "
                "models exported with --no-postprocess" if runtime == "openvino" else "")
        raise PicosparseError(f"--runtime {runtime} crashed ({e.why}) timing "
                              f"{', '.join(map(str, names))}: "
                              f"{e.detail(prefer=('Error', 'fault'))}{hint}") from None


def _model_out(spec, latency):
    out = {"name": spec["name"], "path": spec["path"], "size_bytes": spec["size_bytes"],
           "size_kind": spec["size_kind"], "input_size": spec["input_size"],
           "conv1x1_zero_fraction": spec["conv1x1_zero_fraction"], "latency_ms": latency,
           "kind": spec.get("kind", "dense")}
    m = spec.get("x86_sparse")
    if m:
        out["x86_sparse"] = {"replaced": m.get("replaced"), "depthwise": m.get("depthwise"),
                             "dense_kxk": m.get("dense_kxk", 0), "upsample": m.get("upsample", 0),
                             "dense_1x1_on_op": m.get("dense_1x1_on_op", 0),
                             "conv_1x1_total": m.get("replaced", 0)
                             + m.get("dense_1x1_on_op", 0) + m.get("kept_dense_1x1", 0),
                             "sparse_threshold": m.get("sparse_threshold")}
    return out


def _lite_nb(spec, out, notes):
    """A .nb for Paddle-Lite's x86 Python API: the given one, or one converted from a dir."""
    p = Path(spec["path"])
    if p.suffix == ".nb":
        return p
    from picosparse.steps.lite import OptParams, optimize
    optimize(p, out, OptParams(sparse=False, valid_targets="x86"))
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
