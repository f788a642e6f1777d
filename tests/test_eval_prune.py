"""`picosparse eval` equals PaddleDetection's own evaluation; `picosparse prune` one-shot."""

import contextlib
import io
import json

import pytest
from click.testing import CliRunner

from picosparse import paddle_env
from picosparse.cli import cli
from picosparse.config import load_detector

from conftest import DEMO_CFG, DEMO_PRUNE, tiny_overrides


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A briefly trained demo model (so detections are not empty)."""
    out = tmp_path_factory.mktemp("dense")
    args = ["-q", "train", "-c", str(DEMO_CFG), "--from-scratch", "--out", str(out)]
    for o in tiny_overrides(tiny_data, 2):
        args += ["-o", o]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return out / "model_final.pdparams"


def ppdet_trainer_map(cfg, weights, tmp):
    """mAP as PaddleDetection's Trainer computes it (its own eval loop and metric)."""
    from ppdet.engine import Trainer
    g = paddle_env.activate(dict(cfg.data, output_eval=str(tmp)))  # its bbox.json goes there
    with contextlib.redirect_stdout(io.StringIO()):
        t = Trainer(g, mode="eval")
        t.load_weights(str(weights))
        got = {}
        metric = t._metrics[0]
        orig = metric.log
        metric.log = lambda: (got.update(metric.get_results()), orig())
        t.evaluate()
    return got["bbox"][:3]


def test_eval_matches_paddledetection(trained, tiny_data, tmp_path):
    # a barely trained model: keep low-score boxes so both sides have detections to score
    ov = tiny_overrides(tiny_data, 2) + ["PicoHead.nms.score_threshold=0.0001"]
    args = ["-q", "eval", "-c", str(DEMO_CFG), "--weights", str(trained), "--json", "-"]
    for o in ov:
        args += ["-o", o]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    ours = json.loads(r.output)
    assert set(ours) >= {"mAP", "mAP50", "mAP75", "sparsity", "images"}
    assert ours["images"] == 8 and 0 <= ours["mAP"] <= ours["mAP50"] <= 1
    cfg = load_detector(DEMO_CFG, overrides=ov)
    theirs = ppdet_trainer_map(cfg, trained, tmp_path)
    assert theirs[1] > 0  # something was detected, so the comparison means something
    assert [ours["mAP"], ours["mAP50"], ours["mAP75"]] == pytest.approx(
        [max(x, 0.0) for x in theirs], abs=1e-9)
    assert ours["sparsity"]["overall"] == pytest.approx(0.0, abs=0.01)  # dense weights


def test_prune_oneshot_then_eval_sparsity(trained, tiny_data, tmp_path):
    out = tmp_path / "sparse.pdparams"
    args = ["prune", "-c", str(DEMO_CFG), "--slim-config", str(DEMO_PRUNE), "--weights",
            str(trained), "--sparsity", "0.8", "--out", str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    import re
    assert 80.0 <= float(re.search(r"([\d.]+)% zeros", r.output).group(1)) < 80.1
    ev = ["-q", "eval", "-c", str(DEMO_CFG), "--slim-config", str(DEMO_PRUNE), "--weights",
          str(out), "--json", str(tmp_path / "m.json")]
    for o in tiny_overrides(tiny_data, 2):
        ev += ["-o", o]
    r = CliRunner().invoke(cli, ev)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    layers = m["sparsity"]["layers"]
    assert layers and all(v >= 0.8 for v in layers.values())
    assert not any("head_cls" in k for k in layers)  # the recipe's skip rule holds
    assert "mAP" in r.output  # table still printed when --json goes to a file


def test_eval_and_prune_errors(trained, tmp_path):
    r = CliRunner().invoke(cli, ["eval", "-c", str(DEMO_CFG), "--weights", str(tmp_path / "x.pdparams")])
    assert r.exit_code == 2 and "x.pdparams: file does not exist" in r.output
    r = CliRunner().invoke(cli, ["eval", "-c", str(DEMO_CFG), "--weights", str(trained),
                                 "-o", "EvalDataset.dataset_dir=/nope"])
    assert r.exit_code == 2 and "EvalDataset.dataset_dir /nope: folder does not exist" in r.output
    r = CliRunner().invoke(cli, ["prune", "-c", str(DEMO_CFG), "--weights", str(trained),
                                 "--out", str(tmp_path / "p.pdparams")])
    assert r.exit_code == 2 and "no UnstructuredPruner section" in r.output
    assert not (tmp_path / "p.pdparams").exists()


def test_prune_sparse_block_1x2_zeroes_whole_input_pairs(trained, tmp_path):
    """--sparse-block 1x2 with the built-in recipe: every pruned 1x1 conv weight has each
    (output, input pair 2k..2k+1) all zero or all kept, exactly ceil(0.6 * blocks) zero."""
    import math
    import numpy as np
    from picosparse import weights as W
    out = tmp_path / "pairs.pdparams"
    r = CliRunner().invoke(cli, ["prune", "-c", str(DEMO_CFG), "--weights", str(trained),
                                 "--sparsity", "0.6", "--sparse-block", "1x2", "--out",
                                 str(out)])
    assert r.exit_code == 0, r.output
    assert "of 1x2 blocks all zero" in r.output
    from picosparse.sparsity.report import to_numpy
    dense = {k: to_numpy(v) for k, v in W.read(trained).items()}
    state = {k: to_numpy(v) for k, v in W.read(out).items()}
    pruned = 0
    for name, w in state.items():
        if w.ndim != 4 or w.shape[2:] != (1, 1) or not (w == 0).any():
            continue
        pruned += 1
        cin = w.shape[1]
        zero_pairs = 0
        for k in range(0, cin, 2):
            z = w[:, k:k + 2] == 0
            assert (z.all(axis=1) | ~z.any(axis=1)).all(), (name, k)
            zero_pairs += int(z.all(axis=1).sum())
        nblocks = w.shape[0] * math.ceil(cin / 2)
        assert zero_pairs == math.ceil(0.6 * nblocks - 1e-9), name
        kept = w != 0
        assert np.array_equal(w[kept], dense[name][kept]), name
    assert pruned >= 5  # the demo model's 1x1 convs (head outputs stay dense)
    assert not any("head_cls" in k and (w == 0).any() for k, w in state.items()
                   if w.ndim == 4)
