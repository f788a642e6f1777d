"""Quantization-aware fine-tuning of a (sparse) PicoDet, zeros kept exact, exported as INT8.

For when post-training quantization (`picosparse quant`) loses too much: PaddleSlim's dygraph
QAT wraps the convs in fake-quant layers, the config's TrainReader / LearningRate /
OptimizerBuilder fine-tune it, and the INT8 inference model it saves is the same format as
`quant`'s (int8 weights behind dequantize ops), so `opt`, `eval --model` and `bench` take it
alike. Sparsity: every conv weight that is exactly zero in the given weights is a mask, applied
again after every optimizer step (the optimizer's momentum and weight decay would otherwise move
pruned weights), checked exact before saving and checked again in the saved INT8 weights.
Depthwise convs stay FP32, as in `quant` (their per-channel input ranges do not fit one INT8
scale). Batch-norm statistics stay frozen (see _freeze_bn). No EMA: its average of fake-quant
scales is not what gets exported.
"""

import contextlib
import copy
import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path

from picosparse import paddle_env, progress, weights as W
from picosparse.atomic import atomic_dir
from picosparse.deploy import infer_cfg, program
from picosparse.errors import DataError, PicosparseError
from picosparse.params import at_least, check, multiple_of_32, param, positive

QAT_CONFIG = {
    "weight_quantize_type": "channel_wise_abs_max",
    "activation_quantize_type": "moving_average_abs_max",
    "weight_bits": 8, "activation_bits": 8, "dtype": "int8", "window_size": 10000,
    "moving_rate": 0.9, "quantizable_layer_type": ["Conv2D"], "onnx_format": True,
}


def _is_depthwise(layer):
    groups = getattr(layer, "_groups", 1) or 1
    return groups > 1 and groups == getattr(layer, "_in_channels", -1)


def _layer_lists(model):
    """[(owner, attribute, [sublayer names])] for plain Python lists of registered sublayers.

    QAT swaps a conv for its fake-quant wrapper in the owner's sublayers only; PicoHead calls
    its prediction convs through such a list (`head_cls_list`), which would keep calling the
    FP32 conv: those convs came out FP32 in the INT8 model."""
    found = []
    for owner in [model] + list(model.sublayers()):
        names = {id(v): k for k, v in owner._sub_layers.items()}
        for attr, value in vars(owner).items():
            if isinstance(value, list) and value and all(id(v) in names for v in value):
                found.append((owner, attr, [names[id(v)] for v in value]))
    return found


def _rebind(lists):
    for owner, attr, names in lists:
        setattr(owner, attr, [owner._sub_layers[n] for n in names])


def _freeze_bn(model):
    """Batch norms keep their running statistics (eval mode) while the weights fine-tune.

    A short fine-tune on the train augmentation (other sizes, flips) moved them away from what
    the model sees deployed: on the demo, QAT with BN statistics updated lost 1.6 mAP points
    against PTQ, with them frozen it matched it (0.555)."""
    n = 0
    for layer in model.sublayers():
        if "BatchNorm" in type(layer).__name__:
            layer.eval()
            n += 1
    return n


class Masks:
    """The exact zeros of every conv weight, re-applied in place after each optimizer step."""

    def __init__(self, model):
        paddle = paddle_env.stack().paddle
        self.params = {}
        self.masks = {}
        for name, p in model.named_parameters():
            if len(p.shape) == 4:
                keep = (p != 0).astype(p.dtype)
                if float(keep.sum()) < p.size:  # dense weights carry no mask
                    self.params[name] = p
                    self.masks[name] = keep
        self._paddle = paddle

    def apply(self):
        with self._paddle.no_grad():
            for name, p in self.params.items():
                p.set_value(p * self.masks[name])

    def zeros(self):
        return sum(int(p.size - float(m.sum())) for p, m in
                   zip(self.params.values(), self.masks.values()))

    def broken(self):
        """(parameter name, nonzero count) where a masked weight is not exactly zero."""
        for name, p in self.params.items():
            bad = int(((p != 0).astype("int32") * (1 - self.masks[name].astype("int32"))).sum())
            if bad:
                return name, bad
        return None

    def by_program_name(self):
        """{program weight name (conv2d_17.w_0): numpy keep-mask}."""
        return {p.name: self.masks[n].numpy().astype(bool) for n, p in self.params.items()}


@dataclass(frozen=True, kw_only=True)
class QatParams:
    """`picosparse qat` / the pipeline kind `qat`; checked when made."""

    epochs: int = param(1, "int", check=at_least(1), help="Epochs of the config's TrainDataset.")
    lr: float = param(None, "number?", check=positive, help=(
        "LearningRate.base_lr for the fine-tuning [the config's]."))
    input_size: int = param(None, "int?", check=multiple_of_32, help=(
        "Fixed input side of the export (multiple of 32) [from the config's TestReader]."))
    postprocess: bool = param(True, "bool", flag="--no-postprocess",
                              help="Export without NMS/decoding.")
    train_bn: bool = param(False, "bool", help=(
        "Update batch-norm statistics too [frozen: a short fine-tune on the train augmentation "
        "moves them away from deployment]."))
    seed: int = param(0, "int", help="Random seed.")

    def __post_init__(self):
        check(self)


def qat(cfg, weights, out, params=QatParams(), max_iters=None):
    """Fine-tune WEIGHTS with QAT for `epochs` epochs of the config's TrainDataset (lr: the
    LearningRate base_lr, default the config's), masks kept, and write OUT: an INT8 inference
    model (model.pdmodel, model.pdiparams, infer_cfg.yml, quant.json), atomically.
    train_bn: update the batch-norm statistics too (default: frozen, see _freeze_bn; for
    weights whose statistics do not fit the training data, e.g. untrained ones).

    Returns {"model_dir", "infer_cfg", "precision": "int8", "backend": "paddle", "algo": "qat",
             "epochs", "iters", "loss": the last iteration's, "masked_weights", "zeros",
             "conv1x1_zero_fraction", "seconds"}. max_iters stops early (tests).
    """
    from picosparse.steps.export import resolve_input_size
    from picosparse.steps.loaders import train_loader
    epochs, lr, seed, train_bn = params.epochs, params.lr, params.seed, params.train_bn
    postprocess = params.postprocess
    t0 = time.monotonic()
    input_size = resolve_input_size(cfg, params.input_size, QatParams)
    s = paddle_env.stack()
    paddle, np = s.paddle, s.np
    paddle.seed(seed)
    np.random.seed(seed)
    data = copy.deepcopy(dict(cfg.data))
    if data.get("eval_size"):
        data["eval_size"] = [input_size, input_size]  # PicoHead's anchors follow eval_size
    if lr is not None:
        data.setdefault("LearningRate", {})["base_lr"] = float(lr)
    cfg = dataclasses.replace(cfg, data=data)
    model = paddle_env.build_model(cfg)
    W.load_into(model, weights)
    masks = Masks(model)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D) and _is_depthwise(layer):
            layer.skip_quant = True
    quanter = paddle_env.paddleslim_qat()(config=dict(QAT_CONFIG))
    lists = _layer_lists(model)
    with contextlib.redirect_stdout(io.StringIO()):
        quanter.quantize(model)
    _rebind(lists)
    loader, sampler, _ = train_loader(cfg, seed)
    per_epoch = len(sampler)
    if per_epoch < 1:
        raise DataError("TrainDataset: fewer images than one batch "
                        f"(TrainReader.batch_size={cfg.get('TrainReader')['batch_size']})")
    sched = paddle_env.create("LearningRate")(per_epoch)
    optimizer = paddle_env.create("OptimizerBuilder")(sched, model)
    total = epochs * per_epoch if max_iters is None else min(max_iters, epochs * per_epoch)
    progress.say(f"qat: {total} iterations ({epochs} epoch(s) x {per_epoch}) from {weights}, "
                 f"{len(masks.params)} masked conv weights ({masks.zeros()} zeros kept)")
    it, loss_v = 0, None
    model.train()
    if not train_bn:
        _freeze_bn(model)
    with progress.Progress(total, "qat", every=max(1, cfg.get("log_iter", 20))) as bar:
        for epoch in range(epochs):
            loader.dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            for batch in loader:
                if it >= total:
                    break
                batch["epoch_id"] = epoch
                try:
                    loss = model(batch)["loss"]
                except ValueError as e:  # ppdet's losses check their inputs (NaN fails)
                    raise PicosparseError(
                        f"qat: the loss failed at iteration {it} ({str(e).strip()[:120]}): "
                        "the model's outputs are not finite; lower the learning rate (lr), "
                        "or update the batch-norm statistics (train_bn) if the weights' do "
                        "not fit this data") from None
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                masks.apply()  # the step moved pruned weights: put the zeros back
                if hasattr(optimizer._learning_rate, "step"):
                    optimizer._learning_rate.step()
                loss_v = float(loss)
                if not np.isfinite(loss_v):
                    raise PicosparseError(f"qat: loss is {loss_v} at iteration {it}; lower "
                                          "the learning rate (lr), or train_bn")
                it += 1
                bar.update(1, loss=f"{loss_v:.3f}")
    model.eval()
    broken = masks.broken()
    if broken:  # never: apply() ran after the last step; a guard against a wrapper copying
        raise PicosparseError(f"qat: {broken[1]} masked weights of {broken[0]} are nonzero")
    stats = {"epochs": epochs, "iters": it, "loss": loss_v, "train_bn": bool(train_bn),
             "seconds_train": time.monotonic() - t0}
    return _save(model, quanter, cfg, weights, out, input_size, postprocess, masks, stats, t0)


def _save(model, quanter, cfg, weights, out, input_size, postprocess, masks, stats, t0):
    """The INT8 inference model, as `export` writes an FP32 one (fixed input shape,
    infer_cfg.yml), through PaddleSlim's save_quantized_model; masks checked in the file."""
    import json
    from picosparse.steps.export import _used_inputs
    from picosparse.steps.quant import QUANT_JSON, _faster_quant_passes, _quiet_loggers
    paddle = paddle_env.stack().paddle
    InputSpec = paddle.static.InputSpec
    if hasattr(model, "export_post_process"):
        model.export_post_process = bool(postprocess)
    if hasattr(model, "export_nms"):
        model.export_nms = bool(postprocess)
    spec = {"image": InputSpec([1, 3, input_size, input_size], "float32", "image"),
            "im_shape": InputSpec([1, 2], "float32", "im_shape"),
            "scale_factor": InputSpec([1, 2], "float32", "scale_factor")}
    out = Path(out)
    with atomic_dir(out) as tmp:
        with contextlib.redirect_stdout(io.StringIO()), _faster_quant_passes(), \
                _quiet_loggers():
            try:
                static = paddle.jit.to_static(model, input_spec=[spec], full_graph=True)
                used = _used_inputs(static.forward, spec)
                quanter.save_quantized_model(static, str(tmp / "model"),
                                             input_spec=[{n: spec[n] for n in used}])
            except (ValueError, TypeError, RuntimeError) as e:
                raise PicosparseError(f"qat: saving the INT8 model failed in paddle.jit "
                                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                                      ) from None
        for extra in tmp.glob("model.pdiparams.info"):
            extra.unlink()
        zeros = check_masks(tmp, masks.by_program_name())
        sp = program.conv1x1_sparsity(tmp)
        shapes = {n: list(spec[n].shape) for n in used}
        meta = {"backend": "paddle", "algo": "qat", "precision": "int8", "source": str(weights),
                "quantized_ops": ["conv2d"], "zeros": zeros, **stats}
        extra = {"config": str(cfg.path), "weights": str(weights),
                 "conv1x1_zero_fraction": round(sp["overall"], 6) if sp["overall"] is not None
                 else None, "quant": meta}
        doc = infer_cfg.build(cfg.data, input_size, shapes, postprocess,
                              infer_cfg.label_list(cfg.data), extra)
        (tmp / infer_cfg.FILE).write_text(infer_cfg.dump(doc))
        (tmp / QUANT_JSON).write_text(json.dumps(meta, indent=2))
    return {"model_dir": out, "infer_cfg": out / infer_cfg.FILE, "precision": "int8",
            "backend": "paddle", "algo": "qat", "masked_weights": len(masks.params),
            "zeros": zeros, "conv1x1_zero_fraction": sp["overall"],
            "seconds": time.monotonic() - t0, **stats}


def check_masks(model_dir, keep):
    """Every masked weight exactly zero in the saved model's (int8) weights; a one-line
    DataError naming the first layer otherwise. Returns {"weights", "zeros", "int8_weights"}."""
    np = paddle_env.stack().np
    model_file, params_file = program.model_files(model_dir)
    params = program.read_params(model_file, params_file)
    zeros = int8 = 0
    for name, k in sorted(keep.items()):
        if name not in params:
            raise DataError(f"{model_dir}: masked weight {name} is missing from the INT8 model")
        w = params[name]
        bad = int((w[~k] != 0).sum())
        if bad:
            raise DataError(f"{model_dir}: {bad} of {int((~k).sum())} masked weights of {name} "
                            "are nonzero in the INT8 model; sparsity was not kept")
        zeros += int((~k).sum())
        int8 += w.dtype == np.int8
    return {"weights": len(keep), "zeros": zeros, "int8_weights": int(int8)}
