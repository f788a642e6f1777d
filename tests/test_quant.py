"""`picosparse quant` (INT8, zeros kept), the INT8 .nb check, QAT with masks, NNCF, CLI errors."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import deploy_helpers as h
from picosparse.cli import cli
from picosparse.deploy import nbfile, program
from picosparse.errors import DataError, PicosparseError

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real"


def run(*args):
    return CliRunner().invoke(cli, ["-q", *args])


def one_line_error(r, text):
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.output.strip() == f"Error: {text}"


def data_overrides(data_dir):
    return [x for d in (f"TrainDataset.dataset_dir={data_dir}",
                        f"EvalDataset.dataset_dir={data_dir}") for x in ("-o", d)]


@pytest.fixture(scope="module")
def quantized(tiny_data, tmp_path_factory):
    """The 80% sparse demo export quantized through the CLI (config from its infer_cfg.yml,
    4 calibration images) with its INT8 .nb: (json result, source dir, output dir)."""
    out = tmp_path_factory.mktemp("quant") / "int8"
    src = h.exported("sparse")
    r = run("quant", "--model-dir", str(src), "--out", str(out), "--calib-images", "4",
            "--lite", "--json", "-", *data_overrides(tiny_data))
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.output), src, out


def test_quant_keeps_every_zero_and_writes_an_inference_dir(quantized):
    res, src, out = quantized
    assert sorted(p.name for p in out.iterdir()) == ["infer_cfg.yml", "model.nb",
                                                     "model.pdiparams", "model.pdmodel",
                                                     "quant.json"]
    src_w = program.read_params(src / "model.pdmodel", src / "model.pdiparams")
    q_w = program.read_params(out / "model.pdmodel", out / "model.pdiparams")
    convs = program.convs(program.read_program(out / "model.pdmodel"))
    zeros_1x1 = {"src": 0, "int8": 0}
    for c in convs:
        a, b = src_w[c["filter"]], q_w[c["filter"]]
        if c["type"] == "conv2d":  # 1x1 convs and the stem: INT8 weights
            assert b.dtype.name == "int8", c
            assert (b[a == 0] == 0).all(), c["filter"]  # every exact zero is still exact
            assert ((a != 0) == (b != 0)).mean() > 0.99  # and the INT8 grid kept the rest
        else:  # depthwise: FP32, untouched
            assert c["type"] == "depthwise_conv2d" and b.dtype.name == "float32"
            assert (a == b).all()
        if program.is_conv1x1(c):
            zeros_1x1["src"] += int((a == 0).sum())
            zeros_1x1["int8"] += int((b == 0).sum())
    assert sum(map(program.is_conv1x1, convs)) == 97
    assert res["zeros"]["int8_weights"] == 98 and res["zeros"]["weights"] == 133
    assert res["zeros"]["zeros"] == sum(int((src_w[c["filter"]] == 0).sum()) for c in convs)
    assert zeros_1x1["int8"] - zeros_1x1["src"] <= res["zeros"]["rounded_to_zero"]
    assert zeros_1x1["src"] > 0.79 * sum(src_w[c["filter"]].size for c in convs
                                         if program.is_conv1x1(c))
    # the sparse pass sees the same zero fractions in the INT8 model
    assert program.conv1x1_sparsity(out)["overall"] >= h.SPARSITY - 1e-3
    doc = yaml.safe_load((out / "infer_cfg.yml").read_text())
    srcdoc = yaml.safe_load((src / "infer_cfg.yml").read_text())
    assert doc["Preprocess"] == srcdoc["Preprocess"] and doc["label_list"] == srcdoc["label_list"]
    q = doc["picosparse"]["quant"]
    assert q["algo"] == "hist" and q["calib_images"] == 4 and q["backend"] == "paddle"
    assert q["quantized_ops"] == ["conv2d"] and q["zeros"] == res["zeros"]
    assert json.loads((out / "quant.json").read_text()) == q


def test_int8_nb_has_int8_sparse_kernels(quantized):
    res, _, out = quantized
    info = nbfile.inspect(out / "model.nb")
    # read back from the file: every sparse conv an INT8 kernel, the 1x1 convs all sparse
    assert info["op_precisions"]["sparse_conv2d"] == {"int8": 97}
    assert nbfile.conv_precisions(info)["conv2d"] == {"int8": 1}  # the stem
    assert set(nbfile.conv_precisions(info)["depthwise_conv2d"]) == {"fp32"}
    assert nbfile.int8_problems(info, True, 97) == []
    opt = res["opt"]
    assert opt["precision"] == "int8" and opt["sparse_conv2d"] == 97
    assert opt["conv_precisions"]["sparse_conv2d"] == {"int8": 97}
    fp32 = h.nb("sparse", True)
    assert opt["size_bytes"] == (out / "model.nb").stat().st_size < fp32["size_bytes"]


def test_bench_says_what_an_int8_model_ran(quantized):
    from picosparse.errors import ConfigError
    from picosparse.steps.bench import bench
    _, src, out = quantized
    b = bench([src, out], threads=[1], repeats=2, warmup=1, runtime="paddle")
    assert [m["precision"] for m in b["models"]] == ["fp32", "int8-simulated"]
    assert any(n.startswith("int8: PaddleSlim INT8, run by Paddle Inference (CPU, oneDNN) as "
                            "FP32 with quantize/dequantize ops") for n in b["notes"])
    with pytest.raises(ConfigError) as e:
        bench([out], threads=[1], runtime="openvino")
    assert str(e.value) == (f"--model {out}: OpenVINO cannot read PaddleSlim's INT8 model "
                            "(dequantize_linear); for x86 INT8 quantize the FP32 export with "
                            "`picosparse quant --backend openvino`")


def test_detector_runs_paddleslim_int8_on_paddle_inference(quantized, tmp_path):
    """auto picks OpenVINO for exports without NMS, but OpenVINO cannot read PaddleSlim's
    dequantize ops: an INT8 folder goes to Paddle Inference whatever its NMS flag."""
    from picosparse.deploy.detector import Detector
    d = tmp_path / "raw_int8"
    shutil.copytree(quantized[2], d)
    doc = yaml.safe_load((d / "infer_cfg.yml").read_text())
    doc["picosparse"]["postprocess"] = False
    (d / "infer_cfg.yml").write_text(yaml.safe_dump(doc))
    assert Detector(d).runtime == "paddle"
    doc["picosparse"].pop("quant")  # without the rule: OpenVINO, which fails
    (d / "infer_cfg.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(PicosparseError, match="OpenVINO cannot"):
        Detector(d)


def test_fp32_nb_asked_to_be_int8_is_refused(tmp_path):
    from picosparse.steps.lite import check_int8, optimize
    fp32 = h.nb("sparse", True)
    with pytest.raises(DataError) as e:
        check_int8(nbfile.inspect(fp32["nb"]), "m", True, 97)
    assert str(e.value) == ("INT8: paddle_lite_opt's .nb of m is not INT8 sparse as asked: no "
                            "INT8 conv kernels (conv kernels: 133 FP32); 97 of 97 "
                            "sparse_conv2d kernels are FP32, not INT8")
    with pytest.raises(DataError) as e:
        optimize(h.exported("sparse"), tmp_path / "x.nb", int8=True)
    assert str(e.value) == (f"--int8: {h.exported('sparse')} is an FP32 model (no quantize "
                            "ops); make an INT8 one with `picosparse quant`")
    assert list(tmp_path.iterdir()) == []


def test_int8_problems_name_each_silent_fallback():
    from collections import Counter

    def info(**ops):
        return {"op_precisions": {k: Counter(v) for k, v in ops.items()}}
    ok = info(conv2d={"int8": 1}, sparse_conv2d={"int8": 10})
    assert nbfile.int8_problems(ok, True, 10) == []
    # some sparse convs fell back to FP32 kernels
    assert nbfile.int8_problems(info(conv2d={"int8": 1}, sparse_conv2d={"int8": 8, "fp32": 2}),
                                True, 10) == ["2 of 10 sparse_conv2d kernels are FP32, not INT8"]
    # the sparse pass skipped convs: dense INT8 kernels where sparse ones were asked for
    assert nbfile.int8_problems(info(conv2d={"int8": 4}, sparse_conv2d={"int8": 7}),
                                True, 10) == ["3 of 10 sparse-eligible 1x1 convs stayed dense "
                                              "conv2d kernels (7 sparse_conv2d)"]
    assert nbfile.int8_problems(info(conv2d={"int8": 11}), False, 10) == []


def test_check_zeros_fails_loudly_when_a_zero_is_lost():
    from picosparse.steps.quant import check_zeros
    # same program, dense weights: every zero of the sparse export is "lost"
    sparse, dense = h.exported("sparse"), h.exported("dense")
    with pytest.raises(DataError) as e:
        check_zeros(sparse, dense)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{dense}: quantization lost ")
    assert msg.endswith(f"the INT8 model is not as sparse as {sparse}")
    assert check_zeros(sparse, sparse)["rounded_to_zero"] == 0


def test_quant_cli_errors_are_one_line(tmp_path, quantized, tiny_data):
    src = h.exported("sparse")
    one_line_error(run("quant", "--model-dir", str(tmp_path / "none")),
                   f"--model-dir {tmp_path / 'none'}: folder does not exist")
    one_line_error(run("quant", "--model-dir", str(src), "--algo", "best"),
                   "--algo best: must be one of KL, hist, avg, mse, emd, abs_max")
    one_line_error(run("quant", "--model-dir", str(src), "--calib-images", "0"),
                   "--calib-images 0: must be >= 1")
    one_line_error(run("quant", "--model-dir", str(src), "--calib-split", "test"),
                   "--calib-split test: must be one of train, eval")
    one_line_error(run("quant", "--model-dir", str(src), "--backend", "tflite"),
                   "--backend tflite: must be one of paddle, openvino")
    one_line_error(run("quant", "--model-dir", str(src), "--backend", "openvino", "--lite"),
                   "--lite with --backend openvino: Paddle-Lite reads PaddleSlim's INT8 models "
                   "only (--backend paddle)")
    one_line_error(run("quant", "--model-dir", str(src), "--backend", "openvino",
                       *data_overrides(tiny_data)),
                   f"--model-dir {src}: exported with NMS; OpenVINO 2026.4's multiclass_nms "
                   "crashed here on some inputs: export without it (--no-postprocess, "
                   "postprocess: false) for the openvino backend")
    one_line_error(run("quant", "--model-dir", str(quantized[2]), *data_overrides(tiny_data)),
                   f"--model-dir {quantized[2]}: already quantized (it has quantize ops); give "
                   "the FP32 export")
    one_line_error(run("quant", "--model-dir", str(src), "-o",
                       f"TrainDataset.dataset_dir={tmp_path / 'nodata'}"),
                   f"TrainDataset.dataset_dir {tmp_path / 'nodata'}: folder does not exist")
    bare = tmp_path / "bare"
    shutil.copytree(src, bare)
    (bare / "infer_cfg.yml").unlink()
    one_line_error(run("quant", "--model-dir", str(bare)),
                   f"--model-dir {bare}: its infer_cfg.yml names no config; pass -c CONFIG "
                   "(its TrainDataset/EvalDataset gives the calibration images)")
    one_line_error(run("quant", "--model-dir", str(bare), "-c", str(h.DEMO_CFG),
                       *data_overrides(tiny_data)),
                   f"--model-dir {bare}: no infer_cfg.yml (it holds the preprocessing the "
                   "calibration images need; `picosparse export` writes it)")
    w = str(h.weights("sparse"))
    one_line_error(run("qat", "-c", str(h.DEMO_CFG), "--weights", w, "--out",
                       str(tmp_path / "q"), "--epochs", "0"), "--epochs 0: must be >= 1")
    one_line_error(run("qat", "-c", str(h.DEMO_CFG), "--weights", w, "--out",
                       str(tmp_path / "q"), "--lr", "-1"), "--lr -1.0: must be a positive number")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]
    assert not (src / "int8").exists()


def test_masks_are_reapplied_after_a_step():
    from picosparse import paddle_env
    from picosparse.steps.qat import Masks
    paddle = paddle_env.stack().paddle
    conv = paddle.nn.Conv2D(8, 8, 1)
    w = conv.weight.numpy()
    w[:, :4] = 0
    conv.weight.set_value(w)
    masks = Masks(conv)
    opt = paddle.optimizer.Momentum(0.1, parameters=conv.parameters(), weight_decay=1e-4)
    for _ in range(3):
        conv(paddle.rand([2, 8, 4, 4])).square().mean().backward()
        opt.step()
        opt.clear_grad()
        assert masks.broken() is not None  # the step moved pruned weights...
        masks.apply()
        assert masks.broken() is None  # ...and they are exact zeros again
        got = conv.weight.numpy()
        assert (got[:, :4] == 0).all() and (got[:, 4:] != 0).all()
    assert masks.zeros() == 32


def test_qat_freezes_batch_norm_statistics_only():
    from picosparse import paddle_env
    from picosparse.steps.qat import _freeze_bn
    paddle = paddle_env.stack().paddle
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 1), paddle.nn.BatchNorm2D(4),
                               paddle.nn.Conv2D(4, 4, 1), paddle.nn.BatchNorm(4))
    net.train()
    assert _freeze_bn(net) == 2
    assert [m.training for m in net.sublayers()] == [True, False, True, False]
    bn = net[1]
    before = bn._mean.numpy().copy()
    net(paddle.rand([2, 3, 4, 4]) * 5 + 3)
    assert (bn._mean.numpy() == before).all()  # eval mode: running statistics untouched


@pytest.mark.slow
def test_qat_keeps_masks_exact_and_writes_int8(tiny_data, tmp_path):
    from conftest import tiny_overrides
    from picosparse.steps.lite import optimize
    from picosparse.steps.qat import QatParams, qat
    src = h.weights("sparse")
    cfg = h.load_cfg(*tiny_overrides(tiny_data, epochs=1))
    # random weights: their batch-norm statistics do not fit this data, so they train too
    res = qat(cfg, src, tmp_path / "qat",
              QatParams(epochs=1, lr=0.001, input_size=160, train_bn=True), max_iters=4)
    out = res["model_dir"]
    assert res["iters"] == 4 and res["masked_weights"] == 97
    # masks by program weight name: the exported INT8 weights keep every zero
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    state = paddle.load(str(src))
    q = program.read_params(out / "model.pdmodel", out / "model.pdiparams")
    model = paddle_env.build_model(cfg)
    by_name = {k: p.name for k, p in model.named_parameters()}
    checked = 0
    for key, v in state.items():
        v = v.numpy() if hasattr(v, "numpy") else v
        if h.is_1x1(v.shape):
            w = q[by_name[key]]
            assert w.dtype.name == "int8" and (w[v == 0] == 0).all(), key
            checked += 1
    assert checked == 97 == res["zeros"]["int8_weights"]
    r = optimize(out, tmp_path / "qat.nb")
    assert r["precision"] == "int8" and r["conv_precisions"]["sparse_conv2d"] == {"int8": 97}
    doc = yaml.safe_load((out / "infer_cfg.yml").read_text())
    assert doc["picosparse"]["quant"]["algo"] == "qat" and doc["Preprocess"]


@pytest.mark.slow
def test_nncf_int8_ir_runs_in_bench(tiny_data, tmp_path):
    from picosparse.steps.bench import bench
    from picosparse.steps.quant import QuantParams, quantize
    src = h.exported("dense", postprocess=False)
    cfg = h.load_cfg(f"TrainDataset.dataset_dir={tiny_data}")
    res = quantize(cfg, src, tmp_path / "ov_int8",
                   QuantParams(calib_images=4, backend="openvino"))
    out = res["model_dir"]
    assert sorted(p.name for p in out.iterdir()) == ["infer_cfg.yml", "model.bin", "model.xml",
                                                     "quant.json"]
    assert 'type="FakeQuantize"' in (out / "model.xml").read_text()
    b = bench([src, out], threads=[1], repeats=2, warmup=1, runtime="openvino")
    assert [m["precision"] for m in b["models"]] == ["fp32", "int8"]
    assert b["models"][1]["kind"] == "openvino-ir" and b["models"][1]["size_kind"] == "xml+bin"
    assert b["models"][1]["name"] == out.name  # its own folder's name, not an x86 one's
    # the Detector runs it too: eval --model gets its mAP the same way
    from picosparse.deploy.detector import Detector
    from picosparse.deploy import infer_cfg
    det = Detector(out)
    assert det.kind == "openvino-ir"
    det.predict(infer_cfg.random_image(160))
    assert all(m["latency_ms"]["1"]["median"] > 0 for m in b["models"])


REAL_WEIGHTS = REAL / "picodet_s_320_coco_bnfolded.pdparams"
COCO128 = REAL / "coco128_train"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_WEIGHTS.is_file() or not COCO128.is_dir(),
                    reason="../shared/real (real weights and COCO images) absent")
def test_real_picodet_s_85_int8_files(tmp_path):
    """PicoDet-S 320 (real COCO weights) pruned to 85%: the four .nb files (dense / sparse x
    FP32 / INT8) against the sizes measured by hand on this stack (STACK.md: 4.36 / 2.14 MB
    FP32; INT8 there also had depthwise convs INT8, here FP32: 1.88 / 1.77 MB measured), every
    pruned 1x1 conv an INT8 sparse kernel, and the INT8 dense model's mAP close to FP32's."""
    from picosparse.config import load_detector
    from picosparse.steps.evaluate import evaluate_model
    from picosparse.steps.export import export
    from picosparse.steps.lite import OptParams, optimize
    from picosparse.steps.prune import oneshot
    from picosparse.steps.quant import QuantParams, quantize
    ov = [f"{k}.{v}" for k in ("TrainDataset", "EvalDataset") for v in (
        f"dataset_dir={COCO128}", "image_dir=train2017",
        "anno_path=annotations/instances_train2017.json")]
    cfg = load_detector(ROOT / "configs/picodet/picodet_s_320_coco.yml", overrides=ov)
    s85 = oneshot(load_detector(ROOT / "configs/picodet/picodet_s_320_coco.yml", overrides=ov,
                                sparsity=0.85), REAL_WEIGHTS, tmp_path / "s85.pdparams")
    nbs = {}
    for name, w in (("dense", REAL_WEIGHTS), ("sparse", s85["weights"])):
        fp32 = export(cfg, w, tmp_path / name)["model_dir"]
        int8 = quantize(cfg, fp32, params=QuantParams(calib_images=16))
        assert int8["zeros"]["int8_weights"] == 98  # every conv2d; depthwise stay FP32
        for prec, d in (("fp32", fp32), ("int8", int8["model_dir"])):
            nbs[name, prec] = optimize(d, tmp_path / f"{name}_{prec}.nb",
                                       OptParams(sparse=name == "sparse"))
    mb = {k: r["size_bytes"] / 1e6 for k, r in nbs.items()}
    assert mb["dense", "fp32"] == pytest.approx(4.36, rel=0.05)
    assert mb["sparse", "fp32"] == pytest.approx(2.14, rel=0.06)
    assert mb["sparse", "int8"] < mb["dense", "int8"] < mb["sparse", "fp32"]
    assert mb["dense", "int8"] < 0.45 * mb["dense", "fp32"]
    pruned = len(s85["layers"])  # 1x1 convs the recipe prunes (head outputs, SE convs kept)
    assert nbs["sparse", "int8"]["conv_precisions"]["sparse_conv2d"] == {"int8": pruned}
    assert nbs["sparse", "fp32"]["conv_precisions"]["sparse_conv2d"] == {"fp32": pruned}
    assert nbs["dense", "int8"]["conv_precisions"]["conv2d"] == {"int8": 98}
    # post-training INT8 keeps the real detector's accuracy (FP32: 0.387 on these images)
    fp32_map = evaluate_model(cfg, tmp_path / "dense")["mAP"]
    int8_map = evaluate_model(cfg, tmp_path / "dense" / "int8")["mAP"]
    assert fp32_map == pytest.approx(0.387, abs=0.005) and fp32_map - int8_map < 0.02


def test_export_lite_int8_writes_the_verified_int8_nb(tiny_data, tmp_path):
    out = tmp_path / "inf"
    args = ["export", "-c", str(h.DEMO_CFG), "--weights", str(h.weights("sparse")), "--out",
            str(out), "--lite"]
    one_line_error(run(*args, "--int8", "--calib-images", "0"),
                   "--calib-images 0: must be >= 1")
    assert not out.exists()  # refused before exporting
    r = run(*args, "--int8", "--calib-images", "2", *data_overrides(tiny_data))
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.output.count("(INT8 kernels verified)") == 1
    assert (out / "int8" / "model.nb").stat().st_size < (out / "model.nb").stat().st_size
    fp32, int8 = nbfile.inspect(out / "model.nb"), nbfile.inspect(out / "int8" / "model.nb")
    assert fp32["op_precisions"]["sparse_conv2d"] == {"fp32": 97}
    assert int8["op_precisions"]["sparse_conv2d"] == {"int8": 97}
    assert json.loads((out / "int8" / "quant.json").read_text())["calib_images"] == 2


@pytest.mark.slow
def test_pipeline_quant_opt_eval_report(tmp_path):
    """The quant kind wired end to end: export -> quant -> opt (INT8 verified) -> eval of the
    INT8 folder -> report row."""
    pipe = tmp_path / "p.yml"
    pipe.write_text(yaml.safe_dump({"name": "q", "steps": {
        "data": {"kind": "data", "num_train": 8, "num_val": 4, "size": 96},
        "export": {"kind": "export", "config": str(h.DEMO_CFG),
                   "weights": str(h.weights("sparse")), "input_size": 96},
        "quant": {"kind": "quant", "config": str(h.DEMO_CFG), "calib_images": 2,
                  "overrides": ["TrainDataset.dataset_dir=${steps.data.out}"],
                  "model_dir": "${steps.export.model_dir}"},
        "opt": {"kind": "opt", "model_dir": "${steps.quant.model_dir}", "sparse": True},
        "eval": {"kind": "eval", "config": str(h.DEMO_CFG),
                 "overrides": ["EvalDataset.dataset_dir=${steps.data.out}"],
                 "model": "${steps.quant.model_dir}"},
        "report": {"kind": "report", "variants": {"sparse_int8": {
            "eval": "${steps.eval}", "quant": "${steps.quant}", "opt": "${steps.opt}"}}}}}))
    r = run("run", str(pipe), "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, (r.output, r.exception)
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    row = rep["variants"][0]
    assert row["precision"] == "int8" and row["quantization"] == "PTQ hist, 2 images"
    assert row["sparse_conv2d"] == 97 and row["sparse_conv2d_precision"] == "int8"
    assert row["sparsity"] >= h.SPARSITY - 1e-3 and row["mAP"] is not None
