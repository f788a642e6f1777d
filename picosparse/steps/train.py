"""Dense or GMP-sparse training of a PicoDet config (issue 3)."""

from picosparse.errors import NotYetAvailable


def train(cfg, out, pretrained=None, from_scratch=False, resume=False, do_eval=False, seed=0):
    """Train `cfg` (a config.DetectorConfig) into folder `out`.

    Writes OUT/model_final.pdparams (no mask buffers), OUT/config.yml (the resolved config,
    loadable with config.load_detector), OUT/metrics.jsonl, OUT/train.log, OUT/checkpoints/.
    Returns {"weights": Path, "config": Path, "out": Path, "sparsity": float|None,
             "best": {"mAP": ...}|None, "epochs": int, "iters": int, "seconds": float}.
    """
    raise NotYetAvailable("'picosparse train' is not available yet (issue #3)")
