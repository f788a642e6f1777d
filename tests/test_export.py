"""`picosparse export`: files, exact zeros kept, same outputs as dygraph, errors, CLI."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import deploy_helpers as h
from picosparse.cli import cli
from picosparse.errors import ConfigError, DataError


def run(*args):
    return CliRunner().invoke(cli, ["-q", *args])


def stack():
    from picosparse import paddle_env
    return paddle_env.stack()


def test_export_writes_model_and_infer_cfg():
    d = h.exported("sparse")
    assert sorted(p.name for p in d.iterdir()) == ["infer_cfg.yml", "model.pdiparams",
                                                   "model.pdmodel"]
    cfg = yaml.safe_load((d / "infer_cfg.yml").read_text())
    assert cfg["mode"] == "paddle" and cfg["arch"] == "PicoDet" and cfg["metric"] == "COCO"
    assert cfg["use_dynamic_shape"] is False and cfg["min_subgraph_size"] == 3
    pre = {p["type"]: p for p in cfg["Preprocess"]}
    assert pre["Resize"]["target_size"] == [160, 160] and pre["Resize"]["keep_ratio"] is False
    assert pre["NormalizeImage"]["mean"] == [0.485, 0.456, 0.406]
    assert pre["NormalizeImage"]["std"] == [0.229, 0.224, 0.225]
    assert "Permute" in pre
    # data/shapes/val.json is absent here: class ids
    assert cfg["label_list"] == ["0", "1", "2", "3"]
    assert cfg["NMS"]["keep_top_k"] == 100 and cfg["fpn_stride"] == [8, 16, 32, 64]
    assert cfg["picosparse"]["input_shapes"] == {"image": [1, 3, 160, 160],
                                                 "scale_factor": [1, 2]}
    assert cfg["picosparse"]["conv1x1_zero_fraction"] == pytest.approx(h.SPARSITY, abs=1e-3)


def test_labels_size_and_mask_buffers(tmp_path):
    """One export covers: label names from EvalDataset's annotations, a non-default input
    size, and weights still carrying the pruner's `*_mask` buffers (dropped)."""
    cats = [{"id": 3, "name": "circle"}, {"id": 1, "name": "square"},
            {"id": 2, "name": "triangle"}, {"id": 4, "name": "star"}]
    (tmp_path / "val.json").write_text(json.dumps({"images": [], "annotations": [],
                                                   "categories": cats}))
    paddle = stack().paddle
    state = paddle.load(str(h.weights("sparse")))
    state.update({k + "_mask": paddle.ones(v.shape) for k, v in list(state.items())
                  if h.is_1x1(v.shape)})
    w = tmp_path / "with_masks.pdparams"
    paddle.save(state, str(w))
    from picosparse.steps.export import ExportParams, export
    cfg = h.load_cfg(f"EvalDataset.dataset_dir={tmp_path}", "EvalDataset.anno_path=val.json")
    res = export(cfg, w, tmp_path / "inf", ExportParams(input_size=96))
    doc = yaml.safe_load(res["infer_cfg"].read_text())
    assert doc["label_list"] == ["square", "triangle", "circle", "star"]  # sorted by id
    assert res["input_size"] == 96 and res["inputs"]["image"] == [1, 3, 96, 96]
    assert [p for p in doc["Preprocess"] if p["type"] == "Resize"][0]["target_size"] == [96, 96]
    assert res["conv1x1_zero_fraction"] == pytest.approx(h.SPARSITY, abs=1e-3)


def test_exact_zeros_survive_export():
    paddle = stack().paddle
    src = {k: v.numpy() for k, v in paddle.load(str(h.weights("sparse"))).items()
           if h.is_1x1(v.shape)}
    layer = paddle.jit.load(str(h.exported("sparse") / "model"))
    got = {p.name: p.numpy() for p in layer.parameters() if h.is_1x1(p.shape)}
    assert len(got) == len(src) == 97
    # names differ between dygraph and the program: compare the per-layer zero counts
    src_zeros = sorted(int((a == 0).sum()) for a in src.values())
    got_zeros = sorted(int((a == 0).sum()) for a in got.values())
    assert got_zeros == src_zeros
    for a in got.values():
        assert (a == 0).mean() == pytest.approx(h.SPARSITY, abs=0.01)
    # and the values themselves: every exported 1x1 weight equals one source weight exactly
    src_keys = {a.tobytes() for a in src.values()}
    assert all(a.tobytes() in src_keys for a in got.values())


def _dygraph(cfg, weights, feed, postprocess):
    from picosparse import paddle_env, weights as weights_io
    paddle = stack().paddle
    model = paddle_env.build_model(cfg)
    weights_io.load_into(model, weights)
    model.eval()
    model.export_post_process = model.export_nms = postprocess
    with paddle.no_grad():
        return model({k: paddle.to_tensor(v) for k, v in feed.items()})


def _feed():
    from picosparse.deploy import infer_cfg
    # seed 100: one of the images the test weights' BatchNorm stats were set on
    return infer_cfg.preprocess(infer_cfg.random_image(160, seed=100), h.PREPROCESS, 160)


def test_paddle_inference_matches_dygraph_boxes_and_scores():
    from picosparse.deploy.runtimes import PaddleRunner
    feed = _feed()
    ref = _dygraph(h.load_cfg(), h.weights("sparse"), feed, True)
    ref_boxes = ref["bbox"].numpy()
    runner = PaddleRunner(h.exported("sparse"), 1)
    runner.feed(feed)
    runner.run()
    boxes, num = runner.outputs()
    assert int(num[0]) == int(ref["bbox_num"].numpy()[0]) == len(ref_boxes) > 10
    assert len(np.unique(ref_boxes[:, 1])) == len(ref_boxes)  # distinct scores: no tie games
    order = lambda b: b[np.lexsort((b[:, 1], b[:, 0]))]  # noqa: E731  by class, then score
    a, b = order(ref_boxes), order(boxes)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    np.testing.assert_allclose(a[:, 1], b[:, 1], atol=1e-4)  # scores
    np.testing.assert_allclose(a[:, 2:], b[:, 2:], atol=2e-2)  # pixels


def test_raw_head_outputs_match_without_postprocess():
    from picosparse.deploy.runtimes import PaddleRunner
    feed = _feed()
    cls_list, reg_list = _dygraph(h.load_cfg(), h.weights("sparse"), feed, False)["picodet"]
    ref = [t.numpy() for t in list(cls_list) + list(reg_list)]
    d = h.exported("sparse", postprocess=False)
    assert yaml.safe_load((d / "infer_cfg.yml").read_text())["picosparse"]["input_shapes"] == \
        {"image": [1, 3, 160, 160]}  # no NMS: scale_factor is not an input
    runner = PaddleRunner(d, 1)
    runner.feed(feed)
    runner.run()
    got = runner.outputs()
    assert [g.shape for g in got] == [r.shape for r in ref]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4)
    assert np.std(ref[0]) > 0.01  # scores actually vary across anchors


def test_input_size_must_be_multiple_of_32(tmp_path):
    from picosparse.errors import ParamError
    from picosparse.steps.export import ExportParams, export
    with pytest.raises(ParamError, match="^input_size 100: must be a positive multiple of 32"):
        ExportParams(input_size=100)
    assert not (tmp_path / "out").exists()
    cfg = h.load_cfg("TestReader.inputs_def.image_shape=[1,3,150,150]")
    with pytest.raises(ConfigError, match="input size 150"):
        export(cfg, h.weights("dense"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_missing_and_mismatched_weights(tmp_path):
    from picosparse.steps.export import export
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(DataError, match="bad.pdparams: not a readable .pdparams"):
        export(h.load_cfg(), bad, tmp_path / "out")
    with pytest.raises(DataError, match="nope.pdparams: file does not exist"):
        export(h.load_cfg(), tmp_path / "nope.pdparams", tmp_path / "out")
    # weights of the demo model against a 5-class config: shapes differ in the head
    with pytest.raises(DataError, match=r"do not match the config: .*head\.head_cls0"):
        export(h.load_cfg("num_classes=5"), h.weights("dense"), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pdparams"]


def _run_dir(tmp_path, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yml").write_text(h.load_cfg().dump())
    (run_dir / "model_final.pdparams").write_bytes(h.weights(kind).read_bytes())
    return run_dir


def test_cli_export_lite_with_just_a_run_dir(tmp_path):
    run_dir = _run_dir(tmp_path, "sparse")
    r = run("export", "--run", str(run_dir), "--lite")
    assert r.exit_code == 0, r.output
    inf = run_dir / "inference"
    assert {"model.pdmodel", "model.pdiparams", "infer_cfg.yml", "model.nb"} <= \
        {p.name for p in inf.iterdir()}
    assert "97 of 97 1x1 convs -> sparse_conv2d" in r.output
    from picosparse.deploy import nbfile
    assert nbfile.inspect(inf / "model.nb")["ops"]["sparse_conv2d"] == 97


@pytest.mark.slow


def test_cli_export_lite_dense_weights_makes_dense_nb(tmp_path):
    run_dir = _run_dir(tmp_path, "dense")
    r = run("export", "--run", str(run_dir), "--lite", "--out", str(tmp_path / "inf"))
    assert r.exit_code == 0, r.output
    assert "writing a dense .nb" in r.output and "dense, 97 1x1 convs" in r.output
    assert (tmp_path / "inf" / "model.nb").is_file()


def test_cli_export_errors(tmp_path):
    r = run("export")
    assert r.exit_code == 2 and r.output.startswith("Error: export: pass --run RUN")
    assert len(r.output.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    r = run("export", "--run", str(tmp_path / "empty"))
    assert r.exit_code == 2 and "no config.yml" in r.output
    r = run("export", "-c", str(h.DEMO_CFG), "--weights", str(h.weights("dense")),
            "--input-size", "33", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "--input-size 33: must be a positive multiple of 32" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()
