"""paddle_lite_opt conversion with a verified sparse pass (issue 4)."""

from picosparse.errors import NotYetAvailable


def optimize(model_dir, out, sparse=True, sparse_threshold=0.6, valid_targets="arm", fp16=False):
    """Convert an exported model to OUT (.nb); with `sparse`, fail unless sparse_conv2d ops exist.

    Returns {"nb": Path, "size_bytes": int, "sparse_conv2d": int, "conv1x1": int,
             "valid_targets": str, "sparse": bool}.
    """
    raise NotYetAvailable("'picosparse opt' is not available yet (issue #4)")
