"""The Detector, `picosparse infer` and `eval --model` on the real COCO-trained PicoDet-S 320
and real photographs (../shared/real, see its README); every test skips without that folder.

The artifacts compared are all made from the SAME pruned weights (`picosparse prune
--sparsity 0.3`: one-shot pruning of these BN-folded weights much further loses the people;
enough for the x86-sparse export to replace 87 of the 97 1x1 convs at --sparse-threshold 0.3):
the export with NMS (Paddle Inference), the --no-postprocess export (OpenVINO, decoded by the
Detector) and its x86-sparse export."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import infer_helpers as ih
from picosparse.cli import cli
from picosparse.deploy import Detector

from conftest import ROOT

REAL = ROOT.parent / "shared" / "real"
WEIGHTS = REAL / "picodet_s_320_coco_bnfolded.pdparams"
COCO128 = REAL / "coco128_train"
PHOTOS = {"bus": REAL / "bus.jpg", "zidane": REAL / "zidane.jpg"}
S_CFG = ROOT / "configs" / "picodet" / "picodet_s_320_coco.yml"
SPARSITY = 0.3

pytestmark = [pytest.mark.skipif(
    not WEIGHTS.is_file() or not COCO128.is_dir() or not all(p.is_file() for p in PHOTOS.values()),
    reason="../shared/real (real weights, COCO images and photos) absent"), pytest.mark.slow]

# the 128 real images as the eval set: the export takes its label names from there too
EVAL_SET = ["-o", f"EvalDataset.dataset_dir={COCO128}", "-o", "EvalDataset.image_dir=train2017",
            "-o", "EvalDataset.anno_path=annotations/instances_train2017.json",
            "-o", "worker_num=0"]


def run(*args):
    r = CliRunner().invoke(cli, ["-q", *map(str, args)])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_infer")
    pruned = root / f"s{SPARSITY}.pdparams"
    run("export", "-c", S_CFG, "--weights", WEIGHTS, "--out", root / "dense", *EVAL_SET)
    run("prune", "-c", S_CFG, "--weights", WEIGHTS, "--sparsity", SPARSITY, "--out", pruned)
    run("export", "-c", S_CFG, "--weights", pruned, "--out", root / "nms", *EVAL_SET)
    run("export", "-c", S_CFG, "--weights", pruned, "--out", root / "raw", "--no-postprocess",
        "--x86-sparse", "--sparse-threshold", SPARSITY, *EVAL_SET)
    return {"dense": root / "dense", "nms": root / "nms", "raw": root / "raw",
            "x86": root / "raw" / "x86_sparse", "pruned": pruned}


def test_dense_export_finds_the_people_and_the_bus(art):
    det = Detector(art["dense"])
    assert det.runtime == "paddle" and det.label_list[0] == "person"
    bus = det.predict(PHOTOS["bus"], threshold=0.5)
    h, w = bus.image_size
    assert (h, w) == (1080, 810)
    assert bus.labels.count("person") >= 3 and bus.labels.count("bus") == 1
    b = bus.boxes[bus.labels.index("bus")]
    # the bus spans the photo's width and its middle band
    assert b[0] < 0.1 * w and b[2] > 0.9 * w and b[1] < 0.3 * h and b[3] > 0.6 * h
    people = bus.boxes[[n == "person" for n in bus.labels]]
    assert ((people[:, 3] - people[:, 1]) > 1.5 * (people[:, 2] - people[:, 0])).all()  # upright
    assert (people[:, 1] > 0.3 * h).all()  # standing in front of the bus, not on its roof
    zid = det.predict(PHOTOS["zidane"], threshold=0.5)
    assert zid.labels.count("person") >= 2


def test_three_artifacts_of_the_same_pruned_weights_agree(art):
    meta = json.loads((art["x86"] / "x86_sparse.json").read_text())
    assert meta["replaced"] >= 80  # most 1x1 convs run picosparse's sparse op
    ref, raw, x86 = Detector(art["nms"]), Detector(art["raw"]), Detector(art["x86"])
    assert (ref.runtime, raw.runtime, x86.runtime) == ("paddle", "openvino", "x86-sparse")
    for name, photo in PHOTOS.items():
        want = ref.predict(photo)
        assert want.above(0.3).labels.count("person") >= 2
        if name == "bus":
            assert "bus" in want.above(0.5).labels
        for det in (raw, x86):
            n = ih.match(want, det.predict(photo), min_score=0.05, px=1.0, score_tol=0.01)
            assert n >= 5, f"{name}: only {n} detections compared"


def test_infer_draws_the_photo_from_each_artifact(art, tmp_path):
    orig = cv2.imread(str(PHOTOS["bus"]))
    for kind in ("dense", "nms", "raw", "x86"):
        out, js = tmp_path / kind, tmp_path / f"{kind}.json"
        r = run("infer", "--model", art[kind], "--image", PHOTOS["bus"], "--out", out,
                "--json", js)
        res = json.loads(js.read_text())
        labels = [d["label"] for d in res["images"][0]["detections"]]
        assert "bus" in labels and labels.count("person") >= 2, (kind, labels)
        assert "bus" in r.output and "person" in r.output
        drawn = cv2.imread(str(out / "bus.jpg"))
        assert drawn.shape == orig.shape
        # boxes drawn: pixels changed around each box and its label, not elsewhere
        changed = (np.abs(drawn.astype(int) - orig).max(axis=2) > 60)
        assert changed.mean() > 0.005
        near = np.zeros_like(changed)
        for d in res["images"][0]["detections"]:
            x1, y1, x2, y2 = (int(round(v)) for v in d["box"])
            near[max(y1 - 50, 0):y2 + 6, max(x1 - 6, 0):max(x2, x1 + 260) + 6] = True
        assert changed[~near].mean() < 0.001


def test_eval_model_equals_eval_weights_on_real_images(art):
    def ev(*args):
        return json.loads(run("eval", "-c", S_CFG, *args, *EVAL_SET, "--json", "-").output)
    want = ev("--weights", art["pruned"])
    assert want["mAP"] > 0.15 and want["images"] == 128
    for kind in ("nms", "raw", "x86"):
        got = ev("--model", art[kind])
        for k in ("mAP", "mAP50", "mAP75"):
            assert abs(got[k] - want[k]) <= 0.002, (kind, k, got[k], want[k])
