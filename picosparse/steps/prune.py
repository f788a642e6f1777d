"""One-shot magnitude pruning with the training policy (issue 3)."""

from picosparse.errors import NotYetAvailable


def oneshot(cfg, weights, out):
    """Prune `weights` by magnitude per cfg.prune (policy + ratio); write `out` (.pdparams).

    Returns {"weights": Path, "sparsity": float, "layers": {name: zero_fraction}}.
    """
    raise NotYetAvailable("'picosparse prune' is not available yet (issue #3)")
