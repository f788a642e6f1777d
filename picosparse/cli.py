"""The `picosparse` command: parses flags, calls library functions, renders results.

The only module that knows about click. Every PicosparseError becomes `Error: <message>`
and exit code 2 here (with the traceback only under --debug); a ParamError names the
parameter as the flag the user typed. Each step's options come from its parameter
dataclass (picosparse.params), so they cannot drift from the pipeline's keys.
"""

import json
import sys

import click

from picosparse import __version__, params
from picosparse.errors import ParamError, PicosparseError
from picosparse import progress
from picosparse.data.synth import DataParams
from picosparse.steps.bench import BenchParams
from picosparse.steps.evaluate import EvalParams
from picosparse.steps.export import ExportParams
from picosparse.steps.infer import InferParams
from picosparse.steps.lite import OptParams
from picosparse.steps.prune import PruneParams
from picosparse.steps.qat import QatParams
from picosparse.steps.quant import QuantParams
from picosparse.steps.train import TrainParams
from picosparse.steps.x86_sparse import X86SparseParams


def error_text(e):
    """The one line shown for a PicosparseError: a ParamError names the flag."""
    if isinstance(e, ParamError):
        return e.render(lambda name: params.flag_of(e.owner, name),
                        show_value=params.shown(e.owner, e.field))
    return str(e)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PicosparseError as e:
            if ctx.meta.get("picosparse.debug"):
                raise
            click.echo(f"Error: {error_text(e)}", err=True)
            ctx.exit(e.exit_code)


def _emit_json(obj, dest):
    """--json: '-' prints to stdout, a path is written atomically."""
    from picosparse.atomic import write_json
    if dest == "-":
        click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
    else:
        write_json(dest, obj)


def json_option(what):
    return click.option("--json", "json_out", metavar="FILE",
                        help=f"Write {what} as JSON to FILE ('-': stdout, instead of the table).")


config_option = click.option(
    "-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
    help="Detector config in PaddleDetection YAML format (with _BASE_).")
slim_option = click.option(
    "--slim-config", type=click.Path(dir_okay=False),
    help="Pruning recipe (PaddleDetection's UnstructuredPruner section + skip rules).")
override_option = click.option(
    "-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key, PaddleDetection style: -o TrainReader.batch_size=8.")


def _load_cfg(config, slim_config=None, overrides=(), sparsity=None, sparse_block=None):
    from picosparse.config import load_detector
    return load_detector(config, overrides=overrides, slim_config=slim_config,
                         sparsity=sparsity, sparse_block=sparse_block)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="picosparse")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (results still print).")
@click.pass_context
def cli(ctx, debug, quiet):
    """Unstructured (GMP) sparsity for PP-PicoDet: train, eval, export, opt, bench, run.

    \b
    Typical use:
      picosparse run pipelines/demo.yml
      picosparse data synth --out data/shapes
      picosparse train -c configs/demo/picodet_demo.yml --from-scratch --out runs/dense
      picosparse train -c configs/demo/picodet_demo.yml --sparsity 0.75 \\
        --pretrained runs/dense/model_final.pdparams --out runs/sparse75
      picosparse export --lite --run runs/sparse75
    """
    ctx.meta["picosparse.debug"] = debug
    progress.set_quiet(quiet)


@cli.command()
@json_option("the report")
def env(json_out):
    """Versions of the Paddle stack and checks for its known traps.

    Exits 1 when a check fails, so CI can gate on it.

    \b
    Example:
      picosparse env --json - | jq .ok
    """
    from picosparse.envcheck import report
    rep = report()
    if json_out:
        _emit_json(rep, json_out)
    if json_out != "-":
        from picosparse.render import env_table
        env_table(rep)
    sys.exit(0 if rep["ok"] else 1)


@cli.group()
def data():
    """Generate or validate COCO-format detection datasets."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@params.options(DataParams)
def data_synth(out, **kw):
    """Write a deterministic COCO dataset of simple shapes.

    \b
    Writes OUT/train.json, OUT/val.json, OUT/train/*.jpg, OUT/val/*.jpg.
    Example:
      picosparse data synth --out data/shapes --num-train 400 --num-val 100 --size 192
    """
    from picosparse.data.synth import synthesize
    s = synthesize(out, params.from_cli(DataParams, kw))
    click.echo(f"wrote {s['out']}")
    for split in ("train", "val"):
        click.echo(f"  {split + ':':6} {s['images'][split]} images, {s['annotations'][split]} "
                   f"boxes  ({s[split + '_json']}, {s[split + '_dir']})")
    click.echo("  categories: " + ", ".join(f"{c['id']} {c['name']}" for c in s["categories"]))


@data.command("check")
@click.option("--ann", required=True, type=click.Path(dir_okay=False), help="COCO annotation JSON.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Image folder.")
@json_option("the report")
def data_check(ann, images, json_out):
    """Validate a COCO detection dataset; exit 1 when it has errors.

    \b
    Example:
      picosparse data check --ann data/shapes/val.json --images data/shapes/val
      picosparse data check --ann data/shapes/val.json --images data/shapes/val --json -
    """
    from picosparse.data.check import MAX_PER_KIND, check_coco
    rep = check_coco(ann, images)
    if json_out:
        _emit_json(rep, json_out)
    if json_out == "-":
        sys.exit(0 if rep["ok"] else 1)
    from picosparse.render import table
    c = rep["counts"]
    rows = [(k.replace("_", " "), c[k]) for k in
            ("images", "annotations", "categories", "images_without_annotations")]
    rows += [(f"boxes: {name}", n) for name, n in c["per_category"].items()]
    table(f"data check {rep['ann']}", ["Item", "count"], rows)
    for title, items, totals in (("errors", rep["errors"], rep["error_counts"]),
                                 ("warnings", rep["warnings"], rep["warning_counts"])):
        rows, prev = [], None
        for it in items:  # grouped by kind: name and total on each group's first row
            new = it["kind"] != prev
            rows.append((it["kind"] if new else "", totals[it["kind"]] if new else "",
                         it["detail"]))
            prev = it["kind"]
        if rows:
            table(title, ["Kind", "Total", "Detail"], rows)
    n = sum(rep["error_counts"].values())
    capped = f" (at most {MAX_PER_KIND} listed per kind)" if n > len(rep["errors"]) else ""
    click.echo("ok: no errors" if rep["ok"] else
               f"{n} error(s) of {len(rep['error_counts'])} kind(s){capped}")
    sys.exit(0 if rep["ok"] else 1)


@cli.command()
@config_option
@slim_option
@override_option
@click.option("--sparsity", type=float, help="Target sparsity; without a recipe, the built-in default recipe.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Show zero fractions of these weights.")
@json_option("the rows")
def layers(config, slim_config, overrides, sparsity, weights, json_out):
    """List every parameter: shape, pruned or skipped (and by which rule), zero fraction.

    \b
    Example:
      picosparse layers -c configs/picodet/picodet_m_320_coco.yml --sparsity 0.75
      picosparse layers -c configs/picodet/picodet_m_320_coco.yml \\
        --slim-config configs/prune/picodet_m_unstructured_prune_75.yml
      picosparse layers -c configs/picodet/picodet_m_320_coco.yml --sparsity 0.75 --json -
    """
    from picosparse.sparsity.layers import layer_table
    cfg = _load_cfg(config, slim_config, overrides, sparsity)
    rows = layer_table(cfg, weights)
    if json_out:
        _emit_json(rows, json_out)
    if json_out != "-":
        from picosparse.render import layers_table
        layers_table(rows)
        if cfg.prune is not None:
            _echo_recipe(cfg.prune)


def _echo_recipe(spec):
    click.echo(f"recipe: {spec.recipe or 'the config / --slim-config'}: GMP to {spec.ratio:.0%} "
               f"from {spec.initial_ratio:.0%}, {spec.stable_epochs} stable + "
               f"{spec.pruning_epochs} pruning ({spec.pruning_steps} steps) + "
               f"{spec.tunning_epochs} tuning epochs, "
               f"{'local' if spec.local_sparsity else 'global'} sparsity"
               + (f" in {spec.sparse_block[0]}x{spec.sparse_block[1]} blocks"
                  if spec.blocked else "") + "; dense: "
               + (", ".join(r.describe() for r in spec.skip) or "nothing skipped"))


@cli.command()
@config_option
@slim_option
@override_option
@click.option("--sparsity", type=float, help="Target sparsity of pruned weights (overrides the recipe's ratio); 0 = dense training.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [output/<config name>]; one training at a time (locked).")
@params.options(TrainParams)
def train(config, slim_config, overrides, sparsity, out, **kw):
    """GMP unstructured-sparse (or dense) training of a PicoDet config.

    \b
    Example:
      picosparse train -c configs/picodet/picodet_m_320_coco.yml \\
        --slim-config configs/prune/picodet_m_unstructured_prune_75.yml \\
        --pretrained https://paddledet.bj.bcebos.com/models/picodet_m_320_coco.pdparams --eval

    \b
    Four GPUs, one process each (each trains on its shard; iterations per epoch and the GMP
    schedule follow the per-process count):
      picosparse train -c configs/picodet/picodet_m_320_coco.yml --sparsity 0.75 \\
        --pretrained https://paddledet.bj.bcebos.com/models/picodet_m_320_coco.pdparams \\
        --device gpu --nproc 4 --out runs/sparse75
      picosparse train -c configs/picodet/picodet_m_320_coco.yml --sparsity 0.75 \\
        --device gpu --nproc 4 --out runs/sparse75 --resume
    """
    from pathlib import Path
    p = params.from_cli(TrainParams, kw)
    cfg = _load_cfg(config, slim_config, overrides, sparsity, p.sparse_block)
    out = Path(out) if out else Path("output") / Path(config).stem
    if p.nproc > 1:
        from picosparse import launch
        ctx = click.get_current_context()
        argv = (["--debug"] if ctx.meta.get("picosparse.debug") else []) \
            + (["-q"] if progress.quiet() else []) + ["train", "-c", config] \
            + (["--slim-config", slim_config] if slim_config else []) \
            + [x for o in overrides for x in ("-o", o)] \
            + (["--sparsity", repr(sparsity)] if sparsity is not None else []) \
            + (["--sparse-block", "x".join(map(str, p.sparse_block))]
               if p.sparse_block is not None else []) \
            + (["--pretrained", p.pretrained] if p.pretrained else []) \
            + (["--from-scratch"] if p.from_scratch else []) + ["--out", str(out)] \
            + (["--eval"] if p.eval else []) + (["--resume"] if p.resume else []) \
            + (["--seed", str(p.seed)] if p.seed is not None else [])
        launch.train(cfg, out, p.nproc, argv, device=p.device, pretrained=p.pretrained,
                     from_scratch=p.from_scratch, resume=p.resume)
        return
    from picosparse.steps.train import train as run_train
    res = run_train(cfg, out, p)
    if res["rank"] == 0:
        from picosparse.render import train_summary
        train_summary(res)


@cli.command()
@config_option
@slim_option
@override_option
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Dense weights (.pdparams).")
@click.option("--sparsity", type=float, help="Target sparsity (overrides the recipe's ratio).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .pdparams.")
@params.options(PruneParams)
def prune(config, slim_config, overrides, weights, sparsity, out, **kw):
    """One-shot magnitude pruning with the same policy as train, no training.

    \b
    Example:
      picosparse prune -c configs/picodet/picodet_m_320_coco.yml \\
        --slim-config configs/prune/picodet_m_unstructured_prune_75.yml \\
        --weights dense.pdparams --sparsity 0.75 --out sparse75.pdparams
    """
    from picosparse.device import select
    from picosparse.steps.prune import oneshot
    p = params.from_cli(PruneParams, kw)
    cfg = _load_cfg(config, slim_config, overrides, sparsity, p.sparse_block)
    progress.say(select(p.device, cfg).line())
    res = oneshot(cfg, weights, out)
    bs = res.get("block_sparsity")
    blocks = (f", {bs['overall']:.2%} of {bs['block'][0]}x{bs['block'][1]} blocks all zero"
              if bs and bs.get("overall") is not None else "")
    click.echo(f"wrote {res['weights']}: {res['sparsity']:.2%} zeros in "
               f"{len(res['layers'])} pruned parameters{blocks}")


@cli.command("eval")
@config_option
@slim_option
@override_option
@params.options(EvalParams)
@json_option("the metrics")
def eval_(config, slim_config, overrides, json_out, **kw):
    """COCO mAP and per-layer sparsity of weights, or of an exported model.

    --model DIR scores the deployed files instead (a Paddle inference folder, an x86_sparse
    folder, an OpenVINO IR folder) through picosparse.deploy.Detector, at the model's own
    input size, on the config's EvalDataset; sparsity is then that of its 1x1 convs.

    \b
    Example:
      picosparse eval -c configs/demo/picodet_demo.yml --weights runs/x/model_final.pdparams --json -
      picosparse eval -c configs/demo/picodet_demo.yml --model runs/x/inference/x86_sparse
    """
    from picosparse.device import select
    from picosparse.steps.evaluate import run as evaluate
    p = params.from_cli(EvalParams, kw)
    cfg = _load_cfg(config, slim_config, overrides)
    if p.weights is not None:  # the Detector picks its own runtime; --device is for weights
        progress.say(select(p.device, cfg).line())
    res = evaluate(cfg, p)
    if json_out:
        _emit_json(res, json_out)
    if json_out != "-":
        from picosparse.render import metrics_table
        metrics_table(res)


@cli.command()
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False), help="Detector config (default: the one saved in --run).")
@override_option
@click.option("--weights", type=click.Path(dir_okay=False), help="Weights (default: model_final.pdparams in --run).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="A `picosparse train` output folder.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [RUN/inference, else output/<config name>/inference].")
@params.options(ExportParams)
@click.option("--lite", is_flag=True, help="Also run `picosparse opt` into OUT/model.nb (ARM).")
@click.option("--sparse/--no-sparse", default=None, help="With --lite: force the sparse pass on/off [auto: on when some 1x1 conv reaches --sparse-threshold zeros].")
@click.option("--sparse-threshold", type=float, default=params.default_of(OptParams, "sparse_threshold"), show_default=True, help="With --lite / --x86-sparse: min zero fraction for a 1x1 conv to become sparse.")
@click.option("--x86-sparse", "x86_sparse", is_flag=True, help="Also write OUT/x86_sparse: OpenVINO IR + picosparse's sparse 1x1 op (x86 CPUs).")
@params.options(X86SparseParams, "nchw_ops", "dense_1x1", prefix="With --x86-sparse: ")
@click.option("--int8", is_flag=True, help="Also write OUT/int8: INT8 model (`picosparse quant` defaults); with --lite its .nb too, INT8 kernels verified.")
@params.options(QuantParams, "calib_images", prefix="With --int8: ")
def export(config, overrides, weights, run_dir, out, lite, sparse, sparse_threshold, x86_sparse,
           int8, **kw):
    """Export an inference model (model.pdmodel/.pdiparams + infer_cfg.yml).

    Builds a fresh model from the config, loads the weights (pruner mask buffers are
    dropped), and saves it with a fixed input shape (the sparse .nb bakes it in). With
    --run, the config and weights come from a `picosparse train` folder; otherwise -c and
    --weights (or the config's `weights:` key).

    \b
    Example:
      picosparse export --run runs/sparse75 --lite
      picosparse export -c configs/demo/picodet_demo.yml --weights w.pdparams --out inf
      picosparse export --run runs/sparse75 --no-postprocess --x86-sparse
      picosparse export --run runs/sparse75 --lite --int8   # + OUT/int8/model.nb, INT8

    \b
    --x86-sparse writes OUT/x86_sparse (model.xml/.bin, libpicosparse_ops.so, x86_sparse.json,
    infer_cfg.yml): every 1x1 conv with >= --sparse-threshold zeros runs picosparse's sparse
    op, BN folded, and with --dense-1x1 on (default) the other 1x1 convs run it too, with all
    their weights; with --nchw-ops on (default) the depthwise/KxK convs and upsampling between
    them run picosparse's dense NCHW ops too. Run it with
    picosparse.x86.runtime.load_model(dir, threads) or time it with
    `picosparse bench --runtime openvino --model OUT --model OUT/x86_sparse`.
    """
    from picosparse.steps.export import export as do_export, resolve_inputs, weights_from_config
    p = params.from_cli(ExportParams, kw)
    # the other steps' parameters are checked now: a bad one fails before the slow export
    quant_p = params.from_cli(QuantParams, kw) if int8 else None
    if lite:
        OptParams(sparse=bool(sparse), sparse_threshold=sparse_threshold)
    if x86_sparse:
        from picosparse.steps import x86_sparse as x86
        x86_p = params.from_cli(X86SparseParams, kw, sparse_threshold=sparse_threshold,
                                spelled={"sparse_threshold": "--sparse-threshold"})
        x86.check_stack()  # no OpenVINO: fail before exporting
    config, weights, out = resolve_inputs(run_dir, config, weights, out)
    cfg = _load_cfg(config, overrides=overrides)
    weights = weights or weights_from_config(cfg, config)
    res = do_export(cfg, weights, out, p)
    zf = res["conv1x1_zero_fraction"]
    click.echo(f"exported {res['model_dir']}/ (model.pdmodel, model.pdiparams, infer_cfg.yml): "
               f"input {res['input_size']}x{res['input_size']}, "
               f"{'with' if res['postprocess'] else 'without'} NMS, {res['conv1x1']} 1x1 convs"
               + (f" at {zf:.1%} zeros" if zf is not None else ""))
    if lite:
        _echo_opt(_nb(res, sparse, sparse_threshold, int8=False, say_auto=True))
    if int8:
        from picosparse.steps.quant import quantize
        q = quantize(cfg, res["model_dir"], params=quant_p)
        _echo_quant(q)
        if lite:
            _echo_opt(_nb(q, sparse, sparse_threshold, int8=True))
    if x86_sparse:
        _echo_x86(x86.convert(res["model_dir"], x86_p), res["postprocess"])


def _nb(res, sparse, sparse_threshold, int8, say_auto=False):
    """MODEL_DIR/model.nb of an export's or quant's result; sparse None: auto."""
    from pathlib import Path
    from picosparse.steps.lite import auto_sparse, optimize
    if sparse is None:
        sparse = auto_sparse(res["model_dir"], sparse_threshold)
        if not sparse and say_auto:
            click.echo(f"no 1x1 conv has >= {sparse_threshold:.0%} zeros: writing a dense "
                       ".nb (pass --sparse to insist)")
    return optimize(res["model_dir"], Path(res["model_dir"]) / "model.nb",
                    OptParams(sparse=sparse, sparse_threshold=sparse_threshold), int8=int8)


def _echo_x86(r, postprocess):
    mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731
    n = r["depthwise"] + r.get("dense_kxk", 0) + r.get("upsample", 0)
    dw = (f", {r['depthwise']} depthwise + {r.get('dense_kxk', 0)} dense KxK convs and "
          f"{r.get('upsample', 0)} upsamplings on picosparse's NCHW ops") if n else ""
    click.echo(f"wrote {r['out_dir']}/ (OpenVINO {r['openvino'].split('-')[0]} IR + sparse op): "
               f"{r['replaced']} of {r['conv_1x1_total']} 1x1 convs -> SparseConv1x1 "
               f"(threshold {r['sparse_threshold']:.0%})"
               + (f" and {r['dense_1x1_on_op']} below it on the same op with all their weights"
                  if r.get("dense_1x1_on_op") else "") + ", 1x1 weights "
               f"{mb(r['dense_1x1_weight_bytes'])} dense -> {mb(r['sparse_weight_bytes'])} "
               f"sparse{dw}")
    if postprocess:
        click.echo("note: this model includes NMS; OpenVINO 2026.4's multiclass_nms crashed "
                   "on some inputs here: for OpenVINO, export with --no-postprocess")


def _echo_opt(r):
    mb = r["size_bytes"] / 1e6
    what = (f"{r['sparse_conv2d']} of {r['conv1x1']} 1x1 convs -> sparse_conv2d "
            f"(threshold {r['sparse_threshold']:.0%})" if r["sparse"] else
            f"dense, {r['conv1x1']} 1x1 convs")
    prec = r.get("precision", "fp32").upper()
    click.echo(f"wrote {r['nb']} ({mb:.2f} MB, {r['valid_targets']}, {prec}, Paddle-Lite "
               f"{r['lite_version']}): {what}"
               + (" (INT8 kernels verified)" if prec == "INT8" else ""))


@cli.command()
@click.option("--model-dir", required=True, type=click.Path(file_okay=False), help="Exported inference model folder.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .nb file.")
@params.options(OptParams)
@json_option("the result")
def opt(model_dir, out, json_out, **kw):
    """Convert to a Paddle-Lite .nb with paddle_lite_opt and verify the sparse pass ran.

    Passes --sparse_model=true (lowercase: the seed's `True` silently gives a dense model),
    then counts the sparse_conv2d kernels in the .nb and fails when there are none. The
    sparse pass exists for ARM only and its kernels are FP32/INT8: --sparse with x86/OpenCL
    targets or --fp16 is refused. OUT gets a .nb suffix if it has none.

    \b
    Example:
      picosparse opt --model-dir runs/sparse75/inference --out sparse75.nb
      picosparse opt --model-dir runs/dense/inference --out dense_x86.nb --no-sparse --valid-targets x86
    """
    from picosparse.steps.lite import optimize
    res = optimize(model_dir, out, params.from_cli(OptParams, kw))
    if json_out:
        _emit_json(res, json_out)
    if json_out != "-":
        _echo_opt(res)


@cli.command()
@click.option("--model-dir", required=True, type=click.Path(file_okay=False), help="Exported FP32 inference model folder (`picosparse export`).")
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False), help="Detector config whose TrainDataset/EvalDataset gives the calibration images [the one the export was made from].")
@override_option
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [MODEL_DIR/int8].")
@params.options(QuantParams)
@click.option("--lite", is_flag=True, help="Also write OUT/model.nb (ARM), INT8 kernels verified.")
@click.option("--sparse/--no-sparse", default=None, help="With --lite: force the sparse pass on/off [auto: on when some 1x1 conv reaches --sparse-threshold zeros].")
@click.option("--sparse-threshold", type=float, default=params.default_of(OptParams, "sparse_threshold"), show_default=True, help="With --lite: min zero fraction for a 1x1 conv to become sparse.")
@json_option("the result")
def quant(model_dir, config, overrides, out, lite, sparse, sparse_threshold, json_out, **kw):
    """INT8 post-training quantization of an exported model; exact zeros verified kept.

    PaddleSlim's quant_post_static, calibrated on images of the config's dataset through the
    model's own preprocessing (infer_cfg.yml). Every weight that was exactly zero is checked
    to be exactly zero in the INT8 file (fails otherwise). OUT is an inference model folder
    with infer_cfg.yml: `picosparse opt` on it (or --lite) writes the INT8 .nb with the
    sparse pass and verifies its sparse convs are INT8 kernels; `picosparse eval --model OUT`
    measures its mAP. --backend openvino quantizes with NNCF into an OpenVINO IR instead,
    the x86 baseline for `picosparse bench --runtime openvino`.

    \b
    Example:
      picosparse quant --model-dir runs/sparse75/inference --lite
      picosparse quant --model-dir runs/dense/inference --backend openvino --out dense_ov_int8
    """
    from picosparse.errors import ConfigError
    from picosparse.steps.quant import config_for, quantize
    p = params.from_cli(QuantParams, kw)
    if lite and p.backend != "paddle":
        raise ConfigError(f"--lite with --backend {p.backend}: Paddle-Lite reads PaddleSlim's "
                          "INT8 models only (--backend paddle)")
    if lite:
        OptParams(sparse=bool(sparse), sparse_threshold=sparse_threshold)  # checked now
    cfg = _load_cfg(config_for(model_dir, config), overrides=overrides)
    res = quantize(cfg, model_dir, out, p)
    if json_out != "-":
        _echo_quant(res)
    if lite:
        res["opt"] = _int8_nb(res, sparse, sparse_threshold, json_out != "-")
    if json_out:
        _emit_json(res, json_out)


def _int8_nb(res, sparse, sparse_threshold, echo=True):
    r = _nb(res, sparse, sparse_threshold, int8=True)
    if echo:
        _echo_opt(r)
    return r


def _echo_quant(r):
    z = r["zeros"]
    how = (f"PaddleSlim {r['algo']}, {' + '.join(r['quantized_ops'])} INT8"
           if r["backend"] == "paddle" else "NNCF, OpenVINO IR")
    kept = (f"; {z['int8_weights']} of {z['weights']} conv weights INT8, all {z['zeros']} "
            f"exact zeros kept ({z['rounded_to_zero']} more rounded to zero)") if z else ""
    click.echo(f"wrote {r['model_dir']}/ (INT8, {how}, calibrated on {r['calib_images']} "
               f"{r['split']} images){kept}")


@cli.command()
@config_option
@override_option
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Weights to fine-tune (.pdparams), e.g. a sparse model_final.pdparams.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder: the INT8 inference model.")
@params.options(QatParams)
@click.option("--lite", is_flag=True, help="Also write OUT/model.nb (ARM), INT8 kernels verified.")
@json_option("the result")
def qat(config, overrides, weights, out, lite, json_out, **kw):
    """Quantization-aware fine-tuning with the weights' zeros kept exact; INT8 export.

    For when `picosparse quant` loses too much mAP: PaddleSlim's QAT on the model built from
    the config, trained on its TrainDataset with its optimizer; every conv weight that is
    exactly zero in --weights is put back to zero after each optimizer step and checked
    zero in the saved INT8 weights. OUT is the same INT8 format as `quant` writes.

    \b
    Example:
      picosparse qat -c runs/sparse75/config.yml --weights runs/sparse75/model_final.pdparams \\
        --epochs 2 --lr 0.005 --out runs/sparse75/qat --lite
    """
    from picosparse.steps.qat import qat as run_qat
    p = params.from_cli(QatParams, kw)
    res = run_qat(_load_cfg(config, overrides=overrides), weights, out, p)
    if json_out != "-":
        z = res["zeros"]
        click.echo(f"wrote {res['model_dir']}/ (INT8, QAT {res['iters']} iterations, last loss "
                   f"{res['loss']:.3f}): {z['weights']} masked conv weights "
                   f"({z['int8_weights']} INT8), all {z['zeros']} zeros exact")
    if lite:  # auto sparse pass at opt's own threshold, as quant --lite without flags
        res["opt"] = _int8_nb(res, None, OptParams().sparse_threshold, json_out != "-")
    if json_out:
        _emit_json(res, json_out)


@cli.command()
@click.option("--model", "models", multiple=True, required=True, help="Inference model dir, .nb, x86-sparse or OpenVINO IR folder; DIR@bf16 runs DIR at OpenVINO's BF16 (repeat; the first is the baseline).")
@params.options(BenchParams)
@json_option("results")
def bench(models, json_out, **kw):
    """Dense vs sparse latency side by side, on this machine, in one run.

    Median and p90 per thread count (capped by the cores present), size, and the seed's
    speed-up (base - this) / this plus the ratio base / this, against the first --model.
    No x86 runtime has sparse kernels: expect no speed-up from sparse weights alone. With
    --runtime openvino a --model may be the OUT/x86_sparse folder of `picosparse export
    --x86-sparse`: it runs picosparse's sparse 1x1 op (FP32; DIR@bf16: its BF16 kernels, fastest
    on weights pruned in 1x2 blocks, `prune --sparse-block 1x2`) beside dense OpenVINO (FP32
    unless --precision bf16, or DIR@bf16 for one model), same threads, one interleaved run:
    the best dense model at any precision and the sparse one in one table; --per-layer adds a
    table of each replaced layer's time against the dense conv it replaced. An OpenVINO INT8 folder
    (`picosparse quant --backend openvino`, NNCF) is the x86 INT8 baseline; the Precision
    column says what each model ran (a PaddleSlim INT8 folder under Paddle Inference is
    `int8-simulated`: FP32 plus quantize/dequantize ops). The seed's speed-ups are
    ARM numbers: with --adb SERIAL --benchmark-bin PATH the .nb files (OUT/model.nb of
    `export --lite`, or .nb paths) are pushed to /data/local/tmp/picosparse and timed with
    Paddle-Lite's benchmark_bin (min/max/avg). OpenVINO 2026.4's multiclass_nms crashed
    on some inputs here: time OpenVINO on exports made with --no-postprocess.

    \b
    Example:
      picosparse bench --model runs/dense/inference --model runs/sparse75/inference --threads 1,2
      picosparse bench --runtime openvino --model runs/dense/inference --model runs/sparse75/inference
      picosparse bench --runtime openvino --model runs/sparse75/inference \\
        --model runs/sparse75/inference/x86_sparse --threads 1,2 --per-layer
      picosparse bench --adb 0123456789ABCDEF --benchmark-bin build/benchmark_bin \\
        --model runs/dense/inference --model runs/sparse75/inference --threads 1,4
      picosparse bench --runtime openvino --model runs/dense/inference \\
        --model runs/dense/inference@bf16 --model runs/dense/inference/int8 \\
        --model runs/sparse75/inference/x86_sparse   # int8: quant --backend openvino
    """
    from picosparse.steps.bench import bench as do_bench
    p = params.from_cli(BenchParams, kw)
    res = do_bench(list(models), p)
    if json_out:
        _emit_json(res, json_out)
    if json_out != "-":
        from picosparse.render import bench_table
        bench_table(res)
        if p.per_layer:
            from picosparse.render import per_layer_tables
            per_layer_tables(res)


@cli.command()
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Exported model folder: `export` output (with or without NMS), its x86_sparse folder, or an OpenVINO IR folder.")
@click.option("--image", required=True, type=click.Path(), help="An image, or a folder of images.")
@click.option("--out", type=click.Path(), help="Write a copy of each image with the boxes drawn here (same file name).")
@json_option("the detections")
@params.options(InferParams)
def infer(model_dir, image, out, json_out, **kw):
    """Detect objects in images with an exported model; draw the boxes.

    Preprocessing, labels and NMS settings come from the model's infer_cfg.yml. Exports
    without NMS (`export --no-postprocess`, the way to export for OpenVINO and x86-sparse)
    are decoded by picosparse (PicoDet's DFL boxes, class-aware NMS, as PaddleDetection
    does), so every artifact gives the same boxes, in the original image's pixels.

    \b
    Example:
      picosparse infer --model runs/x/inference/x86_sparse --image bus.jpg --out shown/
      picosparse infer --model runs/x/inference --image photos/ --json - --threshold 0.3
    """
    from picosparse.steps.infer import infer as run_infer
    res = run_infer(model_dir, image, out, params.from_cli(InferParams, kw))
    if json_out:
        _emit_json(res, json_out)
    if json_out != "-":
        from picosparse.render import infer_table
        infer_table(res)


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--out", "run_dir", type=click.Path(file_okay=False), help="Run folder [runs/<pipeline name>].")
@click.option("--force", is_flag=True, help="Rerun every step, ignoring the cache.")
@click.option("--from", "from_step", help="Rerun this step and every step that uses its outputs.")
@click.option("--only", "only_step", help="Consider only this step (cached unless changed or "
              "--force); the steps it reads from must have run.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan; run nothing.")
@click.option("-o", "--override", "overrides", multiple=True, metavar="STEP.KEY=VALUE",
              help="Override a pipeline value (YAML): -o dense.seed=1, "
                   "-o dense.overrides+=epoch=2 (append), -o vars.dataset_root=/data/coco.")
def run(pipeline, run_dir, force, from_step, only_step, dry_run, overrides):
    """Run a YAML pipeline (data, train, prune, eval, export, opt, quant, qat, bench, report).

    Steps whose parameters and input files are unchanged since their last successful run
    are skipped; a failed or interrupted step reruns (train resumes from its checkpoint).
    RUN_DIR gets manifest.json, one folder per step, report.md/report.json and plots/.

    \b
    Example:
      picosparse run pipelines/demo.yml --out runs/demo
      picosparse run pipelines/demo.yml --out runs/demo --dry-run -o sparse75.seed=1
    """
    from picosparse import render
    from picosparse.pipeline import plan_pipeline, run_pipeline
    opts = dict(run_dir=run_dir, overrides=overrides, force=force, from_step=from_step,
                only_step=only_step)
    if dry_run:
        render.pipeline_plan(plan_pipeline(pipeline, **opts))
        return
    # the command as parsed (not sys.argv): what reproduces this run, whoever invoked it
    command = ["picosparse", "run", pipeline] + (["--out", run_dir] if run_dir else []) \
        + (["--force"] if force else []) + (["--from", from_step] if from_step else []) \
        + (["--only", only_step] if only_step else []) + [x for o in overrides for x in ("-o", o)]
    render.run_summary(run_pipeline(pipeline, command=command, **opts))


def main():
    cli(prog_name="picosparse")


if __name__ == "__main__":
    main()
