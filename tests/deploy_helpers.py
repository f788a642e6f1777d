"""Shared by test_export/test_lite/test_bench: demo-model weights (dense and 80% sparse 1x1
convs, random init) and their exports, made once per test session."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from picosparse.sparsity import magnitude

ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = ROOT / "configs" / "demo" / "picodet_demo.yml"
SPARSITY = 0.8
_TMP = Path(tempfile.mkdtemp(prefix="picosparse-deploy-tests-"))
atexit.register(shutil.rmtree, _TMP, True)


PREPROCESS = [{"type": "Resize", "target_size": [160, 160], "interp": 2},
              {"type": "NormalizeImage", "is_scale": True, "mean": [0.485, 0.456, 0.406],
               "std": [0.229, 0.224, 0.225]}, {"type": "Permute"}]


def load_cfg(*overrides):
    from picosparse.config import load_detector
    return load_detector(DEMO_CFG, overrides=overrides)


def is_1x1(shape):
    return len(shape) == 4 and list(shape[2:]) == [1, 1]


def make_weights(path, sparsity=0.0, seed=0, cfg=None):
    """Weights of a freshly built demo model; with `sparsity`, the smallest-magnitude fraction
    of every 1x1 conv weight set to exactly 0.

    Random init leaves activations vanishing with depth and every score at the prior (0.01),
    which would make output comparisons blind to most of the network. So (after sparsifying)
    each BatchNorm's running stats are set to the statistics of its own input on a few random
    images, and the classifier convs are scaled so their logits spread (std 2): healthy
    activations, distinct scores. Scaling keeps the exact zeros."""
    from picosparse import paddle_env
    s = paddle_env.stack()
    np, paddle = s.np, s.paddle
    paddle.seed(seed)
    rs = np.random.RandomState(seed)
    model = paddle_env.build_model(cfg or load_cfg())
    for name, p in model.named_parameters():
        a = p.numpy().copy()
        if sparsity and is_1x1(a.shape):
            a = magnitude.prune_local(a, sparsity)  # the trainer's rule
        p.set_value(a)
    _calibrate_bn(model, np, paddle, rs)
    paddle.save(model.state_dict(), str(path))
    return Path(path)


def _calibrate_bn(model, np, paddle, rs):
    def hook(layer, inputs):
        x = inputs[0]
        layer._mean.set_value(x.mean(axis=[0, 2, 3]))
        layer._variance.set_value(x.var(axis=[0, 2, 3]) + 1e-3)
    bns = [m for m in model.sublayers() if hasattr(m, "_mean") and hasattr(m, "_variance")]
    handles = [m.register_forward_pre_hook(hook) for m in bns]
    model.eval()
    # random uint8 images through the demo preprocessing: what the tests feed later
    from picosparse.deploy import infer_cfg
    image = paddle.to_tensor(np.concatenate([
        infer_cfg.preprocess(infer_cfg.random_image(160, seed=100 + i), PREPROCESS, 160)["image"]
        for i in range(4)]))
    with paddle.no_grad():
        outs = model.neck(model.backbone({"image": image}))
        for i, f in enumerate(outs):
            model.head.conv_feat(f, i)
    for h in handles:
        h.remove()
    with paddle.no_grad():
        outs = model.neck(model.backbone({"image": image}))
        for i, f in enumerate(outs):
            cls_feat = model.head.conv_feat(f, i)[0]
            conv = model.head.head_cls_list[i]
            std = float(paddle.nn.functional.conv2d(cls_feat, conv.weight).std())
            conv.weight.set_value(conv.weight * (2.0 / max(std, 1e-6)))


@functools.lru_cache(maxsize=None)
def weights(kind):
    """"dense" or "sparse" .pdparams of the demo model (same random init)."""
    return make_weights(_TMP / f"{kind}.pdparams", SPARSITY if kind == "sparse" else 0.0)


@functools.lru_cache(maxsize=None)
def exported(kind, postprocess=True):
    """An exported inference dir of `weights(kind)`."""
    from picosparse.steps.export import ExportParams, export
    out = _TMP / f"{kind}{'' if postprocess else '_raw'}" / "inference"
    export(load_cfg(), weights(kind), out, ExportParams(postprocess=postprocess))
    return out


@functools.lru_cache(maxsize=None)
def nb(kind, sparse, targets="arm"):
    from picosparse.steps.lite import OptParams, optimize
    out = _TMP / "nb" / f"{kind}_{'sparse' if sparse else 'dense'}_{targets}.nb"
    return optimize(exported(kind), out, OptParams(sparse=sparse, valid_targets=targets))
