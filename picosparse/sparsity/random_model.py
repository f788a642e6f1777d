"""Random-init PicoDet exports with exactly pruned 1x1 weights: what the x86 op's tests and
benchmark run when no trained weights are at hand (no training, no download).

Pruned as the trainer prunes: its policy's idea of a 1x1 conv weight (sparsity/policy.py,
`conv1x1_only`, no skip rules) and its rule, exactly ceil(ratio * n) smallest |w| per layer
(sparsity/magnitude.py), so "75%" here is the trainer's 75%; with `sparse_block` [m, n], whole
blocks of m output x n input channels, as the trainer's sparse_block. BN statistics are
randomised so that BN folding is really exercised.
"""

import subprocess
from pathlib import Path

from picosparse import subproc
from picosparse.atomic import atomic_dir
from picosparse.errors import StackError

EXPORT_TIMEOUT = 1800  # seconds; an export of PicoDet-m takes ~15 s here


def prune_1x1_(model, ratio, sparse_block=None):
    """Prune every 1x1 conv weight of `model` in place to `ratio` (local; in whole blocks when
    `sparse_block` [m, n] is given). Returns how many."""
    from picosparse.config import PruneSpec
    from picosparse.paddle_env import stack
    from picosparse.sparsity import magnitude, policy
    paddle = stack().paddle
    spec = PruneSpec(ratio=ratio, pruning_epochs=1, pruning_steps=1)
    pruned = {d.name for d in policy.decide(model, spec) if d.pruned}
    n = 0
    for name, p in model.named_parameters():
        if name in pruned:
            p.set_value(paddle.to_tensor(magnitude.prune_local(p.numpy(), ratio,
                                                               sparse_block)))
            n += 1
    return n


def randomize_bn_(model, seed=0):
    """Give every BN non-trivial statistics so folding mistakes show up in outputs."""
    from picosparse.paddle_env import stack
    s = stack()
    np, paddle = s.np, s.paddle
    rng = np.random.default_rng(seed)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D) or type(layer).__name__ == "BatchNorm":
            c = layer._mean.shape[0]
            layer._mean.set_value(paddle.to_tensor(rng.normal(0, 0.1, c).astype("float32")))
            layer._variance.set_value(paddle.to_tensor(rng.uniform(0.5, 2.0, c).astype("float32")))
            if layer.weight is not None:
                layer.weight.set_value(paddle.to_tensor(rng.uniform(0.5, 1.5, c).astype("float32")))
            if layer.bias is not None:
                layer.bias.set_value(paddle.to_tensor(rng.normal(0, 0.1, c).astype("float32")))


def save_random_weights(cfg_path, out, seed=0):
    """Random-init weights of `cfg_path`'s model, BN statistics randomised, saved as .pdparams
    (in a child process, like the export): for the commands that take --weights."""
    try:
        subproc.call_python("picosparse.sparsity.random_model:save_in_process",
                            dict(cfg_path=str(cfg_path), out=str(out), seed=int(seed)),
                            EXPORT_TIMEOUT)
    except subproc.ChildCrashed as e:
        raise StackError(f"random-init weights of {cfg_path} failed: {e.detail()}") from None
    return Path(out)


def save_in_process(cfg_path, out, seed=0):
    from picosparse import weights as W
    from picosparse.config import load_detector
    from picosparse.paddle_env import build_model, stack
    stack().paddle.seed(seed)
    model = build_model(load_detector(cfg_path))
    randomize_bn_(model, seed)
    W.save(model.state_dict(), out)
    return str(out)


def export_random_picodet(cfg_path, out, size, sparsity=0.0, seed=0, sparse_block=None):
    """Build a PicoDet from `cfg_path`, random init, prune 1x1 weights (in `sparse_block`
    blocks when given), save OUT/model.pdmodel.

    Runs in a fresh Python process: a second `paddle.jit.to_static` export of a ppdet model in
    one process failed here (CSPPAN's input-count assert under dy2static), and paddle is not
    needed afterwards by the caller.
    """
    try:
        subproc.call_python("picosparse.sparsity.random_model:export_in_process",
                            dict(cfg_path=str(cfg_path), out=str(out), size=int(size),
                                 sparsity=float(sparsity), seed=int(seed),
                                 sparse_block=None if sparse_block is None
                                 else [int(b) for b in sparse_block]), EXPORT_TIMEOUT)
    except subproc.ChildCrashed as e:
        raise StackError(f"exporting a random-init {cfg_path} failed: {e.detail()}") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"exporting a random-init {cfg_path} did not finish within "
                         f"{EXPORT_TIMEOUT} s and was stopped") from None
    return Path(out)


def export_in_process(cfg_path, out, size, sparsity=0.0, seed=0, sparse_block=None):
    """The export itself (see export_random_picodet).

    The export stops before box decoding and NMS (export_post_process False), so dense and
    sparse outputs can be compared element-wise; its only input is `image` [1, 3, size, size].
    Returns OUT as text.
    """
    from picosparse.config import load_detector
    from picosparse.paddle_env import build_model, stack
    s = stack()
    paddle = s.paddle
    paddle.seed(seed)
    cfg = load_detector(cfg_path)
    model = build_model(cfg)
    randomize_bn_(model, seed)
    if sparsity > 0:
        prune_1x1_(model, sparsity, sparse_block)
    model.eval()
    # raw per-level head outputs (scores, box distributions): no NMS, no scale_factor input
    model.export_post_process = False
    spec = [{
        "image": paddle.static.InputSpec([1, 3, size, size], "float32", "image"),
    }]
    static = paddle.jit.to_static(model, input_spec=spec)
    with atomic_dir(Path(out)) as tmp:
        paddle.jit.save(static, str(tmp / "model"), input_spec=spec)
    return str(out)
