"""`picosparse run` on folders and state it does not own: --out refusals, the run-folder lock
taken before any state is read, and cache keys that see datasets, code and package upgrades.

Heavy steps are the contract-shaped fakes of tests/pipeline_fakes.py.
"""

import fcntl
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from picosparse.data.synth import DataParams, synthesize
from picosparse.pipeline import cache, run_pipeline
from conftest import error_line, invoke, manifest, run_ok

ROOT = Path(__file__).resolve().parents[1]
MINI = "tests/data/mini.yml"
MINI_STEPS = set(yaml.safe_load((ROOT / MINI).read_text())["steps"])


pytestmark = pytest.mark.usefixtures("at_root")  # conftest.py: the fixtures and helpers


# ------------------------------------------------------------------ --out is never clobbered

def test_non_empty_folder_without_a_manifest_is_refused(fakes, tmp_path):
    """`picosparse run pipelines/demo.yml --out .` in a checkout with a data/ folder."""
    proj = tmp_path / "checkout"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "mine.txt").write_text("my annotations")
    (proj / "README.md").write_text("mine")
    for extra in ([], ["--dry-run"]):
        r = invoke("run", MINI, "--out", proj, *extra)
        assert r.exit_code == 2, r.output
        assert error_line(r) == (f"Error: --out {proj}: not empty and not a picosparse run "
                                 "folder (no manifest.json; it holds README.md); pick a new "
                                 "or empty folder")
    assert (proj / "data" / "mine.txt").read_text() == "my annotations"
    assert sorted(p.name for p in proj.iterdir()) == ["README.md", "data"]  # not even a .lock
    assert not fakes.calls


def test_foreign_manifest_is_not_a_run_folder(fakes, tmp_path):
    proj = tmp_path / "webapp"
    (proj / "data").mkdir(parents=True)
    (proj / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    r = invoke("run", MINI, "--out", proj)
    assert r.exit_code == 2
    assert error_line(r) == (f"Error: --out {proj}: its manifest.json is not a picosparse run "
                             "manifest; pick a new or empty folder")
    assert sorted(p.name for p in proj.iterdir()) == ["data", "manifest.json"]
    assert json.loads((proj / "manifest.json").read_text())["name"] == "my web app"


def test_empty_folder_is_fine(fakes, tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    run_ok(MINI, "--out", run)
    assert set(manifest(run)["steps"]) == MINI_STEPS


def test_folders_the_manifest_did_not_write_survive(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run, "--only", "data")  # a run folder whose manifest knows `data` only
    assert set(manifest(run)["steps"]) == {"data"}
    (run / "dense").mkdir()
    (run / "dense" / "notes.txt").write_text("mine")
    r = invoke("run", MINI, "--out", run)
    assert r.exit_code == 2, r.output
    assert error_line(r) == (f"Error: --out {run}: dense was not written by a step of this run "
                             "folder (its manifest.json has no record of it) and step 'dense' "
                             "would replace it; move it away or pick another --out")
    assert (run / "dense" / "notes.txt").read_text() == "mine"
    assert set(manifest(run)["steps"]) == {"data"} and not fakes.calls

    # the report's files are checked the same way
    (run / "dense" / "notes.txt").rename(tmp_path / "notes.txt")
    (run / "dense").rmdir()
    (run / "report.md").write_text("my report")
    r = invoke("run", MINI, "--out", run)
    assert r.exit_code == 2 and "report.md was not written by a step" in error_line(r)
    assert (run / "report.md").read_text() == "my report"

    (run / "report.md").unlink()
    run_ok(MINI, "--out", run)
    m = manifest(run)["steps"]
    assert m["dense"]["wrote"] == ["dense"]
    assert m["report"]["wrote"] == ["report.md", "report.json", "plots"]
    fakes.reset()
    run_ok(MINI, "--out", run, "--force")  # what it wrote, it may replace
    assert fakes.ran() == MINI_STEPS - {"data", "report"}


# ------------------------------------------------------------------ the run-folder lock

def test_second_run_takes_the_lock_before_reading_state(fakes, tmp_path, monkeypatch):
    """A run that got the lock only after another run finished works from that run's results
    (all cached), not from what it might have read before."""
    run = tmp_path / "run"
    real_flock = fcntl.flock
    other = {"pending": True}

    def flock(fd, op):
        if other.pop("pending", False):
            run_pipeline(MINI, run_dir=run)  # the other run: takes the lock, finishes, lets go
            fakes.reset()
        return real_flock(fd, op)
    monkeypatch.setattr(fcntl, "flock", flock)
    res = run_pipeline(MINI, run_dir=run)
    assert not other
    assert {s.name: s.action for s in res.steps} == {n: "cached" for n in MINI_STEPS}
    assert not fakes.calls


def test_held_lock_is_one_line_error_and_nothing_is_written(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    before = (run / "manifest.json").read_text()
    fakes.reset()
    with open(run / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = invoke("run", MINI, "--out", run, "--force")
        assert r.exit_code == 2
        assert error_line(r) == (f"Error: {run}: another `picosparse run` is using this run "
                                 "folder")
        assert invoke("run", MINI, "--out", run, "--dry-run").exit_code == 0  # reads only
    assert (run / "manifest.json").read_text() == before and not fakes.calls


# ------------------------------------------------------------------ sound cache keys

def _dataset_pipeline(tmp_path, ds):
    f = tmp_path / "ds.yml"
    f.write_text(yaml.safe_dump({"name": "ds", "steps": {
        "dense": {"kind": "train", "config": "configs/demo/picodet_demo.yml",
                  "overrides": [f"TrainDataset.dataset_dir={ds}",
                                f"EvalDataset.dataset_dir={ds}"],
                  "from_scratch": True},
        "eval_dense": {"kind": "eval", "config": "${steps.dense.config}",
                       "weights": "${steps.dense.weights}"}}}, sort_keys=False))
    return f


def _edit_keeping_size_and_mtime(path):
    """Change one digit of a JSON file, then put its old mtime back (as `cp -p`, rsync or a
    restore from backup would)."""
    st = path.stat()
    text = path.read_text()
    m = re.search(r'"bbox": \[(\d)', text)
    digit = str((int(m.group(1)) + 1) % 10)
    path.write_text(text[:m.start(1)] + digit + text[m.end(1):])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_dataset_fixes_rerun_the_steps_that_read_them(fakes, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RACY_NS", 0, raising=False)  # memoise every hash: the memo must still see it
    ds = tmp_path / "shapes"
    synthesize(ds, DataParams(num_train=4, num_val=2, size=64))
    f, run = _dataset_pipeline(tmp_path, ds), tmp_path / "run"
    run_ok(f, "--out", run)
    inputs = manifest(run)["steps"]["dense"]["inputs"]
    assert {"TrainDataset.anno_path", "TrainDataset.image_dir"} <= set(inputs)
    assert "EvalDataset.anno_path" in manifest(run)["steps"]["eval_dense"]["inputs"]
    fakes.reset()
    r = run_ok(f, "--out", run, "--dry-run")
    assert "dense (train): cached - unchanged" in r.output
    assert "eval_dense (eval): cached - unchanged" in r.output

    time.sleep(0.05)  # past the filesystem's clock tick, so the edit gets a new ctime
    _edit_keeping_size_and_mtime(ds / "train.json")
    r = run_ok(f, "--out", run, "--dry-run")
    assert "dense (train): run - input changed: TrainDataset.anno_path" in r.output
    run_ok(f, "--out", run)
    assert fakes.ran() == {"dense"}  # same weights bytes: eval stays cached

    fakes.reset()
    time.sleep(0.05)
    _edit_keeping_size_and_mtime(ds / "val.json")
    run_ok(f, "--out", run)
    assert fakes.ran() == {"eval_dense"}

    fakes.reset()
    (ds / "train" / "extra.jpg").write_bytes((ds / "train").joinpath(
        sorted(os.listdir(ds / "train"))[0]).read_bytes())  # an image added to the folder
    r = run_ok(f, "--out", run, "--dry-run")
    assert "dense (train): run - input changed: TrainDataset.image_dir" in r.output


def test_missing_dataset_is_left_to_the_step(fakes, tmp_path):
    f = _dataset_pipeline(tmp_path, tmp_path / "nowhere")
    r = run_ok(f, "--out", tmp_path / "run", "--dry-run")
    assert "dense (train): run - never ran" in r.output


def test_package_upgrade_or_code_change_reruns(fakes, tmp_path, monkeypatch):
    from picosparse import paddle_env
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    m = manifest(run)
    paddle = paddle_env.version("paddlepaddle")
    assert m["steps"]["dense"]["env"]["paddlepaddle"] == paddle
    assert re.fullmatch(r"[0-9a-f]{64}", m["versions"]["picosparse_code"])
    assert m["steps"]["dense"]["env"]["picosparse_code"] == m["versions"]["picosparse_code"]

    real = paddle_env.version
    monkeypatch.setattr(paddle_env, "version",
                        lambda d: "9.9.9" if d == "paddlepaddle" else real(d))
    r = run_ok(MINI, "--out", run, "--dry-run")
    assert (f"data (data): run - package versions changed (paddlepaddle {paddle} -> 9.9.9)"
            in " ".join(r.output.split()))
    assert f"would run {len(MINI_STEPS)}," in r.output
    monkeypatch.setattr(paddle_env, "version", real)

    monkeypatch.setattr(cache, "code_fingerprint", lambda: "0" * 64)  # an edited source file
    r = run_ok(MINI, "--out", run, "--dry-run")
    assert "data (data): run - picosparse code changed\n" in r.output
    fakes.reset()
    run_ok(MINI, "--out", run)
    assert fakes.ran() == MINI_STEPS - {"data", "report"}


# ------------------------------------------------------------------ the hash memo

def test_memo_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RACY_NS", 0, raising=False)
    f = tmp_path / "a.json"
    f.write_text('{"bbox": [1, 2]}')
    h = cache.Hasher(tmp_path / "memo.json")
    first = h.file(f)
    h.save()
    time.sleep(0.05)
    _edit_keeping_size_and_mtime(f)
    assert cache.Hasher(tmp_path / "memo.json").file(f) != first


def test_a_file_changed_right_after_hashing_is_not_memoised(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('{"bbox": [1, 2]}')
    h = cache.Hasher(tmp_path / "memo.json")
    first = h.file(f)
    h.save()
    _edit_keeping_size_and_mtime(f)  # possibly within the same clock tick: same ctime too
    assert cache.Hasher(tmp_path / "memo.json").file(f) != first
