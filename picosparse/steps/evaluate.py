"""COCO evaluation with PaddleDetection's own reader and COCOMetric (so numbers match it)."""

import contextlib
import io
import tempfile
import time

from picosparse import paddle_env, progress, weights as W
from picosparse.sparsity import policy, report
from picosparse.steps.loaders import eval_loader  # noqa: F401  (re-exported)

METRIC_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")


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
