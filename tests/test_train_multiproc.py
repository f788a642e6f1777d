"""`picosparse train --nproc 2`: two CPU processes (gloo), as a multi-GPU job runs.

Each rank trains on its own shard, gradients are all-reduced so parameters and masks stay
identical, the GMP schedule counts per-process iterations, only rank 0 evaluates and writes,
the launcher's logs land in OUT/log, and a killed job resumes exactly.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from picosparse.sparsity.schedule import GMPSchedule

from conftest import DEMO_CFG, tiny_overrides

# 32 images, batch 2 per process, 2 processes: 8 iterations per epoch and process;
# pruning epochs 0-2 = 24 iterations in 2 steps of 12 (PaddleSlim wants > 10 per step)
SLIM = """UnstructuredPruner:
  stable_epochs: 0
  pruning_epochs: 3
  tunning_epochs: 1
  pruning_steps: 2
  ratio: 0.75
  initial_ratio: 0.15
  prune_params_type: conv1x1_only
"""
OUT_FILES = {".train.lock", "best_model.pdparams", "checkpoints", "config.yml", "log",
             "metrics.jsonl", "model_final.pdparams", "train.log"}


def args(data, slim, out, extra=()):
    a = [sys.executable, "-m", "picosparse", "train", "-c", str(DEMO_CFG), "--slim-config",
         str(slim), "--from-scratch", "--out", str(out), "--nproc", "2", "--eval"]
    for o in tiny_overrides(data, 4) + ["TrainReader.batch_size=2"]:
        a += ["-o", o]
    return a + list(extra)


def read_jsonl(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]


def log_lines(out, marker):
    return [ln.split(" ", 2)[2] for ln in (out / "train.log").read_text().splitlines()
            if marker in ln]


def wait_free(out, timeout=60):
    from picosparse import trainlock
    from picosparse.errors import DataError
    t0 = time.monotonic()
    while True:
        try:
            return trainlock.check_free(out)
        except DataError:
            if time.monotonic() - t0 > timeout:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_two_processes_shard_agree_and_resume_exactly(tiny_data, tmp_path):
    slim = tmp_path / "slim.yml"
    slim.write_text(SLIM)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ref, cut = tmp_path / "ref", tmp_path / "cut"

    done = subprocess.run(args(tiny_data, slim, ref), cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # the launcher's logs went to OUT/log
    assert {p.name for p in ref.iterdir()} == OUT_FILES
    assert {"workerlog.0", "workerlog.1"} <= {p.name for p in (ref / "log").iterdir()}
    # rank 0's progress is echoed (and only rank 0 shows any)
    assert "[train] 32/32" in done.stdout and "device: cpu (" in done.stdout
    w1 = (ref / "log" / "workerlog.1").read_text()
    assert "[train]" not in w1 and "[eval]" not in w1 and "device:" not in w1
    # the schedule runs on per-process iterations: 4 epochs x 8, each logged once (rank 0)
    m = read_jsonl(ref / "metrics.jsonl")
    assert [x["iter"] for x in m] == list(range(1, 33))
    sched = GMPSchedule(0, 24, 8, 2, 0.15, 0.75)
    assert [x["ratio"] for x in m] == pytest.approx([sched.ratio(x["iter"] - 1) for x in m])
    assert log_lines(ref, "start: ")[0].startswith("start: epoch 0/4, iter 0, 8 iters/epoch x "
                                                   "2 process(es), device: cpu (")
    # each rank its own half of every epoch's images
    assert log_lines(ref, " data: ") == [
        f"epoch {e} data: 16 + 16 images on 2 ranks, 32 distinct, 0 on two ranks"
        for e in range(1, 5)]
    # one COCO eval per snapshot (rank 0), and both ranks end with the same weights and masks
    assert len(log_lines(ref, " eval epoch ")) == 4
    agree = log_lines(ref, "ranks ")
    assert len(agree) == 1 and agree[0].startswith("ranks agree: parameters and masks sha256 ")
    d0, d1 = agree[0].split()[-2:]
    assert d0 == d1
    from picosparse.sparsity.layers import layer_table
    from picosparse.config import load_detector
    rows = layer_table(load_detector(ref / "config.yml"), ref / "model_final.pdparams")
    assert all(x["zeros"] >= 0.75 for x in rows if x["pruned"])

    # kill the job mid-ramp (the launcher's group; its ranks die with it), then resume
    proc = subprocess.Popen(args(tiny_data, slim, cut), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.monotonic()
        ptr = cut / "checkpoints" / "latest"
        while not (ptr.is_file() and ptr.read_text().strip() == "epoch_2"):
            assert proc.poll() is None, "the job ended before its second checkpoint"
            assert time.monotonic() - t0 < 300, "no checkpoint"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_free(cut)  # the ranks followed the launcher
    assert not (cut / "model_final.pdparams").exists()
    one = subprocess.run(args(tiny_data, slim, cut, ["--resume"]), cwd=cwd,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    a, b = read_jsonl(ref / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [x["iter"] for x in b] == [x["iter"] for x in a]
    assert [x["loss"] for x in b] == [x["loss"] for x in a]
    assert [x["ratio"] for x in b] == [x["ratio"] for x in a]
    assert log_lines(cut, "ranks ") == agree
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    wa = paddle.load(str(ref / "model_final.pdparams"))
    wb = paddle.load(str(cut / "model_final.pdparams"))
    assert set(wa) == set(wb)
    for k in wa:
        assert (wa[k].numpy() == wb[k].numpy()).all(), k


@pytest.mark.slow
def test_an_error_in_the_ranks_is_the_commands_one_line(tiny_data, tmp_path):
    """Found only once the ranks run (the batch does not fit a process's shard): the
    command ends with that rank's error line and exit code 2, not the launcher's traceback."""
    out = tmp_path / "run"
    a = [sys.executable, "-m", "picosparse", "-q", "train", "-c", str(DEMO_CFG),
         "--from-scratch", "--sparsity", "0", "--out", str(out), "--nproc", "2"]
    for o in tiny_overrides(tiny_data, 1) + ["TrainReader.batch_size=20"]:
        a += ["-o", o]
    r = subprocess.run(a, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: TrainDataset: fewer images than one batch per process "
        "(TrainReader.batch_size=20, 2 process(es))"]
    assert "Traceback" not in r.stdout + r.stderr
    assert (out / "log" / "workerlog.0").is_file() and not (out / "checkpoints").exists()
