"""COCO evaluation with PaddleDetection's metric (issue 4)."""

from picosparse.errors import NotYetAvailable


def evaluate(cfg, weights):
    """COCO bbox metrics of `weights` on cfg's EvalDataset.

    Returns {"mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large" (fractions),
             "sparsity": {"overall": float|None, "layers": {name: zero_fraction}},
             "images": int, "seconds": float}.
    """
    raise NotYetAvailable("'picosparse eval' is not available yet (issue #4)")
