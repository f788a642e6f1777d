"""Real COCO-trained PicoDet-S 320 weights on real COCO images (../shared/real, see its README).

Users do not have that folder: every test here skips cleanly without it. The weights are
BN-folded (exact in eval mode), so they serve eval, prune and "ends exactly sparse" checks,
not accuracy-after-training checks.
"""

import json
import math

import pytest
from click.testing import CliRunner

from picosparse.cli import cli

from conftest import ROOT

REAL = ROOT.parent / "shared" / "real"
WEIGHTS = REAL / "picodet_s_320_coco_bnfolded.pdparams"
COCO128 = REAL / "coco128_train"
S_CFG = ROOT / "configs" / "picodet" / "picodet_s_320_coco.yml"

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file() or not COCO128.is_dir(),
                                reason="../shared/real (real weights and COCO images) absent")


def coco128(split):
    """-o overrides pointing a split of the S config at the 128 real COCO images."""
    return [f"{split}.dataset_dir={COCO128}", f"{split}.image_dir=train2017",
            f"{split}.anno_path=annotations/instances_train2017.json"]


def _args(*words, overrides=()):
    out = list(words)
    for o in overrides:
        out += ["-o", o]
    return out


@pytest.mark.slow
def test_eval_real_weights_reproduces_reference_map():
    # reference (folder README): AP 0.385 on these 128 train2017 images at 320x320
    r = CliRunner().invoke(cli, _args("-q", "eval", "-c", str(S_CFG), "--weights", str(WEIGHTS),
                                      "--json", "-", overrides=coco128("EvalDataset")))
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert abs(m["mAP"] - 0.385) < 0.01, m


@pytest.mark.slow
def test_short_real_training_with_sparsity_alone_ends_exactly_sparse(tmp_path):
    """`train --sparsity 0.75` (no slim file) from the real weights: a few iterations on real
    images, and every pruned weight ends at exactly ceil(0.75 n) zeros."""
    import numpy as np
    import paddle
    out = tmp_path / "s75"
    ov = coco128("TrainDataset") + [
        "TrainDataset.sample_num=48", "epoch=2", "TrainReader.batch_size=4", "worker_num=0",
        "TrainReader.batch_transforms.0.BatchRandomResize.target_size=[160]",
        "LearningRate.base_lr=0.001", "LearningRate.schedulers.0.max_epochs=2", "log_iter=2"]
    r = CliRunner().invoke(cli, _args("-q", "train", "-c", str(S_CFG), "--sparsity", "0.75",
                                      "--pretrained", str(WEIGHTS), "--out", str(out),
                                      overrides=ov))
    assert r.exit_code == 0, r.output
    written = (out / "config.yml").read_text()
    assert "recipe: built-in default" in written and "structure: head_outputs" in written
    state = paddle.load(str(out / "model_final.pdparams"))
    r = CliRunner().invoke(cli, ["layers", "-c", str(out / "config.yml"), "--json", "-"])
    rows = json.loads(r.output)
    pruned = [x for x in rows if x["pruned"]]
    assert len(pruned) == 87  # PicoDet-S: 97 1x1 convs less the seed's 4 head + 6 SE
    for x in pruned:
        w = np.asarray(state[x["name"]])
        assert int((w == 0).sum()) == math.ceil(0.75 * w.size - 1e-9), x["name"]
    kept = {x["name"] for x in rows if x["reason"].startswith("skip rule")}
    assert all(float((np.asarray(state[k]) == 0).mean()) < 0.05 for k in kept)
