"""paddle_lite_opt conversion with a verified sparse pass.

Traps handled here (STACK.md, seed section 7):
- only the exact string `--sparse_model=true` enables the pass; the seed's `True` silently
  gives a dense model;
- the pass runs for ARM only, converting 1x1 / groups 1 / stride 1 / pad 0 convs whose zero
  fraction is >= --sparse_threshold into `sparse_conv2d`;
- sparse kernels exist for FP32 and INT8, not FP16.
So the .nb is checked after opt: its kernels are counted (deploy/nbfile.py).
"""

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from picosparse import paddle_env, subproc
from picosparse.deploy import nbfile, program
from picosparse.errors import DataError, ParamError, StackError
from picosparse.params import between, check, param
from picosparse.sparsity import SPARSE_THRESHOLD

TARGETS = ("arm", "x86", "opencl")
OPT_TIMEOUT = 1800  # seconds; a COCO PicoDet converts in well under a minute


def _targets(valid_targets):
    return [t.strip().lower() for t in str(valid_targets).replace(" ", ",").split(",")
            if t.strip()]


def _check_targets(valid_targets):
    ts = _targets(valid_targets)
    if not ts or any(t not in TARGETS for t in ts):
        return f"expected a comma list of {', '.join(TARGETS)}"
    return None


@dataclass(frozen=True)
class OptParams:
    """`picosparse opt` / the pipeline kind `opt`; checked when made."""

    sparse: bool = param(True, "bool", flag="--sparse/--no-sparse",
                         help="Enable and verify the sparse_conv2d pass.")
    sparse_threshold: float = param(SPARSE_THRESHOLD, "number", check=between(0, 1, low=False),
                                    help="Min zero fraction for a 1x1 conv to become sparse.")
    valid_targets: str = param("arm", "str", check=_check_targets,
                               help="Paddle-Lite targets (arm, x86, opencl).")
    fp16: bool = param(False, "bool", help="FP16 (refused with --sparse).")

    def __post_init__(self):
        check(self)
        if self.sparse and self.fp16:
            raise ParamError("fp16", "with {sparse}: Paddle-Lite's sparse_conv2d kernels are "
                             "FP32/INT8 only (the seed: do not enable FP16 for sparse models); "
                             "turn off {fp16} or {sparse}", self.fp16, OptParams, show_value=False)
        if self.sparse and _targets(self.valid_targets) != ["arm"]:
            raise ParamError("valid_targets", "paddle_lite_opt runs the sparse pass for ARM only "
                             "(\"sparse_model mode only supported on Arm\"); use arm, or turn "
                             "off {sparse} for an x86/OpenCL .nb", self.valid_targets, OptParams)


def nb_path(out):
    """paddle_lite_opt appends .nb to --optimize_out: OUT ending in .nb is used as is."""
    out = Path(out)
    return out if out.suffix == ".nb" else out.with_name(out.name + ".nb")


def optimize(model_dir, out, params=OptParams(), int8=None, **fields):
    """Convert an exported model to OUT (.nb); with `params.sparse`, fail unless sparse_conv2d
    ops exist. `fields` replace those of `params` (OptParams(**fields) in short).

    int8: None = when the model is quantized (`picosparse quant`); then the .nb must hold INT8
    conv kernels, every sparse_conv2d INT8 and, with `sparse`, one per 1x1 conv at the
    threshold (Paddle-Lite falls back to FP32 or dense kernels without a word).

    Returns {"nb": Path, "size_bytes": int, "sparse_conv2d": int, "conv1x1": int,
             "valid_targets": str, "sparse": bool,
             "eligible": int,          # 1x1 convs the pass may convert (groups 1, stride 1, pad 0)
             "above_threshold": int,   # ... of which have zero fraction >= sparse_threshold
             "conv1x1_zero_fraction": float|None, "ops": {op_type: count},
             "targets": [str], "lite_version": str, "precision": "fp32"|"fp16"|"int8",
             "conv_precisions": {op_type: {precision: count}}}.
    """
    from picosparse.steps.quant import is_quantized
    if fields:
        params = replace(params, **fields)
    sparse, sparse_threshold, fp16 = params.sparse, params.sparse_threshold, params.fp16
    valid_targets = params.valid_targets
    targets = _targets(valid_targets)
    model_file, params_file = program.model_files(model_dir)
    quantized = is_quantized(model_dir)
    int8 = quantized if int8 is None else bool(int8)
    if int8 and not quantized:
        raise DataError(f"--int8: {model_dir} is an FP32 model (no quantize ops); make an "
                        "INT8 one with `picosparse quant`")
    if int8 and fp16:
        raise ParamError("fp16", "with an INT8 model: pick one precision", fp16, OptParams,
                         show_value=False)
    opt = paddle_env.find_opt()
    dest = nb_path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stats = program.conv1x1_sparsity(model_dir)
    above = sum(z >= float(sparse_threshold) for z in stats["eligible_layers"].values())
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        cmd = [opt, f"--model_file={model_file}", f"--param_file={params_file}",
               f"--valid_targets={','.join(targets)}", f"--optimize_out={tmpdir / 'model'}",
               "--optimize_out_type=naive_buffer",
               # lowercase `true` only: `True` is silently ignored by the pip opt
               f"--sparse_model={'true' if sparse else 'false'}",
               f"--sparse_threshold={float(sparse_threshold)}",
               f"--enable_fp16={'true' if fp16 else 'false'}"]
        try:
            r = subproc.run(cmd, timeout=OPT_TIMEOUT)
        except OSError as e:
            raise StackError(f"paddle_lite_opt ({opt}) could not run: {e.strerror}") from None
        except subprocess.TimeoutExpired:
            raise StackError(f"paddle_lite_opt did not finish converting {model_dir} within "
                             f"{OPT_TIMEOUT} s and was stopped") from None
        produced = tmpdir / "model.nb"
        if r.returncode != 0 or not produced.is_file():
            lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
            why = lines[-1].strip()[:300] if lines else f"exit code {r.returncode}"
            raise StackError(f"paddle_lite_opt failed on {model_dir}: {why}")
        info = nbfile.inspect(produced)
        n_sparse = info["ops"].get("sparse_conv2d", 0)
        if sparse and n_sparse == 0:
            top = max(stats["eligible_layers"].values(), default=0.0)
            raise DataError(
                f"sparse pass: paddle_lite_opt made no sparse_conv2d op from {model_dir}: no "
                f"eligible 1x1 conv has >= {float(sparse_threshold):.0%} zeros (highest "
                f"{top:.1%}); use sparse weights (picosparse train/prune), lower the sparse "
                "threshold, or turn the sparse pass off (--no-sparse) for a dense .nb")
        if int8:
            check_int8(info, model_dir, sparse, above)
        got = nbfile.compute_targets(info)
        if not set(targets) & got:
            raise StackError(f"paddle_lite_opt wrote a .nb for {sorted(got)}, "
                             f"not {','.join(targets)}")
        os.replace(produced, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return {"nb": dest, "size_bytes": dest.stat().st_size, "sparse_conv2d": n_sparse,
            "conv1x1": stats["conv1x1"], "eligible": stats["eligible"],
            "above_threshold": above, "conv1x1_zero_fraction": stats["overall"],
            "valid_targets": ",".join(targets), "sparse": bool(sparse),
            "sparse_threshold": float(sparse_threshold), "fp16": bool(fp16),
            "ops": dict(info["ops"]), "targets": sorted(got),
            "lite_version": info["lite_version"],
            "precision": "int8" if int8 else "fp16" if fp16 else "fp32",
            "conv_precisions": nbfile.conv_precisions(info)}


def check_int8(info, model_dir, sparse, expected_sparse):
    """One-line DataError unless the .nb (nbfile.inspect) is the INT8 model asked for."""
    problems = nbfile.int8_problems(info, sparse, expected_sparse)
    if problems:
        raise DataError(f"INT8: paddle_lite_opt's .nb of {model_dir} is not INT8"
                        f"{' sparse' if sparse else ''} as asked: {'; '.join(problems)}")


def auto_sparse(model_dir, sparse_threshold=SPARSE_THRESHOLD):
    """Whether a sparse .nb is worth asking for: some eligible 1x1 conv reaches the threshold."""
    stats = program.conv1x1_sparsity(model_dir)
    return any(z >= sparse_threshold for z in stats["eligible_layers"].values())
