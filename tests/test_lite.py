"""`picosparse opt`: the sparse pass really runs (and is verified), refusals, errors, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import deploy_helpers as h
from picosparse.cli import cli
from picosparse.deploy import nbfile
from picosparse.errors import ConfigError, DataError, ParamError, StackError
from picosparse.steps.lite import OptParams, optimize


def run(*args):
    return CliRunner().invoke(cli, ["-q", *args])


def test_sparse_nb_has_sparse_convs_and_is_smaller():
    sp = h.nb("sparse", True)
    dense = h.nb("sparse", False)  # same weights, pass off
    # every 1x1 conv of the demo model is eligible and 80% zero
    assert sp["conv1x1"] == sp["eligible"] == sp["above_threshold"] == 97
    assert sp["sparse_conv2d"] == 97 and sp["ops"].get("conv2d") == 1  # the 3x3 stem
    assert dense["sparse_conv2d"] == 0 and dense["ops"]["conv2d"] == 98
    assert sp["targets"] == ["arm"] and sp["lite_version"].startswith("v2.13")
    assert sp["size_bytes"] == Path(sp["nb"]).stat().st_size
    # the seed's point: a much smaller deploy model (measured 1.46 vs 2.26 MB)
    assert sp["size_bytes"] < 0.75 * dense["size_bytes"]


def test_op_counts_agree_with_paddle_lite_reader(tmp_path):
    """Our kernel-key count against Lite's own .nb loader (its graph visualizer)."""
    nb = h.nb("sparse", True)["nb"]
    code = ("import sys, paddlelite.lite as l; "
            "print(l.Opt().visualize_optimized_nb_model(sys.argv[1], sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(nb), f"{tmp_path}/"], check=True,
                   capture_output=True, timeout=120)
    dot = (tmp_path / "Block_0.dot").read_text()
    ops = {}
    for line in dot.splitlines():
        if 'fillcolor="yellow"' in line:  # op nodes; variables are gray
            op = line.split('label="', 1)[1].split('"', 1)[0]
            ops[op] = ops.get(op, 0) + 1
    mine = nbfile.inspect(nb)["ops"]
    assert ops["sparse_conv2d"] == mine["sparse_conv2d"] == 97
    # feed/fetch are not kernels; every other op matches
    assert {k: v for k, v in ops.items() if k not in ("feed", "fetch")} == \
        {k: v for k, v in mine.items() if k not in ("feed", "fetch")}


def test_capital_True_gives_a_dense_model(tmp_path):
    """The seed's `--sparse_model=True` trap, checked on the installed opt."""
    from picosparse import paddle_env
    d = h.exported("sparse")
    r = subprocess.run([paddle_env.find_opt(), f"--model_file={d}/model.pdmodel",
                        f"--param_file={d}/model.pdiparams", "--valid_targets=arm",
                        f"--optimize_out={tmp_path}/seed", "--sparse_model=True"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0
    assert nbfile.inspect(tmp_path / "seed.nb")["ops"].get("sparse_conv2d", 0) == 0


def test_dense_weights_with_sparse_fail_and_leave_nothing(tmp_path):
    out = tmp_path / "dense.nb"
    with pytest.raises(DataError, match=r"no sparse_conv2d op .* no eligible 1x1 conv has "
                                        r">= 60% zeros \(highest 0\.0%\).*--no-sparse"):
        optimize(h.exported("dense"), out)
    assert list(tmp_path.iterdir()) == []


def test_threshold_above_the_sparsity_fails(tmp_path):
    with pytest.raises(DataError, match=r">= 90% zeros \(highest 80\.\d%\)"):
        optimize(h.exported("sparse"), tmp_path / "x.nb", OptParams(sparse_threshold=0.9))
    assert list(tmp_path.iterdir()) == []


def test_refusals(tmp_path):
    d = h.exported("sparse")
    # checked when the parameters are made, named by field (the CLI spells them as flags)
    with pytest.raises(ParamError, match="^fp16 with sparse: .*FP32/INT8 only") as e:
        optimize(d, tmp_path / "a.nb", OptParams(fp16=True))
    assert e.value.field == "fp16"
    with pytest.raises(ParamError, match="^valid_targets 'x86': .*ARM only"):
        optimize(d, tmp_path / "b.nb", OptParams(valid_targets="x86"))
    with pytest.raises(ParamError, match="^valid_targets 'arm,opencl': .*ARM only"):
        OptParams(valid_targets="arm,opencl")
    with pytest.raises(ConfigError, match="^valid_targets 'mips': expected a comma list"):
        OptParams(sparse=False, valid_targets="mips")
    with pytest.raises(ParamError, match=r"^sparse_threshold 1.5: must be in \(0, 1\]$"):
        optimize(d, tmp_path / "c.nb", sparse_threshold=1.5)  # fields as keywords, too
    assert list(tmp_path.iterdir()) == []


def test_missing_model_file(tmp_path):
    (tmp_path / "inf").mkdir()
    (tmp_path / "inf" / "model.pdiparams").write_bytes(b"")
    with pytest.raises(DataError, match=r"inf: no model.pdmodel \(not an exported"):
        optimize(tmp_path / "inf", tmp_path / "x.nb")
    with pytest.raises(DataError, match="folder does not exist"):
        optimize(tmp_path / "nowhere", tmp_path / "x.nb")
    assert not (tmp_path / "x.nb").exists()


def test_opt_missing_from_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="paddle_lite_opt not found"):
        optimize(h.exported("sparse"), tmp_path / "x.nb")
    assert not (tmp_path / "x.nb").exists()


def test_x86_dense_nb_and_suffix(tmp_path):
    r = optimize(h.exported("dense"), tmp_path / "x86",
                 OptParams(sparse=False, valid_targets="x86"))
    assert r["nb"] == tmp_path / "x86.nb" and r["nb"].is_file()
    assert r["targets"] == ["x86"] and r["sparse_conv2d"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x86.nb"]


def test_cli_opt(tmp_path):
    r = run("opt", "--model-dir", str(h.exported("sparse")), "--out", str(tmp_path / "s.nb"))
    assert r.exit_code == 0, r.output
    assert "97 of 97 1x1 convs -> sparse_conv2d (threshold 60%)" in r.output
    r = run("opt", "--model-dir", str(h.exported("sparse")), "--out", str(tmp_path / "d.nb"),
            "--no-sparse", "--json", "-")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["sparse"] is False and doc["sparse_conv2d"] == 0 and doc["conv1x1"] == 97
    r = run("opt", "--model-dir", str(h.exported("sparse")), "--out", str(tmp_path / "f.nb"),
            "--fp16")
    assert r.exit_code == 2 and r.output.startswith("Error: --fp16 with --sparse")
    assert len(r.output.strip().splitlines()) == 1
    r = run("opt", "--model-dir", str(h.exported("dense")), "--out", str(tmp_path / "e.nb"))
    assert r.exit_code == 2 and "no sparse_conv2d op" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.nb", "s.nb"]


def test_opt_that_hangs_is_stopped_with_one_line(tmp_path, monkeypatch):
    import time
    from picosparse import paddle_env
    from picosparse.steps import lite
    pidfile = tmp_path / "child.pid"
    opt = tmp_path / "paddle_lite_opt"
    opt.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    opt.chmod(0o755)
    monkeypatch.setattr(paddle_env, "find_opt", lambda: str(opt))
    monkeypatch.setattr(lite, "OPT_TIMEOUT", 1, raising=False)
    out = tmp_path / "out"
    d = h.exported("sparse")
    t0 = time.monotonic()
    r = run("opt", "--model-dir", str(d), "--out", str(out / "s.nb"))
    assert time.monotonic() - t0 < 30
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.output.strip() == (f"Error: paddle_lite_opt did not finish converting {d} within "
                                "1 s and was stopped")
    assert list(out.iterdir()) == []  # no .nb, no temp folder
    pid = int(pidfile.read_text())
    for _ in range(50):  # opt's own child went with it
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"paddle_lite_opt's child {pid} still runs")
