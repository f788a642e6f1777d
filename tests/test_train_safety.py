"""`picosparse train` survives what happens to real runs: a second training into the same
folder, power loss (empty checkpoint files, a torn metrics line), a full disk, resuming without
repeating every flag, and config keys that must not be ignored."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from picosparse.cli import cli

from conftest import DEMO_CFG, tiny_overrides


def dense_args(data, out, epochs=2, extra=()):
    args = ["train", "-c", str(DEMO_CFG), "--sparsity", "0", "--from-scratch", "--out", str(out)]
    for o in tiny_overrides(data, epochs):  # 32 images, batch 4: 8 iterations per epoch
        args += ["-o", o]
    return args + list(extra)


def invoke(args, quiet=True):
    return CliRunner().invoke(cli, (["-q"] if quiet else []) + args)


def one_error(args):
    r = invoke(args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def load(path):
    from picosparse import paddle_env
    return paddle_env.stack().paddle.load(str(path))


def same_weights(a, b):
    wa, wb = load(a), load(b)
    return set(wa) == set(wb) and all((wa[k].numpy() == wb[k].numpy()).all() for k in wa)


def read_jsonl(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]


def rollback(out, epoch):
    """OUT as a run killed right after checkpoint `epoch` would have left it."""
    for d in (out / "checkpoints").glob("epoch_*"):
        if int(d.name.split("_")[1]) > epoch:
            shutil.rmtree(d)
    (out / "checkpoints" / "latest").write_text(f"epoch_{epoch}\n")
    for name in ("model_final.pdparams", "best_model.pdparams"):
        (out / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def ref(tiny_data, tmp_path_factory):
    """An uninterrupted 2-epoch dense run (16 iterations, checkpoints epoch_1 and epoch_2)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = invoke(dense_args(tiny_data, out))
    assert r.exit_code == 0, r.output
    return out


# ------------------------------------------------------------------ one training per --out

def test_second_training_into_the_same_out_fails_at_once(tiny_data, tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time; from picosparse import trainlock; "
            "lock = trainlock.hold(sys.argv[1]); lock.__enter__(); print('held', flush=True); "
            "time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        want = (f"Error: --out {out}: another training is writing to this folder (pid "
                f"{holder.pid}); wait for it to end or choose another --out")
        t0 = time.monotonic()
        assert one_error(dense_args(tiny_data, out)) == want
        assert one_error(dense_args(tiny_data, out, extra=["--nproc", "2"])) == want
        assert time.monotonic() - t0 < 30  # at once: no training, no processes started
        assert sorted(p.name for p in out.iterdir()) == [".train.lock"]
    finally:
        holder.kill()
        holder.wait()
    from picosparse import trainlock
    trainlock.check_free(out)  # the kernel released the killed holder's lock


# ------------------------------------------------------------------ crash safety

def test_checkpoint_files_and_folders_are_fsynced_before_latest_moves(tmp_path, monkeypatch):
    from picosparse import checkpoint, paddle_env
    paddle = paddle_env.stack().paddle
    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    checkpoint.save(tmp_path, 1, {"epoch": 1}, model.state_dict(), opt)
    ck = str(tmp_path / "checkpoints")
    files = {"model.pdparams", "optimizer.pdopt", "rng.pkl", "state.json"}
    tmp_files = [p for p in synced if p.startswith(ck + "/.epoch_1.")]
    assert {Path(p).name for p in tmp_files} >= files  # each file, before the rename
    assert any(p.startswith(ck + "/.epoch_1.") and p.endswith(".tmp") for p in synced)
    renamed = synced.index(ck)  # the folder holding the renamed checkpoint
    assert max(synced.index(p) for p in tmp_files) < renamed
    ptr = [i for i, p in enumerate(synced) if p.startswith(ck + "/.latest.")]
    assert ptr and ptr[0] > renamed and synced[-1] == ck  # pointer written after, then synced
    assert checkpoint.load(checkpoint.latest(tmp_path))["state"]["epoch"] == 1


def test_unreadable_latest_falls_back_and_a_torn_metrics_line_is_skipped(tiny_data, ref,
                                                                         tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    rollback(out, 2)
    for f in (out / "checkpoints" / "epoch_2").iterdir():  # renamed, data never on disk
        f.write_bytes(b"")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:12]) + "\n" + lines[12][:17])
    r = invoke(dense_args(tiny_data, out, extra=["--resume"]), quiet=False)
    assert r.exit_code == 0, r.output
    note = "resuming from epoch_1, the newest readable checkpoint (epoch_2 unreadable)"
    assert r.output.splitlines().count(note) == 1
    log = (out / "train.log").read_text()
    assert note in log and "metrics.jsonl: skipped 1 torn line(s)" in log
    assert [x["iter"] for x in read_jsonl(out / "metrics.jsonl")] == list(range(1, 17))
    assert same_weights(out / "model_final.pdparams", ref / "model_final.pdparams")
    # no pointer at all, and nothing readable: one line each
    (out / "checkpoints" / "latest").unlink()
    for d in (out / "checkpoints").glob("epoch_*"):
        for f in d.iterdir():
            f.write_bytes(b"")
    msg = one_error(dense_args(tiny_data, out, extra=["--resume"]))
    assert msg.startswith(f"Error: --resume: no readable checkpoint in {out / 'checkpoints'} (")


@pytest.mark.parametrize("victim", ["optimizer.pdopt", "model_final.pdparams"])
def test_full_disk_is_one_line_and_loses_nothing(tiny_data, ref, tmp_path, monkeypatch, victim):
    from picosparse import checkpoint, paddle_env
    paddle = paddle_env.stack().paddle
    real = paddle.save

    def full(obj, path, *a, **k):
        name = Path(path).name  # model_final is written to a temp name first
        if (name == victim and "epoch_2" in path) or (victim.startswith("model_final") and
                                                     name.startswith(".model_final")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, path, *a, **k)
    monkeypatch.setattr(paddle, "save", full)
    out = tmp_path / "run"
    kept = "epoch_1" if victim == "optimizer.pdopt" else "epoch_2"
    what = "checkpoint epoch_2" if victim == "optimizer.pdopt" else "the run's files"
    assert one_error(dense_args(tiny_data, out)) == (
        f"Error: --out {out}: disk full while writing {what} (No space left on device); the "
        f"last checkpoint ({kept}) is intact: free space, then run again with --resume")
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == sorted(["latest", "epoch_1"] + (["epoch_2"] if kept == "epoch_2" else []))
    assert (out / "checkpoints" / "latest").read_text().strip() == kept
    assert checkpoint.load(out / "checkpoints" / kept)["state"]["epoch"] == int(kept[-1])
    assert not [p for p in out.iterdir() if p.name.startswith(".model_final")]
    assert not (out / "model_final.pdparams").exists()
    monkeypatch.undo()
    r = invoke(dense_args(tiny_data, out, extra=["--resume"]))
    assert r.exit_code == 0, r.output
    assert same_weights(out / "model_final.pdparams", ref / "model_final.pdparams")


# ------------------------------------------------------------------ resume compares what is given

def test_resume_needs_only_what_changed(tiny_data, tmp_path, monkeypatch):
    from picosparse import paddle_env, weights as W
    from picosparse.config import load_detector
    monkeypatch.chdir(tmp_path)
    cfg = load_detector(DEMO_CFG)
    W.save(paddle_env.build_model(cfg).state_dict(), tmp_path / "dense.pdparams")
    other = tmp_path / "other.pdparams"
    shutil.copy(tmp_path / "dense.pdparams", other)
    out = tmp_path / "run"
    args = [a for a in dense_args(tiny_data, out) if a != "--from-scratch"]
    r = invoke(args + ["--pretrained", "dense.pdparams", "--seed", "4"])
    assert r.exit_code == 0, r.output
    final = tmp_path / "first_final.pdparams"
    shutil.copy(out / "model_final.pdparams", final)
    where = f"the run in {out}"
    assert one_error(args + ["--resume", "--pretrained", str(other)]) == (
        f"Error: --resume: --pretrained {other} is not what {where} started from "
        f"({tmp_path / 'dense.pdparams'}); drop --pretrained or choose another --out")
    assert one_error(args + ["--resume", "--seed", "0"]) == (
        f"Error: --resume: --seed 0 differs from {where} (seed 4); drop --seed or choose "
        "another --out")
    assert one_error(args + ["--resume", "--from-scratch"]) == (
        f"Error: --resume: --from-scratch, but {where} started from "
        f"{tmp_path / 'dense.pdparams'}; drop --from-scratch")
    assert one_error(args + ["--resume", "-o", "TrainReader.batch_size=2"]).startswith(
        f"Error: --resume: the resolved config differs from {where}")
    assert one_error(args + ["--resume", "--nproc", "2"]) == (
        f"Error: --resume: {where} trained with 1 process(es), this is 2; resume with "
        "--nproc 1 (iterations per epoch and the GMP schedule depend on it)")
    for given in ([], ["--pretrained", str(tmp_path / "dense.pdparams"), "--seed", "4"]):
        rollback(out, 1)  # killed after epoch 1: resume with nothing repeated, then all of it
        r = invoke(args + ["--resume"] + given)
        assert r.exit_code == 0, r.output
        assert same_weights(out / "model_final.pdparams", final)


GMP_NO_TUNING = """UnstructuredPruner:
  stable_epochs: 0
  pruning_epochs: 2
  tunning_epochs: 0
  pruning_steps: 1
  ratio: 0.75
  initial_ratio: 0.15
  prune_params_type: conv1x1_only
"""


def test_resume_after_the_ramp_without_tuning_epochs_keeps_the_target(tiny_data, tmp_path):
    """2 pruning epochs of 8 iterations in 1 step (period 16), no tuning, 4 epochs: from
    iteration 16 on the ratio is the target, also after resuming at iteration 24."""
    slim = tmp_path / "slim.yml"
    slim.write_text(GMP_NO_TUNING)
    out = tmp_path / "run"
    args = ["train", "-c", str(DEMO_CFG), "--slim-config", str(slim), "--from-scratch",
            "--out", str(out)] + sum((["-o", o] for o in tiny_overrides(tiny_data, 4)), [])
    r = invoke(args)
    assert r.exit_code == 0, r.output
    a = read_jsonl(out / "metrics.jsonl")
    assert [x["ratio"] for x in a if x["iter"] > 16] == [0.75] * 16
    shutil.copy(out / "model_final.pdparams", tmp_path / "ref.pdparams")
    rollback(out, 3)
    r = invoke(args + ["--resume"])
    assert r.exit_code == 0, r.output
    b = read_jsonl(out / "metrics.jsonl")
    assert [x["iter"] for x in b] == list(range(1, 33))
    assert [x["ratio"] for x in b] == [x["ratio"] for x in a]
    wa, wb = load(tmp_path / "ref.pdparams"), load(out / "model_final.pdparams")
    assert all(((wa[k].numpy() == 0) == (wb[k].numpy() == 0)).all() for k in wa)  # same masks


# ------------------------------------------------------------------ config keys are honoured

def test_amp_sync_bn_and_ema_filter_are_not_ignored(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert one_error(dense_args(tiny_data, out, 1, ["-o", "amp=true"])) == (
        "Error: amp: true needs a GPU; this run is on cpu (auto: this Paddle build has no "
        "CUDA): set -o amp=false or train on a GPU")
    assert one_error(dense_args(tiny_data, out, 1, ["-o", "amp=true", "-o", "amp_level=O2"])) \
        == (f"Error: {DEMO_CFG}: amp_level O2: only O1 is supported (GMP masks and the EMA "
            "need FP32 weights; O2 keeps FP16 ones)")
    import ppdet.optimizer
    seen = {}
    real = ppdet.optimizer.ModelEMA

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)
    monkeypatch.setattr(ppdet.optimizer, "ModelEMA", spy)
    r = invoke(dense_args(tiny_data, out, 1, ["-o", "norm_type=sync_bn", "-o",
                                              "ema_filter_no_grad=true"]), quiet=False)
    assert r.exit_code == 0, r.output
    assert ("note: norm_type: sync_bn needs several GPU processes; this run (cpu, 1 "
            "process(es)) uses plain BatchNorm, as PaddleDetection does") in r.output.splitlines()
    assert seen["ema_filter_no_grad"] is True


def test_shared_memory_where_it_applies(tiny_data, monkeypatch, capsys):
    from types import SimpleNamespace
    import ppdet.data.shm_utils as shm
    from picosparse.steps import loaders
    on = SimpleNamespace(use_shared_memory=True)
    assert loaders.shared_memory(SimpleNamespace(use_shared_memory=False), 2, "TrainReader") \
        is False
    assert loaders.shared_memory(on, 0, "TrainReader") is False
    monkeypatch.setattr(shm, "_get_shared_memory_size_in_M", lambda: 4096.0)
    assert loaders.shared_memory(on, 2, "TrainReader") is True
    monkeypatch.setattr(shm, "_get_shared_memory_size_in_M", lambda: 64.0)
    assert loaders.shared_memory(on, 2, "EvalReader") is False
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: TrainReader.use_shared_memory has no effect with worker_num: 0",
                   "note: EvalReader.use_shared_memory: /dev/shm has 64 MB (< 1 GB); loading "
                   "without shared memory, as PaddleDetection does"]
    # and the loader gets it
    from picosparse import paddle_env
    from picosparse.config import load_detector
    monkeypatch.setattr(shm, "_get_shared_memory_size_in_M", lambda: 4096.0)
    cfg = load_detector(DEMO_CFG, overrides=tiny_overrides(tiny_data, 1) + [
        "worker_num=2", "TrainReader.use_shared_memory=true"])
    paddle_env.activate(cfg.data)
    loader, sampler, seeder = loaders.train_loader(cfg, seed=0, rank=0)
    assert loader.use_shared_memory is True and loader.num_workers == 2
    assert loader.worker_init_fn is seeder
