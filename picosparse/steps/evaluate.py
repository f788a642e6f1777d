"""COCO evaluation with PaddleDetection's own reader and COCOMetric (so numbers match it)."""

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass

from picosparse import paddle_env, progress, weights as W
from picosparse.deploy.runtimes import reported
from picosparse.errors import ParamError
from picosparse.params import check, device_param, param
from picosparse.sparsity import policy, report
from picosparse.steps.loaders import eval_loader  # noqa: F401  (re-exported)

METRIC_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")


@dataclass(frozen=True, kw_only=True)
class EvalParams:
    """`picosparse eval` / the pipeline kind `eval`: what is scored (weights, or an exported
    model run by the Detector: the deployed files' mAP), one of the two."""

    weights: str = param(None, "source?", click=dict(path="file"), help="Weights (.pdparams).")
    model: str = param(None, "model?", flag="--model", metavar="PATH", help=(
        "Instead of --weights: an exported model folder (`export` output, its x86_sparse "
        "folder, an OpenVINO IR folder), run by the Detector: the deployed files' mAP; "
        "DIR@bf16 runs it at OpenVINO's BF16."))
    device: str = device_param()
    ONE_OF = (("weights", "model"),)

    def __post_init__(self):
        check(self)
        if (self.weights is None) == (self.model is None):
            raise ParamError("weights", "or {model}: give one of the two (.pdparams weights, "
                             "or an exported model folder)", owner=EvalParams,
                             show_value=False)


def run(cfg, params):
    """`evaluate` of params.weights or `evaluate_model` of params.model."""
    if params.model is not None:
        return evaluate_model(cfg, params.model)
    return evaluate(cfg, params.weights)


def coco_map(model, loader, dataset):
    """Run `model` over `loader` and score it with ppdet's COCOMetric; returns METRIC_NAMES."""
    from ppdet.metrics import COCOMetric  # stack() has imported ppdet in the right order
    paddle = paddle_env.stack().paddle
    clsid2catid = {v: k for k, v in dataset.catid2clsid.items()}
    with tempfile.TemporaryDirectory() as tmp:
        metric = COCOMetric(anno_file=dataset.get_anno(), clsid2catid=clsid2catid,
                            output_eval=tmp, classwise=False, bias=0, IouType="bbox",
                            save_prediction_only=False)
        model.eval()
        with paddle.no_grad(), progress.Progress(len(loader), "eval") as bar:
            for data in getattr(loader, "dataloader", loader):  # a DataLoader, or ppdet's
                metric.update(data, model(data))
                bar.update(1)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
            metric.accumulate()
        stats = metric.get_results().get("bbox", [0.0] * 12)
    return {name: float(max(v, 0.0)) for name, v in zip(METRIC_NAMES, stats)}


def evaluate(cfg, weights):
    """COCO bbox metrics of `weights` on cfg's EvalDataset, plus sparsity of pruned params."""
    t0 = time.monotonic()
    model = paddle_env.build_model(cfg)
    state = W.load_into(model, weights)
    loader, dataset = eval_loader(cfg)
    out = coco_map(model, loader, dataset)
    decisions = policy.decide(model, cfg.prune)
    if cfg.prune is None:
        # dense config: still report the 1x1 convs so dense vs sparse tables line up
        decisions = policy.decide(model, _conv1x1_spec())
    out["sparsity"] = report.sparsity(state, decisions)
    out["images"] = len(dataset)
    out["seconds"] = time.monotonic() - t0
    return out


def _conv1x1_spec():
    from picosparse.config import PruneSpec
    return PruneSpec(ratio=0.0, pruning_epochs=0, pruning_steps=1)


def evaluate_model(cfg, model_dir, runtime="auto", threads=1):
    """COCO bbox metrics of an exported model (Paddle inference folder, x86-sparse export,
    OpenVINO IR) on cfg's EvalDataset, run by picosparse.deploy.Detector on each image file
    and scored by the same COCOMetric as `evaluate`: the mAP of the files that are deployed.

    The model's own input size and preprocessing (its infer_cfg.yml) apply, not EvalReader's.
    "sparsity" is the zero fraction of the model's 1x1 conv weights (all of them, as read
    from the exported files).
    """
    from picosparse.deploy import infer_cfg
    from picosparse.deploy.detector import Detector
    from picosparse.errors import DataError
    from picosparse.steps.data_paths import check_dataset
    t0 = time.monotonic()
    check_dataset(cfg, "EvalDataset")
    np = paddle_env.stack().np
    from ppdet.metrics import COCOMetric  # after stack(): it imports ppdet in the right order
    det = Detector(model_dir, runtime=runtime, threads=threads)
    paddle_env.activate(cfg.data)
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = paddle_env.create("EvalDataset")()
        dataset.parse_dataset()
    clsid2catid = {v: k for k, v in dataset.catid2clsid.items()}
    if det.num_classes and det.num_classes != len(clsid2catid):
        raise DataError(f"--model {model_dir}: {det.num_classes} classes, but EvalDataset "
                        f"{dataset.get_anno()} has {len(clsid2catid)} categories")
    _note_input_size(cfg, det)
    with tempfile.TemporaryDirectory() as tmp:
        metric = COCOMetric(anno_file=dataset.get_anno(), clsid2catid=clsid2catid,
                            output_eval=tmp, classwise=False, bias=0, IouType="bbox",
                            save_prediction_only=False)
        with progress.Progress(len(dataset.roidbs), "eval") as bar:
            for rec in dataset.roidbs:
                found = det.predict(infer_cfg.read_image(rec["im_file"], "EvalDataset image"))
                rows = np.concatenate([found.class_ids[:, None].astype("float32"),
                                       found.scores[:, None], found.boxes], axis=1)
                metric.update({"im_id": np.array([[rec["im_id"]]])},
                              {"bbox": rows, "bbox_num": np.array([len(rows)])})
                bar.update(1)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
            metric.accumulate()
        stats = metric.get_results().get("bbox", [0.0] * 12)
    out = {name: float(max(v, 0.0)) for name, v in zip(METRIC_NAMES, stats)}
    out["sparsity"] = _model_sparsity(det)
    out["images"] = len(dataset.roidbs)
    out.update(model=str(model_dir), kind=det.kind, runtime=det.runtime,
               precision=reported(det.precision),
               input_size=det.input_size, seconds=time.monotonic() - t0)
    return out


def _note_input_size(cfg, det):
    for t in (cfg.get("EvalReader") or {}).get("sample_transforms") or []:
        size = (t.get("Resize") or {}).get("target_size") if isinstance(t, dict) else None
        if isinstance(size, (list, tuple)) and size and int(size[-1]) != det.input_size:
            progress.say(f"note: the model runs at {det.input_size}x{det.input_size} (its "
                         f"infer_cfg.yml), EvalReader resizes to {size[0]}x{size[-1]}: mAP "
                         "is not comparable with `eval --weights` at that size")


def _model_sparsity(det):
    """{"overall", "layers"} zero fractions of the exported 1x1 conv weights."""
    import json
    from picosparse.deploy import program
    if det.kind == "paddle":
        sp = program.conv1x1_sparsity(det.path)
        return {"overall": sp["overall"], "layers": sp["layers"]}
    overall = (det.cfg.get("picosparse") or {}).get("conv1x1_zero_fraction")
    layers = {}
    from picosparse.x86.runtime import META_NAME
    meta = det.path / META_NAME
    if meta.is_file():
        layers = {l["name"]: l["zero_fraction"] for l in json.loads(meta.read_text())["layers"]
                  if l.get("kind") == "sparse1x1" and "zero_fraction" in l}
    return {"overall": overall, "layers": layers}
