"""Random-weight PicoDet exports for the op's tests and benchmark (no training, no download).

Why here and not steps/export.py: the op needs a model whose 1x1 weights are magnitude-sparse
at an exact ratio and whose BN statistics are non-trivial (so BN folding is really exercised);
a trained checkpoint is not required for either.
"""

from pathlib import Path

from picosparse.atomic import atomic_dir
from picosparse.errors import StackError


def prune_1x1_(model, ratio):
    """Zero the smallest `ratio` of each 1x1 conv weight by magnitude (per layer). Returns count."""
    from picosparse.paddle_env import stack
    s = stack()
    np, paddle = s.np, s.paddle
    n = 0
    for name, p in model.named_parameters():
        if len(p.shape) == 4 and p.shape[2] == 1 and p.shape[3] == 1 and p.shape[1] > 1:
            w = p.numpy()
            k = int(round(ratio * w.size))
            if k <= 0:
                continue
            thr_idx = np.argsort(np.abs(w).ravel(), kind="stable")[:k]
            flat = w.ravel().copy()
            flat[thr_idx] = 0.0
            p.set_value(paddle.to_tensor(flat.reshape(w.shape)))
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


def export_random_picodet(cfg_path, out, size, sparsity=0.0, seed=0):
    """Build a PicoDet from `cfg_path`, random init, prune 1x1 weights, save OUT/model.pdmodel.

    Runs in a fresh Python process: a second `paddle.jit.to_static` export of a ppdet model in
    one process failed here (CSPPAN's input-count assert under dy2static), and paddle is not
    needed afterwards by the caller.
    """
    import subprocess
    import sys
    code = ("import sys; from picosparse.ops.refmodel import _export_in_process as f; "
            "f(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))")
    r = subprocess.run([sys.executable, "-c", code, str(cfg_path), str(out), str(size),
                        str(sparsity), str(seed)], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise StackError(f"exporting a random-init {cfg_path} failed: {last}")
    return Path(out)


def _export_in_process(cfg_path, out, size, sparsity=0.0, seed=0):
    """The export itself (see export_random_picodet).

    The export stops before box decoding and NMS (export_post_process False), so dense and
    sparse outputs can be compared element-wise; its only input is `image` [1, 3, size, size].
    Returns OUT as a Path.
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
        prune_1x1_(model, sparsity)
    model.eval()
    # raw per-level head outputs (scores, box distributions): no NMS, no scale_factor input
    model.export_post_process = False
    spec = [{
        "image": paddle.static.InputSpec([1, 3, size, size], "float32", "image"),
    }]
    static = paddle.jit.to_static(model, input_spec=spec)
    out = Path(out)
    with atomic_dir(out) as tmp:
        paddle.jit.save(static, str(tmp / "model"), input_spec=spec)
    return out
