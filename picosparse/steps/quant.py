"""INT8 post-training quantization of an exported inference model, zeros kept exactly.

PaddleSlim's `quant_post_static` (the path Paddle-Lite's INT8 ARM kernels, sparse ones
included, are made for) on a `picosparse export` folder: calibration images come from the
detector config's TrainDataset or EvalDataset and go through the model's own infer_cfg.yml
preprocessing, so the ranges are those the deployed model sees. Traps handled here (STACK.md):
it needs a static-mode paddle.io.DataLoader fed through `paddle.static.data` variables, batch
1 for our fixed-shape exports; matmul ops stay FP32 (PicoDet's DFL projection weight is 1-D
and breaks the histogram pass); static mode is switched off again whatever happens.

Depthwise convs stay FP32 unless asked: their inputs' ranges differ ~100x between channels
(PicoDet-S's stem output: 4 to 600), which one per-tensor INT8 scale cannot hold. With them
quantized, PicoDet-S 320 fell from mAP 0.387 to 0.010 on coco128; with only the (1x1 and stem)
conv2d quantized, to 0.378. The 1x1 convs, where the sparse kernels and ~90% of the
multiply-adds are, are INT8 either way.

Quantizing weights per channel maps 0.0 to the integer 0, but that is checked, not assumed:
every weight that was exactly zero must be exactly zero in the INT8 file (weights too small
for their channel's scale may round to new zeros, which are counted).

`backend="openvino"` quantizes for x86 instead with NNCF (OpenVINO's own INT8, nncf_quant.py),
writing an OpenVINO IR folder that `bench --runtime openvino` and the Detector run: the
baseline an x86 user would pick, not a Paddle-Lite input.
"""

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from picosparse import paddle_env, progress
from picosparse.atomic import atomic_dir
from picosparse.deploy import infer_cfg, program
from picosparse.errors import ConfigError, DataError, ParamError, PicosparseError, StackError
from picosparse.params import at_least, check, param

# PaddleSlim's activation calibration methods; weights are always per-channel abs-max
ALGOS = ("KL", "hist", "avg", "mse", "emd", "abs_max")
DEFAULT_ALGO = "hist"
SPLITS = {"train": "TrainDataset", "eval": "EvalDataset"}
BACKENDS = ("paddle", "openvino")
QUANT_OPS = ("quantize_linear", "dequantize_linear", "fake_quantize_abs_max",
             "fake_quantize_range_abs_max", "fake_quantize_moving_average_abs_max",
             "fake_quantize_dequantize_moving_average_abs_max",
             "fake_channel_wise_quantize_abs_max", "fake_channel_wise_dequantize_max_abs",
             "fake_dequantize_max_abs")
QUANT_JSON = "quant.json"
OUT_DIR = "int8"  # default output: MODEL_DIR/int8, as export's x86_sparse


@dataclass(frozen=True, kw_only=True)
class QuantParams:
    """`picosparse quant` (and `export --int8`) / the pipeline kind `quant`; checked when made."""

    calib_images: int = param(32, "int", check=at_least(1), help=(
        "Calibration images (a seeded sample of the split)."))
    calib_split: str = param("train", "str", choices=tuple(SPLITS), help=(
        "Calibrate on the config's train or eval set."))
    algo: str = param(DEFAULT_ALGO, "str", choices=ALGOS, help=(
        "PaddleSlim activation calibration."))
    backend: str = param("paddle", "str", choices=BACKENDS, help=(
        "paddle (PaddleSlim, for Paddle-Lite / ARM) or openvino (NNCF, an x86 IR)."))
    quantize_depthwise: bool = param(False, "bool", help=(
        "Also quantize depthwise convs (PicoDet's per-channel ranges make this lose much more "
        "mAP)."))
    seed: int = param(0, "int", help="Seed of the calibration sample.")

    def __post_init__(self):
        check(self)
        if self.backend == "openvino" and self.quantize_depthwise:
            raise ParamError("quantize_depthwise", "with {backend} openvino: PaddleSlim only "
                             "(NNCF picks its own ops)", True, QuantParams, show_value=False)


def quant_ops(model_dir):
    """{op type: count} of the quantize/dequantize ops in an exported program."""
    model, _ = program.model_files(model_dir)
    out = {}
    for op in program.read_program(model).blocks[0].ops:
        if op.type in QUANT_OPS:
            out[op.type] = out.get(op.type, 0) + 1
    return out


def is_quantized(model_dir):
    return bool(quant_ops(model_dir))


def calibration_images(cfg, split="train", n=32, seed=0):
    """`n` image files of the config's TrainDataset / EvalDataset, a seeded sample (all of
    them when the set is smaller, with a note)."""
    from picosparse.steps.data_paths import check_dataset
    key = SPLITS[split]
    check_dataset(cfg, key)
    np = paddle_env.stack().np
    paddle_env.activate(cfg.data)
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = paddle_env.create(key)()
        dataset.parse_dataset()
    files = sorted({str(r["im_file"]) for r in dataset.roidbs})
    if not files:
        raise DataError(f"{key} {dataset.get_anno()}: no images to calibrate on")
    if len(files) < n:
        progress.say(f"note: {n} calibration images asked, {key} has {len(files)}; "
                     f"calibrating on all of them")
        return files
    pick = np.random.RandomState(seed).permutation(len(files))[:n]
    return [files[i] for i in sorted(pick)]


def _infer_doc(model_dir):
    cfg_file = infer_cfg.find(model_dir)
    if cfg_file is None:
        raise DataError(f"--model-dir {model_dir}: no infer_cfg.yml (it holds the "
                        "preprocessing the calibration images need; `picosparse export` "
                        "writes it)")
    return infer_cfg.read(cfg_file)


def _feeds(doc, images):
    """One feed dict per image, preprocessed as the model's infer_cfg.yml says."""
    size = infer_cfg.input_size(doc)
    return [infer_cfg.preprocess(infer_cfg.read_image(f, "calibration image"),
                                 doc["Preprocess"], size) for f in images]


@contextlib.contextmanager
def _quiet_loggers(prefixes=("paddle", "paddleslim")):
    """PaddleSlim's and Paddle's quantization loggers print INFO lines to the stderr they saw
    when created (redirecting sys.stderr does not reach them): raised to ERROR meanwhile."""
    import logging
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.split(".")[0] in prefixes]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.ERROR))
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)


@contextlib.contextmanager
def _static_mode(paddle):
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()


@contextlib.contextmanager
def _faster_quant_passes():
    """Two quadratic spots of Paddle 2.6's quantization passes, removed for their duration
    (they took ~60% of a PicoDet quantization here):
    - IrGraph.link_to / update_input_link assert that their nodes are in graph.nodes(), which
      rebuilds the whole node set on every call: the same links, minus that check;
    - AddQuantDequantForInferencePass looks each scale up in graph.all_persistable_nodes(),
      a scan of every node, twice per quantized tensor: while its apply() runs, that set is
      computed once and grown by create_persistable_node (its first loop only adds nodes;
      any removal drops the cache)."""
    IrGraph, AddQDQ = paddle_env.quant_pass_classes()
    saved = (IrGraph.link_to, IrGraph.update_input_link, IrGraph.all_persistable_nodes,
             IrGraph.create_persistable_node, IrGraph.safe_remove_nodes, AddQDQ.apply)
    all0, create0, remove0, apply0 = saved[2:]
    cache = {}  # id(C++ graph) -> set of IrVarNode, only while AddQDQ.apply runs
    active = [False]

    def link_to(self, node_in, node_out):
        node_in.append_output(node_out)
        node_out.append_input(node_in)

    def update_input_link(self, old, new, op_node):
        old.remove_output(op_node)
        op_node.remove_input(old)
        new.append_output(op_node)
        op_node.append_input(new)
        op_node.rename_input(old.name(), new.name())

    def all_persistable_nodes(self):
        if not active[0]:
            return all0(self)
        key = id(self.graph)
        if key not in cache:
            cache[key] = all0(self)
        return cache[key]

    def create_persistable_node(self, *args, **kwargs):
        node = create0(self, *args, **kwargs)
        if id(self.graph) in cache:
            cache[id(self.graph)].add(node)
        return node

    def safe_remove_nodes(self, nodes):
        cache.pop(id(self.graph), None)
        return remove0(self, nodes)

    def apply(self, graph):
        active[0] = True
        try:
            return apply0(self, graph)
        finally:
            active[0] = False
            cache.clear()

    (IrGraph.link_to, IrGraph.update_input_link, IrGraph.all_persistable_nodes,
     IrGraph.create_persistable_node, IrGraph.safe_remove_nodes, AddQDQ.apply) = (
        link_to, update_input_link, all_persistable_nodes, create_persistable_node,
        safe_remove_nodes, apply)
    try:
        yield
    finally:
        (IrGraph.link_to, IrGraph.update_input_link, IrGraph.all_persistable_nodes,
         IrGraph.create_persistable_node, IrGraph.safe_remove_nodes, AddQDQ.apply) = saved


def _post_static(model_dir, out_dir, feeds, algo, quantize_depthwise=False):
    """Run quant_post_static on MODEL_DIR into OUT_DIR with one batch per feed dict."""
    s = paddle_env.stack()
    paddle = s.paddle
    quant_post_static = paddle_env.paddleslim_quant_post_static()
    model_file, params_file = program.model_files(model_dir)
    names = program.input_names(program.read_program(model_file))
    missing = [n for n in names if n not in feeds[0]]
    if missing:
        raise DataError(f"--model-dir {model_dir}: model input(s) {', '.join(missing)} cannot "
                        "be fed (picosparse feeds image, im_shape, scale_factor)")

    class Calib(paddle.io.Dataset):
        def __len__(self):
            return len(feeds)

        def __getitem__(self, i):
            return tuple(feeds[i][n][0] for n in names)

    log = io.StringIO()
    scope = paddle.static.Scope()  # no state shared with another quantization
    with _static_mode(paddle), paddle.static.scope_guard(scope), _faster_quant_passes(), \
            _quiet_loggers(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        place = paddle.CPUPlace()
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            feed_list = [paddle.static.data(n, list(feeds[0][n].shape), str(feeds[0][n].dtype))
                         for n in names]
        loader = paddle.io.DataLoader(Calib(), feed_list=feed_list, places=place,
                                      return_list=False, batch_size=1, shuffle=False)
        try:
            quant_post_static(
                executor=paddle.static.Executor(place), model_dir=str(model_file.parent),
                quantize_model_path=str(out_dir), data_loader=loader,
                model_filename=model_file.name, params_filename=params_file.name,
                batch_size=1, batch_nums=len(feeds), scope=scope, algo=algo,
                quantizable_op_type=["conv2d"] + ["depthwise_conv2d"] * bool(quantize_depthwise),
                weight_bits=8, activation_bits=8,
                weight_quantize_type="channel_wise_abs_max", onnx_format=True)
        except (ValueError, RuntimeError, AssertionError, IndexError, KeyError) as e:
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise PicosparseError(f"PaddleSlim quant_post_static failed on {model_dir} "
                                  f"(algo {algo}): {why}") from None
    for f in ("model.pdmodel", "model.pdiparams"):
        if not (Path(out_dir) / f).is_file():
            raise StackError(f"PaddleSlim quant_post_static wrote no {f} for {model_dir}")


def check_zeros(src_dir, quant_dir):
    """Every conv weight that is exactly zero in SRC_DIR must be exactly zero in QUANT_DIR.

    Returns {"weights": n conv weights compared, "zeros": exact zeros in the source,
             "rounded_to_zero": nonzero weights the INT8 grid maps to 0,
             "int8_weights": conv weights stored as int8}; a one-line DataError naming the
    first layer when any zero was lost.
    """
    np = paddle_env.stack().np
    src_model, src_params = program.model_files(src_dir)
    q_model, q_params = program.model_files(quant_dir)
    src = program.read_params(src_model, src_params)
    q = program.read_params(q_model, q_params)
    src_convs = {c["filter"]: c for c in program.convs(program.read_program(src_model))}
    q_filters = {c["filter"] for c in program.convs(program.read_program(q_model))}
    zeros = rounded = lost = int8 = 0
    first = None
    for name in sorted(src_convs):
        if name not in q or name not in q_filters:
            raise DataError(f"{quant_dir}: conv weight {name} of {src_dir} is missing from the "
                            "quantized model")
        a, b = src[name], q[name]
        if tuple(a.shape) != tuple(b.shape):
            raise DataError(f"{quant_dir}: conv weight {name} has shape {list(b.shape)}, "
                            f"{list(a.shape)} in {src_dir}")
        z = a == 0
        n_lost = int((z & (b != 0)).sum())
        zeros += int(z.sum())
        rounded += int((~z & (b == 0)).sum())
        int8 += b.dtype == np.int8
        if n_lost and first is None:
            first = (name, n_lost, int(z.sum()))
        lost += n_lost
    if lost:
        name, n, of = first
        raise DataError(f"{quant_dir}: quantization lost {lost} exact zeros ({name}: {n} of "
                        f"{of}); the INT8 model is not as sparse as {src_dir}")
    return {"weights": len(src_convs), "zeros": zeros, "rounded_to_zero": rounded,
            "int8_weights": int(int8)}


def config_for(model_dir, config=None):
    """The detector config whose datasets give the calibration images: `config`, else the one
    the export was made from (its infer_cfg.yml records it)."""
    program.model_files(model_dir)
    if config:
        return Path(config)
    f = infer_cfg.find(model_dir)
    recorded = ((infer_cfg.read(f).get("picosparse") or {}).get("config")) if f else None
    if not recorded:
        raise ConfigError(f"--model-dir {model_dir}: its infer_cfg.yml names no config; pass "
                          "-c CONFIG (its TrainDataset/EvalDataset gives the calibration images)")
    if not Path(recorded).is_file():
        raise ConfigError(f"--model-dir {model_dir}: the config it was exported from "
                          f"({recorded}) is gone; pass -c CONFIG")
    return Path(recorded)


def default_out(model_dir):
    return Path(model_dir) / OUT_DIR


def quantize(cfg, model_dir, out=None, params=QuantParams()):
    """MODEL_DIR (a `picosparse export` folder) -> OUT: an INT8 model with infer_cfg.yml.

    backend "paddle": OUT/model.pdmodel + model.pdiparams (PaddleSlim, for Paddle-Lite's INT8
    kernels: `picosparse opt` on OUT writes and verifies the INT8 .nb); "openvino": OUT/model.xml
    + model.bin (NNCF, for x86). OUT defaults to MODEL_DIR/int8; written atomically, with
    quant.json (how it was made). Returns {"model_dir", "infer_cfg", "backend", "algo",
    "calib_images", "split", "precision": "int8", "quantized_ops": [op types],
    "zeros": check_zeros(...) (paddle) or None, "conv1x1_zero_fraction", "seconds"}.
    """
    calib_images, algo, split, seed = params.calib_images, params.algo, params.calib_split, \
        params.seed
    backend, quantize_depthwise = params.backend, params.quantize_depthwise
    t0 = time.monotonic()
    model_dir = Path(model_dir)
    out = Path(out) if out else default_out(model_dir)
    program.model_files(model_dir)
    if out.resolve() == model_dir.resolve():
        raise ConfigError(f"--out {out}: must differ from --model-dir (the FP32 model stays)")
    if is_quantized(model_dir):
        raise DataError(f"--model-dir {model_dir}: already quantized (it has quantize ops); "
                        "give the FP32 export")
    doc = _infer_doc(model_dir)
    if backend == "openvino" and (doc.get("picosparse") or {}).get("postprocess", True):
        raise DataError(f"--model-dir {model_dir}: exported with NMS; OpenVINO 2026.4's "
                        "multiclass_nms crashed here on some inputs: export without it "
                        "(--no-postprocess, postprocess: false) for the openvino backend")
    feeds = _feeds(doc, calibration_images(cfg, split, calib_images, seed))
    ops = ["conv2d"] + ["depthwise_conv2d"] * bool(quantize_depthwise)
    how = "NNCF" if backend == "openvino" else f"PaddleSlim {algo}, {' + '.join(ops)}"
    progress.say(f"quant: INT8 ({how}) of {model_dir}, calibrating on {len(feeds)} "
                 f"{SPLITS[split]} images")
    zeros = None
    with atomic_dir(out) as tmp:
        if backend == "openvino":
            from picosparse.steps.nncf_quant import quantize_openvino
            quantize_openvino(model_dir, tmp, feeds)
            ops = None
        else:
            _post_static(model_dir, tmp, feeds, algo, quantize_depthwise)
            zeros = check_zeros(model_dir, tmp)
        sp = program.conv1x1_sparsity(model_dir)
        meta = {"backend": backend, "algo": algo if backend == "paddle" else "nncf",
                "calib_images": len(feeds), "split": split, "seed": seed,
                "quantized_ops": ops, "source": str(model_dir), "precision": "int8",
                "zeros": zeros}
        doc = dict(doc)
        doc["picosparse"] = {**(doc.get("picosparse") or {}), "quant": meta}
        (tmp / infer_cfg.FILE).write_text(infer_cfg.dump(doc))
        (tmp / QUANT_JSON).write_text(json.dumps(meta, indent=2))
    return {"model_dir": out, "infer_cfg": out / infer_cfg.FILE, "backend": backend,
            "algo": meta["algo"], "calib_images": len(feeds), "split": split,
            "precision": "int8", "quantized_ops": ops, "zeros": zeros,
            "conv1x1_zero_fraction": sp["overall"], "seconds": time.monotonic() - t0}
