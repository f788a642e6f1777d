"""`picosparse bench`: schema and sane numbers per runtime, thread cap, errors, CLI table, and
the adb / benchmark_bin path.

tests/data/benchmark_bin_{dense,sparse75}.txt are written in the report format of Paddle-Lite's
benchmark_bin (v2.10+, lite/api/tools/benchmark) with the seed's SnapDragon-835 PicoDet-m
latencies; no ARM board is attached here, so they are not captured from a device.
benchmark_bin_v2.9.txt is the older lite/api/benchmark.cc glog summary.
"""

import json
import os
import stat
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

import deploy_helpers as h
from picosparse.cli import cli
from picosparse.deploy import benchmark_bin
from picosparse.errors import ConfigError, DataError, ParamError, PicosparseError
from picosparse.steps.bench import bench

DATA = Path(__file__).parent / "data"
FAST = dict(threads=(1,), repeats=3, warmup=1)


def run(*args):
    return CliRunner().invoke(cli, ["-q", *args])


def check_schema(res, n_models, threads):
    assert res["threads"] == threads
    assert [m["name"] for m in res["models"]][:1] == ["dense"]
    assert len(res["models"]) == n_models
    for m in res["models"]:
        assert m["size_bytes"] > 100_000 and m["input_size"] == 160
        for t in map(str, threads):
            lat = m["latency_ms"][t]
            assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
            assert lat["min"] <= lat["mean"] <= lat["max"]
    base = res["models"][0]
    for m in res["models"]:
        for t in map(str, threads):
            # median of the per-round paired ratios (deploy/timing.py), as benchmarks/ report
            ratio = statistics.median(b / x for b, x in zip(base["samples_ms"][t],
                                                            m["samples_ms"][t]))
            assert m["speedup_ratio"][t] == pytest.approx(ratio)
            assert m["speedup_fps_gain"][t] == pytest.approx(ratio - 1)
    assert base["speedup_fps_gain"]["1"] == 0 and base["speedup_ratio"]["1"] == 1


def test_paddle_two_models():
    res = bench([h.exported("dense"), h.exported("sparse")], runtime="paddle", **FAST)
    check_schema(res, 2, [1])
    assert res["runtime"] == "paddle" and res["precision"] == "fp32"
    assert [m["conv1x1_zero_fraction"] for m in res["models"]] == \
        [0.0, pytest.approx(h.SPARSITY, abs=1e-3)]
    assert [m["size_kind"] for m in res["models"]] == ["pdmodel+pdiparams"] * 2
    assert any("no sparse kernels" in n and "no speed-up is expected" in n
               for n in res["notes"])
    json.dumps(res)  # --json must be able to write it


def test_threads_capped_by_cores():
    ncpu = os.cpu_count()
    res = bench([h.exported("dense")], threads=(1, ncpu + 3), repeats=2, warmup=0)
    assert res["threads"] == sorted({1, ncpu})
    assert any(f"threads capped at {ncpu}" in n for n in res["notes"])


def test_openvino_forced_fp32():
    # without NMS: OpenVINO 2026.4's multiclass_nms crashed on some inputs here (see below)
    raw = [h.exported("dense", postprocess=False), h.exported("sparse", postprocess=False)]
    res = bench(raw, runtime="openvino", **FAST)
    for m, name in zip(res["models"], ("dense", "sparse")):
        m["name"] = name  # dirs are dense_raw / sparse_raw
    check_schema(res, 2, [1])
    assert res["precision"] == "fp32"
    assert any("OpenVINO ran fp32" in n for n in res["notes"])


def test_openvino_bf16_reports_what_ran():
    res = bench([h.exported("dense", postprocess=False)], runtime="openvino", precision="bf16", **FAST)
    from picosparse.envcheck import cpu_features
    # bf16 only where the CPU has it; OpenVINO says which precision it picked
    assert res["precision"] == ("bf16" if cpu_features()["avx512_bf16"] else "fp32")


def test_one_run_times_a_model_at_two_precisions():
    """`DIR@bf16` times the same export at another OpenVINO precision in the same interleaved
    run, so "best dense at any precision" is one table."""
    from picosparse.envcheck import cpu_features
    d = h.exported("dense", postprocess=False)
    res = bench([d, f"{d}@bf16"], runtime="openvino", **FAST)
    f32, bf16 = res["models"]
    assert f32["name"] == "dense_raw" and bf16["name"] == "dense_raw@bf16"
    assert f32["precision"] == "fp32"
    has_bf16 = cpu_features()["avx512_bf16"] or cpu_features().get("amx_bf16")
    assert bf16["precision"] == ("bf16" if has_bf16 else "fp32")
    assert any("@PRECISION per model" in n for n in res["notes"])
    if not has_bf16:
        assert any("asked bf16, OpenVINO ran fp32" in n for n in res["notes"])
    assert set(bf16["speedup_ratio"]) == {"1"} and bf16["speedup_ratio"]["1"] > 0
    # the caller's names (a pipeline's variants) in rows and notes
    res = bench([d, f"{d}@bf16"], runtime="openvino", names=["fp32", "at bf16"], **FAST)
    assert [m["name"] for m in res["models"]] == ["fp32", "at bf16"]
    assert not any("dense_raw" in n for n in res["notes"])


def test_per_model_precision_errors(tmp_path):
    d = h.exported("dense", postprocess=False)
    with pytest.raises(ConfigError, match=r"@f16: unknown precision @f16 \(expected @f32 or @bf16"):
        bench([f"{d}@f16"], runtime="openvino", **FAST)
    with pytest.raises(ConfigError, match="@bf16: only --runtime openvino"):
        bench([f"{d}@bf16"], runtime="paddle", **FAST)
    # a folder whose name holds an @ is a folder
    odd = tmp_path / "v@bf16"
    odd.mkdir()
    with pytest.raises(DataError, match=r"v@bf16: .*no model.pdmodel"):
        bench([odd], runtime="openvino", **FAST)


def test_runtime_crash_is_one_clean_error(tmp_path, monkeypatch):
    """The timing runs in a child process; a runtime that dies there becomes one line."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault in some runtime' >&2\nkill -SEGV $$\n")
    fake.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(fake))
    with pytest.raises(PicosparseError, match=r"--runtime openvino crashed \(signal 11\) timing "
                                              r".*Segmentation fault.*--no-postprocess"):
        bench([h.exported("dense")], runtime="openvino", **FAST)


def test_lite_converts_dirs_and_runs_x86_nb(tmp_path):
    x86 = h.nb("dense", False, "x86")["nb"]
    res = bench([x86, h.exported("sparse")], runtime="lite", threads=(1, 2), repeats=3,
                warmup=1, input_size=160)
    assert res["threads"] == [1]
    assert any("no thread setting" in n for n in res["notes"])
    assert any("converted to an x86 .nb" in n for n in res["notes"])
    assert all(m["latency_ms"]["1"]["median"] > 0 for m in res["models"])


def test_arm_nb_on_x86_is_refused():
    with pytest.raises(PicosparseError, match="built for arm, which cannot run on this x86"):
        bench([h.nb("sparse", True)["nb"]], runtime="lite", input_size=160, **FAST)


def test_real_image_and_unreadable_image(tmp_path):
    from picosparse.deploy import infer_cfg
    cv2 = __import__("cv2")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), infer_cfg.random_image(200, seed=5))
    res = bench([h.exported("dense")], image=img, **FAST)
    assert res["image"] == str(img)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"--image .*bad.jpg: not a readable image file"):
        bench([h.exported("dense")], image=tmp_path / "bad.jpg", **FAST)
    with pytest.raises(DataError, match="not a readable image"):
        bench([h.exported("dense")], image=tmp_path / "missing.jpg", **FAST)


def test_argument_errors(tmp_path):
    d = h.exported("dense")
    with pytest.raises(ConfigError, match="needs an exported inference folder"):
        bench([h.nb("sparse", True)["nb"]], runtime="paddle", **FAST)
    # parameters are named as the caller wrote them: the field here, the flag on the CLI
    with pytest.raises(ParamError, match="^precision 'bf16': only runtime openvino"):
        bench([d], precision="bf16", **FAST)
    with pytest.raises(ParamError, match="^adb 'X': needs benchmark_bin PATH"):
        bench([d], adb="X", **FAST)
    with pytest.raises(ParamError, match=r"^threads \[0\]: expected integers >= 1"):
        bench([d], threads=(0,), repeats=1)
    for args, want in (
            (["--precision", "bf16"], "Error: --precision bf16: only --runtime openvino runs "
                                      "other than FP32 here"),
            (["--adb", "X"], "Error: --adb X: needs --benchmark-bin PATH"),
            (["--repeats", "0"], "Error: --repeats 0: must be >= 1"),
            (["--runtime", "openvino", "--per-layer"],
             "Error: --per-layer: no x86-sparse model among --model")):
        r = run("bench", "--model", str(d), *args)
        assert r.exit_code == 2 and r.output.startswith(want), r.output
        assert len(r.output.strip().splitlines()) == 1
    with pytest.raises(DataError, match="no model.pdmodel"):
        bench([tmp_path], **FAST)
    (tmp_path / "lone.nb").write_bytes(h.nb("dense", False, "x86")["nb"].read_bytes())
    with pytest.raises(DataError, match="no infer_cfg.yml beside it.*--input-size"):
        bench([tmp_path / "lone.nb"], runtime="lite", **FAST)


def test_preprocess_matches_ppdet_transforms():
    """bench feeds images the way PaddleDetection's own reader prepares them."""
    from picosparse import paddle_env
    from picosparse.deploy import infer_cfg
    np = paddle_env.stack().np
    from ppdet.data.transform import operators as T
    rgb = infer_cfg.random_image(120, seed=7)[:, :100]  # not square, not the model size
    ours = infer_cfg.preprocess(rgb, h.PREPROCESS, 160)
    # uint8, as ppdet's Decode gives it: Resize runs on the uint8 image (cubic saturates)
    sample = {"image": rgb, "im_shape": np.array([120, 100], "float32"),
              "scale_factor": np.array([1.0, 1.0], "float32")}
    for op in (T.Resize(target_size=[160, 160], keep_ratio=False, interp=2),
               T.NormalizeImage(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                                is_scale=True), T.Permute()):
        sample = op(sample)
    np.testing.assert_allclose(ours["image"][0], sample["image"], atol=1e-6)
    np.testing.assert_allclose(ours["scale_factor"][0], sample["scale_factor"], rtol=1e-6)


def test_cli_table_and_json(tmp_path):
    args = ["bench", "--model", str(h.exported("dense")), "--model", str(h.exported("sparse")),
            "--threads", "1", "--repeats", "3", "--warmup", "1"]
    r = run(*args, "--json", str(tmp_path / "b.json"))  # table on stdout, JSON to the file
    assert r.exit_code == 0, r.output
    for text in ("Latency 1 thread (ms)", "speed-up 1 thread", "dense (base)", "160*160",
                 "80%", "no sparse kernels"):
        assert text in r.output
    assert json.loads((tmp_path / "b.json").read_text())["runtime"] == "paddle"
    r = run(*args, "--json", "-")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)  # nothing but JSON on stdout
    assert doc["models"][1]["name"] == "sparse" and doc["threads"] == [1]
    r = run("bench", "--model", str(h.exported("dense")), "--threads", "1,x")
    assert r.exit_code == 2 and r.output.startswith("Error: --threads 1,x")
    r = run("bench", "--model", str(h.exported("dense")), "--image", str(tmp_path / "no.png"))
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "not a readable image" in r.output


# --- benchmark_bin output and adb -------------------------------------------------------

def test_parse_benchmark_bin_report():
    r = benchmark_bin.parse((DATA / "benchmark_bin_dense.txt").read_text())
    assert (r["min_ms"], r["max_ms"], r["avg_ms"]) == (125.903, 131.216, 127.412)
    assert (r["init_ms"], r["first_ms"]) == (21.874, 141.528)
    assert (r["threads"], r["repeats"], r["warmup"], r["power_mode"]) == (1, 50, 5, 0)
    assert r["backend"] == "arm" and r["cpu_precision"] == "fp32"
    assert r["device_model"] == "MI 6" and r["version"] == "v2.13-rc"
    assert r["input_shape"] == "1,3,320,320:1,2"
    crlf = (DATA / "benchmark_bin_sparse75.txt").read_text().replace("\n", "\r\n")
    assert benchmark_bin.parse(crlf)["avg_ms"] == 80.641


def test_parse_old_benchmark_and_garbage():
    r = benchmark_bin.parse((DATA / "benchmark_bin_v2.9.txt").read_text())
    assert r["avg_ms"] == 32.1842 and r["threads"] == 4 and r["repeats"] == 30
    assert r["min_ms"] is None
    with pytest.raises(DataError, match="no timing .*cannot open model"):
        benchmark_bin.parse("Error: cannot open model\n")


FAKE_ADB = """#!/bin/sh
# fake adb: logs its arguments; `shell ... benchmark_bin` prints a recorded report
echo "$@" >> "{log}"
case "$*" in
  *benchmark_bin\\ --optimized_model_file=*m0_*) cat "{data}/benchmark_bin_dense.txt" ;;
  *benchmark_bin\\ --optimized_model_file=*m1_*) cat "{data}/benchmark_bin_sparse75.txt" ;;
  *"-s offline"*) echo "adb: device 'offline' not found" >&2; exit 1 ;;
esac
"""


def test_adb_flow_with_a_fake_adb(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "adb.log"
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(log=log, data=DATA))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    bb = tmp_path / "benchmark_bin"
    bb.write_bytes(b"\x7fELF fake")
    dense, sparse = h.nb("dense", False)["nb"], h.nb("sparse", True)["nb"]
    res = bench([dense, sparse], threads=(1,), repeats=50, warmup=5, adb="SER123",
                benchmark_bin=bb, input_size=160)
    calls = log.read_text().splitlines()
    assert calls[0] == "-s SER123 shell mkdir -p /data/local/tmp/picosparse"
    assert f"-s SER123 push {bb} /data/local/tmp/picosparse/benchmark_bin" in calls
    assert any(c.startswith(f"-s SER123 push {dense} /data/local/tmp/picosparse/m0_")
               for c in calls)
    runs = [c for c in calls if "--optimized_model_file" in c]
    assert len(runs) == 2
    assert "--input_shape=1,3,160,160:1,2 --threads=1 --power_mode=0 --warmup=5 " \
           "--repeats=50 --backend=arm" in runs[0]
    m0, m1 = res["models"]
    assert m0["latency_ms"]["1"]["mean"] == 127.412 and m0["latency_ms"]["1"]["median"] is None
    assert m1["latency_ms"]["1"]["mean"] == 80.641
    # the seed's 1-thread 75% row: (127 - 80) / 80 = 58%
    assert m1["speedup_fps_gain"]["1"] == pytest.approx((127.412 - 80.641) / 80.641)
    assert round(m1["speedup_fps_gain"]["1"], 2) == 0.58
    assert res["basis"] == "mean" and res["runtime"] == "lite-arm (adb SER123)"
    assert any("dense .nb" in n for n in res["notes"])
    with pytest.raises(PicosparseError, match="--adb offline: `adb shell` failed: adb: device"):
        bench([dense], adb="offline", benchmark_bin=bb, input_size=160, **FAST)
    # an x86 .nb is refused before anything is pushed
    with pytest.raises(PicosparseError, match="built for x86, not arm"):
        bench([h.nb("dense", False, "x86")["nb"]], adb="SER123", benchmark_bin=bb,
              input_size=160, **FAST)


def _gone(pid):
    import time
    for _ in range(50):
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    os.kill(pid, 9)
    return False


def test_timing_child_that_hangs_is_stopped(tmp_path, monkeypatch):
    import time
    from picosparse.steps import bench as bench_mod
    pidfile = tmp_path / "grandchild.pid"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    fake.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(fake))
    monkeypatch.setattr(bench_mod, "WORKER_SETUP_S", 1, raising=False)
    monkeypatch.setattr(bench_mod, "WORKER_PER_RUN_S", 0, raising=False)
    d = h.exported("dense")
    t0 = time.monotonic()
    r = run("bench", "--model", str(d), "--threads", "1", "--repeats", "3", "--warmup", "1")
    assert time.monotonic() - t0 < 30
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.output.strip() == (f"Error: --runtime paddle: timing {d} did not finish within 1 s "
                                "(4 runs) and was stopped")
    assert _gone(int(pidfile.read_text()))


def _fake_adb(tmp_path, monkeypatch, script):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(script)
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    bb = tmp_path / "benchmark_bin"
    bb.write_bytes(b"\x7fELF fake")
    return bb


def test_adb_removes_what_it_pushed(tmp_path, monkeypatch):
    log = tmp_path / "adb.log"
    bb = _fake_adb(tmp_path, monkeypatch, FAKE_ADB.format(log=log, data=DATA))
    dense, sparse = h.nb("dense", False)["nb"], h.nb("sparse", True)["nb"]
    bench([dense, sparse], adb="SER123", benchmark_bin=bb, input_size=160, **FAST)
    calls = log.read_text().splitlines()
    pushed = [c.split()[-1] for c in calls if c.startswith("-s SER123 push ")]
    assert len(pushed) == 3
    assert calls[-2:] == ["-s SER123 shell rm -f " + " ".join(pushed),
                          "-s SER123 shell rmdir /data/local/tmp/picosparse 2>/dev/null || true"]
    # also when benchmark_bin fails on the board
    log.unlink()
    broken = FAKE_ADB.replace('cat "{data}/benchmark_bin_dense.txt"', 'echo "Segmentation fault"')
    (tmp_path / "bin" / "adb").write_text(broken.format(log=log, data=DATA))
    with pytest.raises(DataError, match="no timing .*Segmentation fault"):
        bench([dense], adb="SER123", benchmark_bin=bb, input_size=160, **FAST)
    assert log.read_text().splitlines()[-2].startswith("-s SER123 shell rm -f ")


HANGING_ADB = """#!/bin/sh
# fake adb: benchmark_bin prints the pid the shell announced, then hangs
echo "$@" >> "{log}"
case "$*" in
  *benchmark_bin\\ --optimized_model_file=*) echo "PICOSPARSE_PID=4242"; sleep 60 ;;
esac
"""


def test_adb_benchmark_that_hangs_is_killed_on_the_device(tmp_path, monkeypatch):
    import time
    from picosparse.deploy import adb as adb_mod
    log = tmp_path / "adb.log"
    bb = _fake_adb(tmp_path, monkeypatch, HANGING_ADB.format(log=log))
    monkeypatch.setattr(adb_mod, "TIMEOUT", 1, raising=False)
    dense = h.nb("dense", False)["nb"]
    t0 = time.monotonic()
    r = run("bench", "--model", str(dense), "--adb", "SER123", "--benchmark-bin", str(bb),
            "--input-size", "160", "--threads", "1", "--repeats", "3", "--warmup", "1")
    assert time.monotonic() - t0 < 30
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.output.strip() == (f"Error: --adb SER123: benchmark_bin on {dense.stem} (1 thread) did not "
                                "finish within 1 s and was killed on the device")
    calls = log.read_text().splitlines()
    run_at = next(i for i, c in enumerate(calls) if "--optimized_model_file" in c)
    assert "echo PICOSPARSE_PID=$$ && exec ./benchmark_bin" in calls[run_at]
    assert calls[run_at + 1] == "-s SER123 shell kill -9 4242"
    assert calls[run_at + 2].startswith("-s SER123 shell rm -f /data/local/tmp/picosparse/")
