"""`picosparse export --x86-sparse`, the `x86_sparse` pipeline step and `picosparse bench
--runtime openvino` with x86-sparse models, through the CLI on the demo PicoDet at 160 px with
80% sparse 1x1 weights and calibrated BN statistics (tests/deploy_helpers.py)."""

import json
import os
import re
import statistics
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import deploy_helpers as h
from picosparse.cli import cli
from picosparse.errors import ConfigError
from picosparse.steps.bench import bench, model_name


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def make_run_dir(root, kind="sparse"):
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yml").write_text(h.load_cfg().dump())
    (run_dir / "model_final.pdparams").write_bytes(h.weights(kind).read_bytes())
    return run_dir


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """`export --run RUN --no-postprocess --x86-sparse` once: (RUN/inference, CLI result).
    Without NMS: OpenVINO 2026.4's multiclass_nms crashed on some inputs, and raw head
    outputs compare element-wise."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("x86"))
    r = run("export", "--run", run_dir, "--no-postprocess", "--x86-sparse")
    assert r.exit_code == 0, r.output
    return run_dir / "inference", r


def image():
    from picosparse.deploy import infer_cfg
    # seed 100: one of the images the test weights' BatchNorm stats were set on
    return infer_cfg.preprocess(infer_cfg.random_image(160, seed=100), h.PREPROCESS,
                                160)["image"]


def dense_openvino(model_dir, x, precision="f32"):
    import openvino as ov
    core = ov.Core()
    c = core.compile_model(core.read_model(str(model_dir / "model.pdmodel")), "CPU",
                           {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 1})
    out = c(x)
    return [out[i] for i in range(len(c.outputs))]


def assert_outputs_match(x86_dir, dense_dir, threads=(1, 2)):
    from picosparse.x86.runtime import load_model
    x = image()
    want = dense_openvino(dense_dir, x)
    assert np.std(want[0]) > 0.01  # scores vary: the comparison sees the whole network
    for t in threads:
        got = load_model(x86_dir, threads=t)(x)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            rel = float(np.abs(g - w).max()) / max(float(np.abs(w).max()), 1e-12)
            assert rel <= 1e-4, f"{t} threads: max relative difference {rel:.2e}"


def test_export_x86_sparse_writes_ir_and_summary(exported_run):
    inf, r = exported_run
    d = inf / "x86_sparse"
    assert {p.name for p in d.iterdir()} == {"model.xml", "model.bin", "libpicosparse_ops.so",
                                            "x86_sparse.json", "infer_cfg.yml"}
    assert not [p for p in inf.iterdir() if p.name.startswith(".")]  # no temp leftovers
    meta = json.loads((d / "x86_sparse.json").read_text())
    sp = [l for l in meta["layers"] if l["kind"] == "sparse1x1"]
    assert meta["replaced"] == len(sp) == 97 and meta["kept_dense_1x1"] == 0
    assert all(l["zero_fraction"] >= 0.79 for l in sp)
    line = [ln for ln in r.output.splitlines() if ln.startswith("wrote ")][-1]
    assert f"{d}/" in line and "97 of 97 1x1 convs -> SparseConv1x1 (threshold 60%)" in line
    dense_mb = meta["dense_1x1_weight_bytes"] / 1e6
    sparse_mb = meta["sparse_weight_bytes"] / 1e6
    assert sparse_mb < dense_mb / 2
    assert f"1x1 weights {dense_mb:.2f} MB dense -> {sparse_mb:.2f} MB sparse" in line
    assert "includes NMS" not in r.output  # exported with --no-postprocess
    # default --nchw-ops on: every depthwise conv, the stem (+ its max pool) and both
    # upsamplings also run picosparse's NCHW ops
    assert (meta["depthwise"], meta["dense_kxk"], meta["upsample"]) == (35, 1, 2)
    assert "35 depthwise + 1 dense KxK convs and 2 upsamplings on picosparse's NCHW ops" in line


def test_export_x86_sparse_matches_dense_openvino(exported_run):
    inf, _ = exported_run
    assert_outputs_match(inf / "x86_sparse", inf)


def test_export_with_lite_and_nchw_ops_off(tmp_path):
    """-c/--weights instead of --run, with --lite, and OpenVINO's own depthwise convs."""
    out = tmp_path / "inf"
    r = run("export", "-c", h.DEMO_CFG, "--weights", h.weights("sparse"), "--out", out,
            "--no-postprocess", "--lite", "--x86-sparse", "--nchw-ops", "off")
    assert r.exit_code == 0, r.output
    assert "97 of 97 1x1 convs -> sparse_conv2d" in r.output  # the .nb step still ran
    assert (out / "model.nb").is_file()
    meta = json.loads((out / "x86_sparse" / "x86_sparse.json").read_text())
    assert meta["depthwise"] == meta["dense_kxk"] == meta["upsample"] == 0
    assert "on picosparse's NCHW ops" not in r.output
    assert_outputs_match(out / "x86_sparse", out, threads=(2,))


def test_threshold_too_high_is_one_line_and_leaves_no_dir(tmp_path):
    run_dir = make_run_dir(tmp_path)
    r = run("export", "--run", run_dir, "--no-postprocess", "--x86-sparse",
            "--sparse-threshold", "0.9")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("Error: --sparse-threshold 0.9: no 1x1 conv of ")
    assert re.search(r"\(97 1x1 convs, the sparsest 80\.\d% zeros\); lower the threshold",
                     lines[-1])
    assert "Traceback" not in r.output
    inf = run_dir / "inference"
    assert (inf / "model.pdmodel").is_file()  # the normal export stands
    assert sorted(p.name for p in inf.iterdir()) == ["infer_cfg.yml", "model.pdiparams",
                                                    "model.pdmodel"]


def test_bad_flags_and_missing_openvino_fail_before_exporting(tmp_path, monkeypatch):
    out = tmp_path / "inf"
    base = ["export", "-c", h.DEMO_CFG, "--weights", h.weights("sparse"), "--out", out,
            "--x86-sparse"]
    r = run(*base, "--sparse-threshold", "1.5")
    assert r.exit_code == 2 and "--sparse-threshold 1.5: must be in [0, 1]" in r.output
    r = run(*base, "--nchw-ops", "maybe")
    assert r.exit_code == 2 and "'maybe' is not one of 'on', 'off'" in r.output
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    r = run(*base)
    assert r.exit_code == 2 and r.output.startswith("Error: openvino is not importable")
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_bench_dense_vs_x86_sparse_with_per_layer(exported_run, tmp_path):
    inf, _ = exported_run
    x86 = inf / "x86_sparse"
    r = run("bench", "--runtime", "openvino", "--model", inf, "--model", x86,
            "--threads", "1,2", "--repeats", "3", "--warmup", "1", "--per-layer",
            "--json", tmp_path / "b.json")  # table on stdout, JSON to the file
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "b.json").read_text())
    threads = [str(t) for t in res["threads"]]
    assert res["threads"] == sorted({min(t, os.cpu_count()) for t in (1, 2)})
    base, sp = res["models"]
    assert (base["name"], sp["name"]) == ("run", "run/x86_sparse")
    assert (base["kind"], sp["kind"]) == ("dense", "x86-sparse")
    assert base["precision"] == sp["precision"] == "fp32" and res["precision"] == "fp32"
    assert sp["x86_sparse"] == {"replaced": 97, "depthwise": 35, "dense_kxk": 1, "upsample": 2,
                                "conv_1x1_total": 97, "sparse_threshold": 0.6,
                                "dense_1x1_on_op": 0}
    assert sp["size_kind"] == "xml+bin" and sp["size_bytes"] < base["size_bytes"]
    for t in threads:
        b, x = base["latency_ms"][t]["median"], sp["latency_ms"][t]["median"]
        assert b > 0 and x > 0
        # the speed-up is the median of the per-round paired ratios (deploy/timing.py)
        rounds = [d / q for d, q in zip(base["samples_ms"][t], sp["samples_ms"][t])]
        assert len(rounds) == 3
        assert sp["speedup_ratio"][t] == pytest.approx(statistics.median(rounds))
        assert sp["speedup_fps_gain"][t] == pytest.approx(statistics.median(rounds) - 1)
    # the "no sparse kernels" note names the dense model only; the x86 one gets its own
    kernels = [n for n in res["notes"] if "no sparse kernels" in n]
    assert len(kernels) == 1 and "run runs pruned weights" in kernels[0]
    assert "run/x86_sparse" not in kernels[0]
    assert any(n.startswith("run/x86_sparse: x86-sparse export, 97 of 97 1x1 convs")
               for n in res["notes"])
    # per layer: only the x86-sparse model, every replaced layer, every thread count
    assert "per_layer" not in base
    assert sorted(sp["per_layer"]) == sorted(threads)
    for t in threads:
        pl = sp["per_layer"][t]
        assert len(pl["layers"]) == 97 + 35 + 1 + 2 and pl["summary"]["unmatched_layers"] == 0
        # squeeze-excite convs run inside their consumer's op (its time includes theirs)
        fused = [l for l in pl["layers"] if l.get("fused_into")]
        assert fused and all(l["sparse_ms"] is None for l in fused)
        assert all(l["dense_ms"] >= 0 and l["sparse_ms"] > 0 for l in pl["layers"]
                   if not l.get("fused_into"))
        s = pl["summary"]
        assert s["sparse_1x1_ms"] == pytest.approx(sum(l["sparse_ms"] or 0 for l in pl["layers"]
                                                       if l["kind"] == "sparse1x1"))
        assert 1 < s["bound_speedup"] < 5  # Amdahl: only the 1x1 convs get faster
    assert "per layer: run/x86_sparse vs the dense nodes it replaced" in r.output
    assert "24->" in r.output and "+pool" in r.output  # the stem, its max pool fused
    assert "128->128@5x5" in r.output and "of a " in r.output and " bound" in r.output


def test_x86_sparse_at_bf16_whole_model_and_bench(exported_run, tmp_path):
    """DIR@bf16: the whole exported PicoDet on picosparse's BF16 kernel is no further from
    dense FP32 than OpenVINO's own dense BF16 run is: per output, mean absolute difference at
    most OpenVINO's (measured ~half: the depthwise convs stay FP32), max at most twice its
    (measured 0.3-1x), and bench times it beside the FP32 run with its precision named."""
    from picosparse.x86.kernel import bf16_supported
    from picosparse.x86.runtime import load_model
    inf, _ = exported_run
    x86 = inf / "x86_sparse"
    if not bf16_supported():  # FP32, and said so
        assert load_model(x86, threads=1, precision="bf16").precision == "fp32"
        return
    x = image()
    want = dense_openvino(inf, x)
    ov_bf16 = dense_openvino(inf, x, "bf16")
    got = load_model(x86, threads=1, precision="bf16")(x)
    f32 = load_model(x86, threads=1)(x)
    for g, w, b, f in zip(got, want, ov_bf16, f32):
        ours, theirs = np.abs(g - w), np.abs(b - w)
        assert ours.max() <= 2 * theirs.max() and ours.mean() <= theirs.mean(), \
            f"max {ours.max():.3g} vs {theirs.max():.3g}, mean {ours.mean():.3g} vs " \
            f"{theirs.mean():.3g}"
        assert not np.array_equal(g, f)
    r = run("bench", "--runtime", "openvino", "--model", x86, "--model", f"{x86}@bf16",
            "--threads", "1", "--repeats", "2", "--warmup", "0", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "b.json").read_text())
    a, b = res["models"]
    assert (a["name"], b["name"]) == ("run/x86_sparse", "run/x86_sparse@bf16")
    assert (a["precision"], b["precision"]) == ("fp32", "bf16")
    assert any(n.startswith("run/x86_sparse@bf16: ") and "BF16 kernel" in n for n in res["notes"])


def test_x86_sparse_at_bf16_without_the_kernels_runs_fp32_and_says_so(exported_run,
                                                                      monkeypatch):
    monkeypatch.setenv("PICOSPARSE_ISA", "avx2")  # as on a CPU without AVX512-BF16
    x86 = exported_run[0] / "x86_sparse"
    res = bench([f"{x86}@bf16"], runtime="openvino", threads=(1,), repeats=1, warmup=0)
    assert res["models"][0]["precision"] == "fp32"
    assert "run/x86_sparse@bf16: asked bf16, OpenVINO ran fp32" in " ".join(res["notes"])


def test_bench_only_x86_sparse_has_no_dense_kernel_note(exported_run):
    res = bench([exported_run[0] / "x86_sparse"], runtime="openvino", threads=(1,),
                repeats=2, warmup=0)
    assert not [n for n in res["notes"] if "no sparse kernels" in n]
    assert res["models"][0]["latency_ms"]["1"]["median"] > 0


def test_bench_x86_sparse_argument_errors(exported_run, tmp_path):
    inf, _ = exported_run
    x86 = inf / "x86_sparse"
    assert model_name(x86) == "run/x86_sparse"
    with pytest.raises(ConfigError, match="x86-sparse export runs on OpenVINO only"):
        bench([inf, x86], runtime="paddle", threads=(1,), repeats=1)
    with pytest.raises(ConfigError, match="^per_layer: needs runtime openvino .*got runtime "
                                          "paddle$"):
        bench([inf, x86], runtime="paddle", threads=(1,), repeats=1, per_layer=True)
    r = run("bench", "--runtime", "paddle", "--model", inf, "--per-layer")
    assert r.output.strip() == ("Error: --per-layer: needs --runtime openvino (it profiles "
                                "x86-sparse models), got --runtime paddle")
    with pytest.raises(ConfigError, match="--per-layer: no x86-sparse model among --model"):
        bench([inf], runtime="openvino", threads=(1,), repeats=1, per_layer=True)
    broken = tmp_path / "x86_sparse"
    broken.mkdir()
    (broken / "model.xml").write_text("<net/>")
    r = run("bench", "--runtime", "openvino", "--model", broken)
    assert r.exit_code == 2 and "no x86_sparse.json (not a complete x86-sparse export" in r.output
    assert len(r.output.strip().splitlines()) == 1


# ------------------------------------------------------------------ the step, in a pipeline

def test_params_are_checked_once_and_name_the_callers_spelling():
    from picosparse.errors import ParamError
    from picosparse.steps.x86_sparse import X86SparseParams
    assert X86SparseParams() == X86SparseParams(0.6, True, True)
    assert X86SparseParams(1).sparse_threshold == 1.0
    with pytest.raises(ParamError, match=r"^sparse_threshold 1\.5: must be in \[0, 1\]$"):
        X86SparseParams(1.5)
    with pytest.raises(ConfigError, match=r"^sparse_threshold True: must be a number$"):
        X86SparseParams(True)
    with pytest.raises(ConfigError, match=r"^nchw_ops 'on': must be true or false$") as e:
        X86SparseParams(0.6, "on")
    assert e.value.field == "nchw_ops"
    flags = {"sparse_threshold": "--sparse-threshold", "nchw_ops": "--nchw-ops"}
    with pytest.raises(ConfigError, match=r"^--sparse-threshold -0\.1: must be in \[0, 1\]$"):
        X86SparseParams(-0.1, spelled=flags)


def _write_pipeline(path, model_dir, threshold):
    path.write_text(f"""name: x86
steps:
  x86:
    kind: x86_sparse
    model_dir: {model_dir}
    sparse_threshold: {threshold}
  bench:
    kind: bench
    models:
      dense: {model_dir}
      x86: ${{steps.x86.out_dir}}
    runtime: openvino
    threads: [1]
    repeats: 2
    warmup: 0
""")
    return path


def test_pipeline_step_makes_an_x86_sparse_model(exported_run, tmp_path):
    from picosparse.pipeline.runner import run_pipeline
    inf, _ = exported_run
    res = run_pipeline(_write_pipeline(tmp_path / "x86.yml", inf, 0.6), run_dir=tmp_path / "run")
    out = tmp_path / "run" / "x86"
    assert {p.name for p in out.iterdir()} == {"model.xml", "model.bin", "libpicosparse_ops.so",
                                              "x86_sparse.json", "infer_cfg.yml"}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    outputs = manifest["steps"]["x86"]["outputs"]
    assert outputs["out_dir"] == str(out) and outputs["replaced"] == 97
    assert outputs["sparse_threshold"] == 0.6
    assert_outputs_match(out, inf, threads=(1,))
    bench = json.loads((tmp_path / "run" / "bench" / "bench.json").read_text())
    assert bench["models"]["x86"]["kind"] == "x86-sparse"
    assert {s.name: s.action for s in res.steps} == {"x86": "run", "bench": "run"}


def test_pipeline_step_error_names_the_pipeline_key(exported_run, tmp_path):
    inf, _ = exported_run
    r = run("run", _write_pipeline(tmp_path / "x86.yml", inf, 0.9), "--out", tmp_path / "run")
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("Error: step 'x86' (x86_sparse) failed: sparse_threshold 0.9: no 1x1 "
                           "conv of "), line
    assert not (tmp_path / "run" / "x86").exists()


def test_example_pipeline_has_the_x86_step():
    from picosparse.pipeline.plan import load_pipeline
    p = load_pipeline(h.ROOT / "pipelines" / "demo_x86_sparse.yml")
    step = p.steps["x86_sparse75"]
    assert step.kind == "x86_sparse" and step.deps == ["export_sparse75"]
    assert step.params["sparse_threshold"] == 0.6 and step.params["nchw_ops"] is True
    assert p.steps["export_sparse75"].params["postprocess"] is False
    assert "x86_sparse75" in p.steps["bench"].deps
    assert p.steps["eval_x86_sparse75"].deps == ["sparse75", "x86_sparse75"]
