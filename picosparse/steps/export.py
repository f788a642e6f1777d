"""Inference-model export with a fixed input shape (issue 4)."""

from picosparse.errors import NotYetAvailable


def export(cfg, weights, out, input_size=None, postprocess=True):
    """Write OUT/model.pdmodel, OUT/model.pdiparams, OUT/infer_cfg.yml (atomically).

    Returns {"model_dir": Path, "model_file": Path, "params_file": Path, "infer_cfg": Path,
             "input_size": int}.
    """
    raise NotYetAvailable("'picosparse export' is not available yet (issue #4)")
