"""`write_ir`: an exported Paddle model folder -> an x86-sparse folder (OpenVINO IR whose
sparse 1x1 convs run picosparse's op), written atomically and checked to compile.

The folder holds model.xml/.bin, libpicosparse_ops.so (the OpenVINO extension, built for the
installed OpenVINO), x86_sparse.json (what was replaced: rewrite.py's stats) and the source's
infer_cfg.yml; picosparse.x86.runtime.load_model runs it. Options are checked by the caller
(picosparse/steps/x86_sparse.py), not here.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from picosparse import subproc
from picosparse.atomic import atomic_dir
from picosparse.deploy import sigstack
from picosparse.errors import DataError, PicosparseError
from picosparse.x86.runtime import META_NAME, XML_NAME

CHILD_TIMEOUT = 1800  # seconds for a conversion in a child process (PicoDet-m: ~15 s)


def find_model(model_dir):
    d = Path(model_dir)
    if d.is_file():
        return d
    for name in ("model.pdmodel", "model.xml", "model.onnx"):
        if (d / name).is_file():
            return d / name
    raise DataError(f"{d}: no model.pdmodel (or model.xml / model.onnx) to convert; "
                    "run `picosparse export` first")


def write_ir(model_dir, out_dir, sparse_threshold, nchw_ops, threshold_name="sparse_threshold",
             dense_1x1=True):
    """MODEL_DIR/model.pdmodel -> OUT_DIR (see the module doc); nothing at OUT_DIR on error.

    nchw_ops: see rewrite.rewrite_model. threshold_name: how the caller spells the threshold
    (a flag, a pipeline key), for the error when no 1x1 conv reaches it. Returns {"out_dir",
    "model_xml", "extension", "replaced", "dense_1x1_on_op", "depthwise", "dense_kxk",
    "upsample", "se_gates", "kept_dense_1x1", "conv_1x1_total", "sparse_threshold",
    "dense_1x1_weight_bytes", "sparse_weight_bytes", "bin_bytes", "openvino"}.
    """
    args = dict(model_dir=str(model_dir), out_dir=str(out_dir),
                sparse_threshold=float(sparse_threshold), nchw_ops=bool(nchw_ops),
                threshold_name=threshold_name, dense_1x1=bool(dense_1x1))
    if "paddle" not in sys.modules:
        return write_here(**args)
    # ov.save_model of a model holding our ops segfaulted in a process that had imported
    # paddle before loading the extension (`picosparse export` has): convert in a clean one
    from picosparse.x86.build import library_path
    library_path()  # build (with its message) here, so the child finds it cached
    try:
        res = subproc.call_python("picosparse.x86.convert.export:write_here", args,
                                  CHILD_TIMEOUT)
    except subproc.ChildCrashed as e:
        raise PicosparseError(f"converting {model_dir} to x86-sparse crashed ({e.why}): "
                              f"{e.detail()}") from None
    except subprocess.TimeoutExpired:
        raise PicosparseError(f"converting {model_dir} to x86-sparse did not finish within "
                              f"{CHILD_TIMEOUT} s and was stopped") from None
    for k in ("out_dir", "model_xml", "extension"):
        res[k] = Path(res[k])
    return res


def write_here(model_dir, out_dir, sparse_threshold, nchw_ops, threshold_name, dense_1x1=True):
    """write_ir in this process."""
    from picosparse.x86.build import LIB_NAME, library_path, openvino_dirs
    from picosparse.x86.convert.rewrite import rewrite_model

    openvino_dirs()  # a one-line StackError when openvino (or its C++ files) is missing
    import openvino as ov

    src = find_model(model_dir)
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
        stats = rewrite_model(model, sparse_threshold, lib, nchw_ops, dense_1x1)
    except RuntimeError as e:  # OpenVINO's errors (node creation, shape inference)
        raise PicosparseError(f"{src}: rewriting it for the x86 sparse op failed in OpenVINO "
                              f"({_first_line(e)})") from e
    if stats["replaced"] == 0:
        # a model with no sparse op is only a slower dense model: refuse, before writing
        if not stats["skipped"] and not stats["dense_1x1_on_op"]:
            raise DataError(f"{src}: no 1x1 convolution (stride 1, no padding, groups 1) "
                            "to make sparse")
        zfs = [s["zero_fraction"] for s in stats["skipped"] if "zero_fraction" in s] + [
            r["zero_fraction"] for r in stats["layers"] if r.get("below_threshold")]
        most = f", the sparsest {max(zfs):.1%} zeros" if zfs else ""
        raise DataError(f"{threshold_name} {sparse_threshold}: no 1x1 conv of {src} has "
                        f"that many zeros ({len(zfs)} 1x1 convs{most}); lower "
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
        "replaced": stats["replaced"], "dense_1x1_on_op": stats["dense_1x1_on_op"],
        "depthwise": stats["depthwise"],
        "dense_kxk": stats["dense_kxk"], "upsample": stats["upsample"],
        "se_gates": stats["se_gates"],
        "kept_dense_1x1": stats["kept_dense_1x1"],
        "conv_1x1_total": stats["replaced"] + stats["dense_1x1_on_op"]
        + stats["kept_dense_1x1"],
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

    from picosparse.x86.runtime import compile_config
    core = ov.Core()
    core.add_extension(str(lib))
    try:
        with sigstack.kept():
            core.compile_model(str(Path(model_dir) / XML_NAME), "CPU", compile_config(1))
    except RuntimeError as e:
        raise PicosparseError(f"OpenVINO cannot compile the x86-sparse model "
                              f"({_first_line(e)})") from e
