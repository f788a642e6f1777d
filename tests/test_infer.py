"""`picosparse infer`, `picosparse eval --model` and the pipeline's eval step on a model
folder, with the demo PicoDet (80% sparse random-init weights, calibrated BN) exported at
160 px with NMS, without NMS, and as an x86-sparse export (tests/infer_helpers.py)."""

import json
import re
import shutil

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import deploy_helpers as h
import infer_helpers as ih
from picosparse.cli import cli
from picosparse.deploy import Detector
from picosparse.errors import ConfigError

from conftest import DEMO_CFG, ROOT


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def one_error(r):
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.fixture(scope="module")
def ex():
    return ih.exports(160)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two PNGs the weights respond to (distinct scores) and a JPEG."""
    d = tmp_path_factory.mktemp("photos")
    for s in (100, 101):
        cv2.imwrite(str(d / f"noise{s}.png"), ih.image(s)[:, :, ::-1])
    cv2.imwrite(str(d / "q.jpg"), ih.image(102)[:, :, ::-1])
    (d / "notes.txt").write_text("not an image: skipped by suffix")
    return d


def test_infer_folder_draws_boxes_and_writes_json(ex, photos, tmp_path):
    out, js = tmp_path / "shown", tmp_path / "det.json"
    r = run("infer", "--model", ex["x86"], "--image", photos, "--out", out, "--json", js,
            "--threshold", "0.2")
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert (res["kind"], res["runtime"], res["threshold"]) == ("x86-sparse", "x86-sparse", 0.2)
    assert [p.name for p in sorted(out.iterdir())] == ["noise100.png", "noise101.png", "q.jpg"]
    det = Detector(ex["x86"])
    for im in res["images"]:
        src = photos / im["image"].split("/")[-1]
        want = det.predict(src, threshold=0.2).to_list()
        assert want and im["detections"] == want
        assert (im["width"], im["height"]) == (160, 160)
        drawn = cv2.imread(im["output"])
        orig = cv2.imread(str(src))
        assert drawn.shape == orig.shape
        # the best box is drawn last, in its class colour, where the JSON says it is
        from picosparse.deploy.draw import colour
        best = want[0]
        x1, y1, x2, y2 = (int(round(min(max(v, 0), 159))) for v in best["box"])
        edge = drawn[y2, x1 + 2:x2 - 1] if y2 < 159 else drawn[y1 + 2:y2 - 1, x1]
        assert len(edge) > 5
        if im["output"].endswith(".png"):  # JPEG's compression smears 1-pixel lines
            assert (np.abs(edge.astype(int) - colour(best["class_id"])).max(axis=1) <= 40).all()
        assert (drawn != orig).any(axis=2).mean() > 0.02
    # the table names every image and the labels of what was found
    for name in ("noise100.png", "noise101.png", "q.jpg", "score >= 0.2"):
        assert name in r.output
    first = res["images"][0]["detections"][0]
    assert f"{first['label']}" in r.output and f"{first['score']:.3f}" in r.output


def test_infer_json_stdout_and_threshold_one_draws_nothing(ex, photos, tmp_path):
    img = photos / "noise100.png"
    r = run("infer", "--model", ex["nms"], "--image", img, "--json", "-", "--threshold", "1",
            "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)  # nothing but JSON on stdout
    assert res["runtime"] == "paddle" and res["images"][0]["detections"] == []
    assert (cv2.imread(str(tmp_path / "o" / "noise100.png")) == cv2.imread(str(img))).all()
    # default threshold: the model's draw_threshold (0.5)
    r = run("infer", "--model", ex["raw"], "--image", img, "--json", "-")
    res = json.loads(r.output)
    assert res["threshold"] == 0.5 and res["runtime"] == "openvino"
    assert all(d["score"] >= 0.5 for d in res["images"][0]["detections"])


def test_infer_errors(ex, photos, tmp_path):
    img = photos / "noise100.png"
    assert one_error(run("infer", "--model", tmp_path / "none", "--image", img)) == \
        f"Error: --model {tmp_path / 'none'}: folder does not exist"
    assert one_error(run("infer", "--model", ex["raw"], "--image", tmp_path / "x.jpg")) == \
        f"Error: --image {tmp_path / 'x.jpg'}: file does not exist"
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    assert one_error(run("infer", "--model", ex["raw"], "--image", tmp_path / "bad.jpg")) == \
        f"Error: --image {tmp_path / 'bad.jpg'}: not a readable image file"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_error(run("infer", "--model", ex["raw"], "--image", empty)).startswith(
        f"Error: --image {empty}: no images in this folder (.jpg, .jpeg, .png")
    assert one_error(run("infer", "--model", ex["raw"], "--image", photos, "--out", photos)) \
        == (f"Error: --out {photos}: is the folder of the input images; the drawn copies "
            "would replace them (pick another folder)")
    assert one_error(run("infer", "--model", ex["raw"], "--image", img, "--threshold", "1.5")) \
        == "Error: --threshold 1.5: must be in [0, 1]"
    assert one_error(run("infer", "--model", ex["x86"], "--image", img, "--runtime", "paddle")) \
        == (f"Error: --model {ex['x86']}: an x86-sparse export runs on OpenVINO only; use "
            "--runtime openvino or auto")
    # an unreadable image in a folder fails before anything is written
    mixed = tmp_path / "mixed"
    shutil.copytree(photos, mixed)
    (mixed / "zz.png").write_bytes(b"broken")
    r = run("infer", "--model", ex["raw"], "--image", mixed, "--out", tmp_path / "o2")
    assert one_error(r) == f"Error: --image {mixed / 'zz.png'}: not a readable image file"
    assert not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- eval --model

@pytest.fixture(scope="module")
def pseudo_coco(ex, tmp_path_factory):
    """A COCO val set whose ground truth is what the exported model (Paddle's own NMS) finds
    with score >= 0.3 on the images its weights respond to: random weights score ~0 on real
    annotations, but against these a model scores high, and any shift, scale or label error
    in a deployed path shows in its mAP."""
    root = tmp_path_factory.mktemp("pseudo")
    (root / "val").mkdir()
    det = Detector(ex["nms"])
    images, anns = [], []
    for i, s in enumerate((100, 101, 102, 103)):
        rgb = ih.image(s)
        name = f"{s}.png"
        cv2.imwrite(str(root / "val" / name), rgb[:, :, ::-1])
        images.append({"id": i + 1, "file_name": name, "width": 160, "height": 160})
        for d in det.predict(root / "val" / name, threshold=0.3).to_list():
            x1, y1, x2, y2 = np.clip(d["box"], 0, 160)
            if x2 - x1 > 2 and y2 - y1 > 2:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "iscrowd": 0,
                             "category_id": d["class_id"] + 1,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    cats = [{"id": c + 1, "name": f"c{c}"} for c in range(4)]
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": cats}))
    assert len(anns) >= 12
    return ["-o", f"EvalDataset.dataset_dir={root}", "-o", "EvalDataset.image_dir=val",
            "-o", "EvalDataset.anno_path=val.json", "-o", "EvalReader.batch_size=2"]


def test_eval_model_equals_eval_weights(ex, pseudo_coco, tmp_path):
    r = run("eval", "-c", DEMO_CFG, "--weights", h.weights("sparse"), *pseudo_coco,
            "--json", "-")
    assert r.exit_code == 0, r.output
    want = json.loads(r.output)
    assert want["mAP"] > 0.5 and want["images"] == 4  # the comparison below means something
    for name in ("nms", "raw", "x86"):
        r = run("eval", "-c", DEMO_CFG, "--model", ex[name], *pseudo_coco,
                "--json", tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        got = json.loads((tmp_path / f"{name}.json").read_text())
        assert got["runtime"] == {"nms": "paddle", "raw": "openvino", "x86": "x86-sparse"}[name]
        for k in ("mAP", "mAP50", "mAP75"):
            assert abs(got[k] - want[k]) <= 0.002, (name, k, got[k], want[k])
        assert got["images"] == 4 and got["input_size"] == 160
        assert got["sparsity"]["overall"] == pytest.approx(h.SPARSITY, abs=0.01)
        assert len(got["sparsity"]["layers"]) == 97
        assert "mAP" in r.output  # the table still prints when --json goes to a file


def test_eval_model_notes_another_input_size(pseudo_coco, tmp_path):
    small = ih.exports(96)["raw"]
    r = CliRunner().invoke(
        cli, ["eval", "-c", str(DEMO_CFG), "--model", str(small), *pseudo_coco, "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["input_size"] == 96
    assert "note: the model runs at 96x96 (its infer_cfg.yml), EvalReader resizes to " \
           "160x160" in r.stderr


def test_eval_argument_errors(ex, pseudo_coco, tmp_path):
    assert one_error(run("eval", "-c", DEMO_CFG, *pseudo_coco)) == (
        "Error: --weights or --model: give one of the two (.pdparams weights, or an exported "
        "model folder)")
    assert one_error(run("eval", "-c", DEMO_CFG, "--weights", h.weights("sparse"),
                         "--model", ex["raw"], *pseudo_coco)).startswith(
        "Error: --weights or --model: give one of the two")
    assert one_error(run("eval", "-c", DEMO_CFG, "--model", tmp_path, *pseudo_coco)) == (
        f"Error: --model {tmp_path}: no model.pdmodel + model.pdiparams or model.xml (not an "
        "exported model; make one with `picosparse export`)")
    # a model for other classes than the eval set's
    other = tmp_path / "other"
    shutil.copytree(ex["raw"], other, ignore=shutil.ignore_patterns("x86*"))
    cfg = yaml.safe_load((other / "infer_cfg.yml").read_text())
    cfg["label_list"] = ["a", "b"]
    (other / "infer_cfg.yml").write_text(yaml.safe_dump(cfg))
    line = one_error(run("eval", "-c", DEMO_CFG, "--model", other, *pseudo_coco))
    assert re.fullmatch(rf"Error: --model {re.escape(str(other))}: 2 classes, but EvalDataset "
                        r".*val\.json has 4 categories", line)


# ---------------------------------------------------------------- pipeline

def _pipeline(tmp_path, eval_step, dataset):
    doc = {"name": "deployed", "steps": {
        "exp": {"kind": "export", "config": str(DEMO_CFG), "weights": str(h.weights("sparse")),
                "input_size": 160, "postprocess": False, "overrides": dataset},
        "ev": {"kind": "eval", "config": str(DEMO_CFG), "overrides": dataset, **eval_step}}}
    f = tmp_path / "p.yml"
    f.write_text(yaml.safe_dump(doc))
    return f


def _dataset(pseudo_coco):
    return [v for k, v in zip(pseudo_coco[::2], pseudo_coco[1::2])]


def test_pipeline_eval_step_validates_model_or_weights(pseudo_coco, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from picosparse.pipeline import load_pipeline
    ds = _dataset(pseudo_coco)
    p = load_pipeline(_pipeline(tmp_path, {"model": "${steps.exp.model_dir}"}, ds))
    assert p.steps["ev"].deps == ["exp"] and list(p.steps) == ["exp", "ev"]
    assert p.steps["ev"].params["weights"] is None
    with pytest.raises(ConfigError, match=r"p\.yml: steps\.ev: give exactly one of weights or "
                                          r"model \(got weights and model\)$"):
        load_pipeline(_pipeline(tmp_path, {"model": "${steps.exp.model_dir}",
                                           "weights": str(h.weights("sparse"))}, ds))
    with pytest.raises(ConfigError, match=r"steps\.ev: give exactly one of weights or model$"):
        load_pipeline(_pipeline(tmp_path, {}, ds))
    with pytest.raises(ConfigError, match=r"steps\.ev\.model: \$\{steps\.exp\.input_size\} is "
                                          r"an integer, expected a model path \(DIR or DIR@bf16\)"):
        load_pipeline(_pipeline(tmp_path, {"model": "${steps.exp.input_size}"}, ds))
    r = run("run", _pipeline(tmp_path, {"model": "${steps.exp.model_dir}/x86_sparse"}, ds),
            "--out", tmp_path / "run", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "ev (eval): run - after exp" in r.output
    assert "model: ${steps.exp.model_dir}/x86_sparse" in r.output


def test_pipeline_eval_step_scores_the_exported_files(pseudo_coco, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ds = _dataset(pseudo_coco)
    f = _pipeline(tmp_path, {"model": "${steps.exp.model_dir}"}, ds)
    r = run("run", f, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "ev" / "metrics.json").read_text())
    assert m["model"] == str(tmp_path / "run" / "exp") and m["runtime"] == "openvino"
    direct = json.loads(run("eval", "-c", DEMO_CFG, "--model", tmp_path / "run" / "exp",
                            *pseudo_coco, "--json", "-").output)
    assert m["mAP"] == direct["mAP"] > 0.5
