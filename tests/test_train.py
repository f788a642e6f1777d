"""`picosparse train`: GMP with EMA ends exactly sparse, saves clean weights, resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from picosparse.cli import cli
from picosparse.sparsity.schedule import GMPSchedule

from conftest import DEMO_CFG, tiny_overrides

# 4 epochs of 16 iterations (32 images, batch 2): pruning epochs 0-2 in 4 steps of 12 iters
SLIM = """slim: UnstructuredPruner
UnstructuredPruner:
  stable_epochs: 0
  pruning_epochs: 3
  tunning_epochs: 1
  pruning_steps: 4
  ratio: 0.75
  initial_ratio: 0.15
  prune_params_type: conv1x1_only
  skip:
  - name: "head.head_cls*"
"""


def train_args(data, out, slim, epochs=4, extra=()):
    args = ["train", "-c", str(DEMO_CFG), "--slim-config", str(slim), "--from-scratch",
            "--out", str(out)]
    for o in tiny_overrides(data, epochs) + ["TrainReader.batch_size=2"]:
        args += ["-o", o]
    return args + list(extra)


@pytest.fixture
def slim(tmp_path):
    p = tmp_path / "slim.yml"
    p.write_text(SLIM)
    return p


def read_jsonl(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]


def plain_ppdet_load(cfg_yml, weights):
    """Load weights into a model built by PaddleDetection alone, in a fresh process."""
    code = f"""
import numpy, cv2, contextlib, io
import paddle
with contextlib.redirect_stdout(io.StringIO()):
    from ppdet.core.workspace import load_config, create
    cfg = load_config({str(cfg_yml)!r})
    model = create(cfg.architecture)
state = paddle.load({str(weights)!r})
own = model.state_dict()
assert set(state) == set(own), (set(state) ^ set(own))
model.set_state_dict(state)
z = [float((v.numpy() == 0).mean()) for k, v in model.state_dict().items()
     if len(v.shape) == 4 and v.shape[2:] == [1, 1] and 'head_cls' not in k]
print(min(z))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return float(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_gmp_with_ema_is_exactly_sparse_and_clean(tiny_data, slim, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, train_args(tiny_data, out, slim, extra=["--eval"]))
    assert r.exit_code == 0, r.output
    cfg_text = (out / "config.yml").read_text()
    assert "use_ema: true" in cfg_text
    from picosparse import weights as W
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    raw = paddle.load(str(out / "model_final.pdparams"))
    assert not [k for k in raw if k.endswith("_mask")]
    from picosparse.sparsity.layers import layer_table
    from picosparse.config import load_detector
    rows = layer_table(load_detector(out / "config.yml"), out / "model_final.pdparams")
    pruned = [x for x in rows if x["pruned"]]
    assert pruned and all(x["zeros"] >= 0.75 for x in pruned), min(x["zeros"] for x in pruned)
    assert all(x["zeros"] < 0.5 for x in rows if "head_cls" in x["name"])  # skipped stays dense
    # the final file loads into plain PaddleDetection, still sparse
    assert plain_ppdet_load(out / "config.yml", out / "model_final.pdparams") >= 0.75
    # records: one line per iteration (log_iter=1) with the schedule's ratio and measured sparsity
    m = read_jsonl(out / "metrics.jsonl")
    assert [x["iter"] for x in m] == list(range(1, 65))
    sched = GMPSchedule(0, 48, 16, 4, 0.15, 0.75)
    assert [x["ratio"] for x in m] == pytest.approx([sched.ratio(x["iter"] - 1) for x in m])
    assert all(x["sparsity"] >= x["ratio"] - 1e-9 for x in m)
    assert (out / "best_model.pdparams").is_file()
    log = (out / "train.log").read_text()
    assert "eval epoch 4" in log and "done: 64 iters" in log


def _wait_for_checkpoint(out, epoch, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        ptr = out / "checkpoints" / "latest"
        if ptr.is_file() and ptr.read_text().strip() == f"epoch_{epoch}":
            return
        assert proc.poll() is None, "training ended before the checkpoint"
        time.sleep(0.2)
    raise AssertionError("no checkpoint")


@pytest.mark.slow
def test_sigkill_mid_pruning_then_resume_matches_uninterrupted(tiny_data, slim, tmp_path):
    """With loader workers and --eval, as the shipped PicoDet configs train: the resumed run's
    augmentations, masks and final weights are the uninterrupted run's, bit for bit."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    exe = [sys.executable, "-m", "picosparse", "-q"]
    extra = ["-o", "worker_num=2", "--eval"]
    # both runs in fresh processes, as a user runs them: earlier tests in this process may
    # have changed paddle's global math settings (threads, oneDNN) and so the numerics
    done = subprocess.run(exe + train_args(tiny_data, ref, slim, extra=extra),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(exe + train_args(tiny_data, cut, slim, extra=extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_checkpoint(cut, 2, proc)  # epoch 2 of 4: mid-ramp (ratio 0.675 -> 0.74)
        time.sleep(1.0)  # let it get into epoch 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (cut / "model_final.pdparams").exists()
    again = CliRunner().invoke(cli, train_args(tiny_data, cut, slim))
    assert again.exit_code == 2 and "pass --resume" in again.output
    # --resume alone: --from-scratch, --seed and the rest are the run's own
    resume = [a for a in train_args(tiny_data, cut, slim, extra=extra) if a != "--from-scratch"]
    done = subprocess.run(exe + resume + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = read_jsonl(ref / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [x["iter"] for x in b] == [x["iter"] for x in a]
    assert [x["ratio"] for x in b] == [x["ratio"] for x in a]
    assert [x["sparsity"] for x in b] == [x["sparsity"] for x in a]
    assert [x["lr"] for x in b] == [x["lr"] for x in a]
    assert [x["loss"] for x in b] == [x["loss"] for x in a]  # the same batches, augmented alike
    evals = [ln.split(": ", 1)[1] for ln in (ref / "train.log").read_text().splitlines()
             if " eval epoch " in ln]
    assert len(evals) == 4 and evals == [ln.split(": ", 1)[1] for ln in
                                         (cut / "train.log").read_text().splitlines()
                                         if " eval epoch " in ln]
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    for name in ("model_final.pdparams", "best_model.pdparams"):
        wa, wb = paddle.load(str(ref / name)), paddle.load(str(cut / name))
        assert set(wa) == set(wb)
        for k in wa:
            assert (wa[k].numpy() == wb[k].numpy()).all(), (name, k)


def test_dense_training_sparsity_zero(tiny_data, tmp_path):
    out = tmp_path / "dense"
    args = ["train", "-c", str(DEMO_CFG), "--from-scratch", "--out", str(out), "--sparsity", "0"]
    for o in tiny_overrides(tiny_data, 1):
        args += ["-o", o]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert (out / "model_final.pdparams").is_file()
    assert len(read_jsonl(out / "metrics.jsonl")) == 8  # 32 images / batch 4, log_iter 1
    assert all(x["ratio"] == 0.0 and x["sparsity"] is None for x in read_jsonl(out / "metrics.jsonl"))
    assert (out / "checkpoints" / "latest").read_text().strip() == "epoch_1"
    # resuming a finished run trains nothing and rewrites the same final weights
    first = (out / "model_final.pdparams").read_bytes()
    r = CliRunner().invoke(cli, args + ["--resume"])
    assert r.exit_code == 0, r.output
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    a = paddle.load(str(out / "model_final.pdparams"))
    (out / "first.pdparams").write_bytes(first)
    b = paddle.load(str(out / "first.pdparams"))
    assert set(a) == set(b) and all((a[k].numpy() == b[k].numpy()).all() for k in a)
    assert len(read_jsonl(out / "metrics.jsonl")) == 8


def _err(args):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    return r.output


def test_train_errors(tiny_data, slim, tmp_path):
    base = ["train", "-c", str(DEMO_CFG), "--slim-config", str(slim), "--out", str(tmp_path / "o")]
    ov = sum((["-o", o] for o in tiny_overrides(tiny_data, 4) + ["TrainReader.batch_size=2"]), [])
    assert "--pretrained is required" in _err(base + ov)
    assert "--pretrained nope.pdparams: file does not exist" in _err(
        base + ov + ["--pretrained", "nope.pdparams"])
    junk = tmp_path / "junk.pdparams"
    junk.write_bytes(b"not a pickle")
    assert f"--pretrained {junk}: not a readable .pdparams file" in _err(
        base + ov + ["--pretrained", str(junk)])
    # weights sharing nothing with the config's model (--pretrained loads what fits, like
    # PaddleDetection; a file where nothing fits is an error)
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    alien = tmp_path / "alien.pdparams"
    paddle.save({"fc.weight": paddle.zeros([3, 3])}, str(alien))
    assert f"--pretrained {alien}: no parameter fits the config's model" in _err(
        base + ov + ["--pretrained", str(alien)])
    assert "--sparsity must be in [0, 1), got 1.0" in _err(base + ov + ["--sparsity", "1", "--from-scratch"])
    assert "--sparsity must be in [0, 1), got -0.1" in _err(base + ov + ["--sparsity=-0.1", "--from-scratch"])
    msg = _err(base + ov + ["--from-scratch", "-o", "UnstructuredPruner.pruning_steps=5"])
    assert "PaddleSlim needs more than 10 iterations per step" in msg and "lower pruning_steps to 4" in msg
    msg = _err(base + ov + ["--from-scratch", "-o", "TrainDataset.dataset_dir=/no/such/dir"])
    assert "TrainDataset.dataset_dir /no/such/dir: folder does not exist" in msg
    assert "--resume: no checkpoint in" in _err(base + ov + ["--resume"])
    assert not (tmp_path / "o" / "model_final.pdparams").exists()
