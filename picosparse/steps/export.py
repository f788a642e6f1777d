"""Inference-model export with a fixed input shape.

Why not PaddleDetection's Trainer.export: on paddle 2.6.2 it fails ("Can't call main_program
when full_graph=False"), and `to_static` on a model that still carries the pruner's hooks
segfaulted (STACK.md). So: a fresh model from the config, the weights loaded into it (mask
buffers dropped), then `to_static` + `jit.save`. The shape is fixed because the sparse .nb bakes
the input H x W into its format.
"""

import contextlib
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

from picosparse import paddle_env, weights as weights_io
from picosparse.atomic import atomic_dir
from picosparse.deploy import infer_cfg, program
from picosparse.errors import ConfigError, ParamError, PicosparseError
from picosparse.params import check, multiple_of_32, param


@dataclass(frozen=True, kw_only=True)
class ExportParams:
    """`picosparse export` / the pipeline kind `export`; checked when made."""

    input_size: int = param(None, "int?", check=multiple_of_32, help=(
        "Fixed input side (multiple of 32) [from the config's TestReader]."))
    postprocess: bool = param(True, "bool", flag="--no-postprocess",
                              help="Export without NMS/decoding.")

    def __post_init__(self):
        check(self)


def resolve_inputs(run_dir, config=None, weights=None, out=None):
    """(config, weights or None, out) for `export`: a `picosparse train` folder supplies its
    config.yml and model_final.pdparams unless -c / --weights are given."""
    from picosparse.errors import DataError
    run = Path(run_dir) if run_dir else None
    if run is not None and not run.is_dir():
        raise DataError(f"--run {run}: folder does not exist")
    if config is None:
        if run is None:
            raise ConfigError("export: pass --run RUN (a `picosparse train` output folder) "
                              "or -c CONFIG --weights W")
        config = run / "config.yml"
        if not config.is_file():
            raise ConfigError(f"--run {run}: no config.yml (not a `picosparse train` output "
                              "folder?); pass -c CONFIG")
    if weights is None and run is not None:
        weights = run / "model_final.pdparams"
        if not weights.is_file():
            raise DataError(f"--run {run}: no model_final.pdparams (training not finished?); "
                            "pass --weights")
    if out is None:
        out = run / "inference" if run else Path("output") / Path(config).stem / "inference"
    return Path(config), weights, Path(out)


def weights_from_config(cfg, config):
    """The config's own `weights:` key (PaddleDetection writes it without the suffix)."""
    if not cfg.get("weights"):
        raise ConfigError(f"{config}: no `weights:` key; pass --weights W or --run RUN")
    w = Path(str(cfg.get("weights")))
    return w if w.suffix == ".pdparams" else w.with_name(w.name + ".pdparams")


def default_input_size(cfg):
    """TestReader.inputs_def.image_shape, else EvalReader's Resize target_size (None if neither)."""
    shape = ((cfg.get("TestReader") or {}).get("inputs_def") or {}).get("image_shape")
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[-1], int) and shape[-1] > 0:
        return int(shape[-1])
    for t in (cfg.get("EvalReader") or {}).get("sample_transforms") or []:
        size = (t.get("Resize") or {}).get("target_size") if isinstance(t, dict) else None
        if isinstance(size, (list, tuple)) and size:
            return int(size[-1])
        if isinstance(size, int):
            return size
    return None


def check_input_size(size, where="--input-size"):
    """A size checked as a given input_size is (`where` names where it came from)."""
    if isinstance(size, bool) or not isinstance(size, int) or multiple_of_32(size):
        raise ConfigError(f"{where} {size}: {multiple_of_32(1)}")
    return size


def resolve_input_size(cfg, input_size, owner):
    """`input_size`, else the config's (checked): a ParamError of `owner` when it has none."""
    if input_size is not None:
        return input_size
    size = default_input_size(cfg)
    if size is None:
        raise ParamError("input_size", f"is needed: {cfg.path} has no TestReader.inputs_def."
                         "image_shape or EvalReader Resize target_size", owner=owner)
    return check_input_size(size, f"{cfg.path}: input size")


def _used_inputs(static_fn, spec):
    """Names in `spec` that the traced program reads (jit.save refuses unused feeds)."""
    prog = static_fn.concrete_program
    needed = set()

    def walk(o):  # outputs nest as dicts/lists/tuples of Variables
        if isinstance(o, dict):
            o = list(o.values())
        if isinstance(o, (list, tuple)):
            for x in o:
                walk(x)
        elif hasattr(o, "name"):
            needed.add(o.name)
    walk(prog.outputs)
    for op in reversed(prog.main_program.global_block().ops):
        if needed.intersection(op.output_arg_names):
            needed.update(op.input_arg_names)
    return [n for n in spec if n in needed]


def export(cfg, weights, out, params=ExportParams(), quiet_build=True):
    """Write OUT/model.pdmodel, OUT/model.pdiparams, OUT/infer_cfg.yml (atomically).

    Returns {"model_dir": Path, "model_file": Path, "params_file": Path, "infer_cfg": Path,
             "input_size": int, "inputs": {name: shape}, "postprocess": bool,
             "conv1x1": int, "conv1x1_zero_fraction": float|None,
             "conv1x1_layers": {program param name: zero fraction}}.
    """
    input_size, postprocess = resolve_input_size(cfg, params.input_size, ExportParams), \
        params.postprocess
    s = paddle_env.stack()
    paddle = s.paddle
    data = dict(cfg.data)
    if data.get("eval_size"):
        data["eval_size"] = [input_size, input_size]  # PicoHead's anchors follow eval_size
    model = paddle_env.build_model(dataclasses.replace(cfg, data=data))
    weights_io.load_into(model, weights)
    model.eval()
    if hasattr(model, "export_post_process"):
        model.export_post_process = bool(postprocess)
    if hasattr(model, "export_nms"):
        model.export_nms = bool(postprocess)
    InputSpec = paddle.static.InputSpec
    spec = {"image": InputSpec([1, 3, input_size, input_size], "float32", "image"),
            "im_shape": InputSpec([1, 2], "float32", "im_shape"),
            "scale_factor": InputSpec([1, 2], "float32", "scale_factor")}
    out = Path(out)
    with atomic_dir(out) as tmp:
        # ppdet's dy2static prints its progress to stdout; keep --json output clean
        with contextlib.redirect_stdout(io.StringIO()) if quiet_build else \
                contextlib.nullcontext():
            try:
                static = paddle.jit.to_static(model, input_spec=[spec], full_graph=True)
                used = _used_inputs(static.forward, spec)
                paddle.jit.save(static, str(tmp / "model"),
                                input_spec=[{n: spec[n] for n in used}])
            except (ValueError, TypeError, RuntimeError) as e:
                raise PicosparseError(f"export of {cfg.path} failed in paddle.jit "
                                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                                      ) from None
        info = tmp / "model.pdiparams.info"  # dygraph name map; deploy code never reads it
        if info.exists():
            info.unlink()
        sp = program.conv1x1_sparsity(tmp)
        shapes = {n: list(spec[n].shape) for n in used}
        extra = {"config": str(cfg.path), "weights": str(weights),
                 "conv1x1_zero_fraction": (round(sp["overall"], 6)
                                           if sp["overall"] is not None else None)}
        doc = infer_cfg.build(data, input_size, shapes, postprocess,
                              infer_cfg.label_list(data), extra)
        (tmp / infer_cfg.FILE).write_text(infer_cfg.dump(doc))
    return {"model_dir": out, "model_file": out / program.MODEL_FILE,
            "params_file": out / program.PARAMS_FILE, "infer_cfg": out / infer_cfg.FILE,
            "input_size": input_size, "inputs": shapes, "postprocess": bool(postprocess),
            "conv1x1": sp["conv1x1"], "conv1x1_zero_fraction": sp["overall"],
            "conv1x1_layers": sp["layers"]}

