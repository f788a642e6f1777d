"""picosparse.deploy.Detector and its numpy post-process: the same boxes from every artifact
(export with NMS on Paddle Inference, without NMS decoded by picosparse on OpenVINO and on
Paddle Inference, the x86-sparse export, an OpenVINO IR folder), against Paddle's own NMS
kernel, and without paddle in the process. Demo PicoDet, 80% sparse random-init weights with
calibrated BN (tests/deploy_helpers.py), at 160 px."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

import infer_helpers as ih
from picosparse.deploy import Detector, postprocess
from picosparse.errors import ConfigError, DataError

from conftest import ROOT


@pytest.fixture(scope="module")
def ex():
    return ih.exports(160)


def test_export_records_what_decoding_needs(ex):
    for d in (ex["raw"], ex["x86"]):
        cfg = yaml.safe_load((d / "infer_cfg.yml").read_text())
        ps = cfg["picosparse"]
        # the demo config's PicoHead: reg_max 7, cells centred (cell_offset 0.5)
        assert (ps["head"], ps["reg_max"], ps["cell_offset"]) == ("PicoHead", 7, 0.5)
        assert ps["postprocess"] is False
        assert cfg["NMS"]["keep_top_k"] == 100 and cfg["NMS"]["score_threshold"] == 0.025


def test_multiclass_nms_matches_paddles_kernel():
    """Clustered random boxes, 5 classes, ties in scores, and keep_top_k / nms_top_k small
    enough to cut: our rows equal multiclass_nms3's, in its order."""
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    from ppdet.modeling import ops
    rs = np.random.RandomState(3)
    centres = rs.uniform(20, 180, (12, 2))
    xy = centres[rs.randint(0, 12, 400)] + rs.normal(0, 4, (400, 2))
    wh = rs.uniform(8, 60, (400, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype("float32")
    scores = rs.uniform(0, 1, (5, 400)).astype("float32")
    scores[:, :20] = 0.5  # ties: kept in index order
    for kw in ({"score_threshold": 0.3, "nms_top_k": 1000, "keep_top_k": 100,
                "nms_threshold": 0.6},
               {"score_threshold": 0.05, "nms_top_k": 50, "keep_top_k": 30,
                "nms_threshold": 0.4},
               {"score_threshold": 0.2, "nms_top_k": -1, "keep_top_k": -1,
                "nms_threshold": 0.5, "normalized": False}):
        want, num, _ = ops.multiclass_nms(paddle.to_tensor(boxes[None]),
                                          paddle.to_tensor(scores[None]), **kw)
        want = want.numpy()[:int(num.numpy()[0])]
        got = postprocess.multiclass_nms(boxes, scores, **kw)
        assert len(want) > 20
        np.testing.assert_array_equal(got[:, 0], want[:, 0])
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], atol=1e-6)


def test_every_artifact_gives_the_same_detections(ex):
    img = ih.image(wide=2)
    ref = ih.nearest(Detector(ex["nms"])).predict(img)  # Paddle Inference + exported NMS
    assert ref.image_size == (160, 320)
    assert len(ref) >= 20 and len(set(ref.class_ids.tolist())) >= 3
    assert (np.diff(ref.scores) <= 0).all() and ref.scores[0] > 2 * ref.scores[-1]
    # boxes in original pixels: x spreads over the 320 px width, y stays within ~160
    assert ref.boxes[:, 2].max() > 200 and np.median(ref.boxes[:, 3]) < 160
    for model, runtime, kind in ((ex["raw"], "auto", "paddle"), (ex["raw"], "paddle", "paddle"),
                                 (ex["x86"], "auto", "x86-sparse"),
                                 (ex["x86"], "openvino", "x86-sparse")):
        det = ih.nearest(Detector(model, runtime=runtime))
        assert det.kind == kind
        assert det.runtime == {"auto": "openvino" if kind == "paddle" else kind,
                               "paddle": "paddle", "openvino": kind}[runtime]
        ih.assert_same_detections(det.predict(img), ref, box_tol=0.02, score_tol=1e-4)


def test_decoding_follows_the_cell_offset(ex):
    """The check above would see a wrong grid convention: half a cell moves every box."""
    img = ih.image(101)
    det = Detector(ex["raw"])
    right = det.predict(img)
    det.cell_offset = 0.0
    wrong = det.predict(img)
    shift = np.abs(wrong.boxes[:len(right)] - right.boxes[:len(wrong)]).max()
    assert shift > 3  # at least half of the smallest stride (8 px)


def test_batch_threshold_and_json(ex, tmp_path):
    det = Detector(ex["x86"], threads=2)
    imgs = [ih.image(s) for s in (102, 103)]
    path = tmp_path / "b.png"
    import cv2
    cv2.imwrite(str(path), imgs[1][:, :, ::-1])  # RGB -> BGR for OpenCV; lossless
    batch = det.predict([imgs[0], path], threshold=0.3)
    assert isinstance(batch, list) and len(batch) == 2
    for one, im in zip(batch, imgs):
        ih.assert_same_detections(one, det.predict(im).above(0.3), box_tol=0, score_tol=0)
        assert (one.scores >= 0.3).all()
    rows = batch[1].to_list()
    assert rows and set(rows[0]) == {"label", "class_id", "score", "box"}
    assert rows[0]["label"] == det.label_list[rows[0]["class_id"]]
    json.dumps(rows)  # plain Python types


def test_openvino_ir_folder(ex, tmp_path):
    """A plain OpenVINO IR folder (what an NNCF INT8 model is saved as) runs too."""
    import openvino as ov
    ir = tmp_path / "ir"
    ir.mkdir()
    ov.save_model(ov.Core().read_model(str(ex["raw"] / "model.pdmodel")), str(ir / "model.xml"),
                  compress_to_fp16=False)
    shutil.copy(ex["raw"] / "infer_cfg.yml", ir)
    det = Detector(ir)
    assert (det.kind, det.runtime) == ("openvino-ir", "openvino-ir")
    img = ih.image(100)
    ih.assert_same_detections(det.predict(img), Detector(ex["nms"]).predict(img),
                              box_tol=0.02, score_tol=1e-4)


def test_bf16_deployment_is_close_to_fp32(ex):
    """DIR@bf16 runs OpenVINO's own model at BF16 (FP32 where the CPU has none): every
    detection above 0.3 has one of the same class within 4 px and 0.1 score of FP32 dense
    (measured here on this random-weight 160 px model: up to 2.9 px and 0.08; BF16 keeps 8
    mantissa bits); an x86-sparse folder at @bf16 runs picosparse's BF16 kernels, as close
    (where the CPU has AVX512-BF16; FP32 elsewhere); a Paddle-run model refuses."""
    from picosparse.envcheck import cpu_features
    img = ih.image(100)
    f32 = Detector(ex["raw"])
    bf16 = Detector(f"{ex['raw']}@bf16")
    assert (bf16.precision, bf16.runtime, bf16.path) == ("bf16", "openvino", ex["raw"])
    feats = cpu_features()
    assert bf16._run.precision == ("bf16" if feats["avx512_bf16"] or feats["amx_bf16"]
                                   else "fp32")
    want, got = f32.predict(img), bf16.predict(img)
    assert ih.match(want, got, min_score=0.3, px=4.0, score_tol=0.1) >= 5
    from picosparse.x86.kernel import bf16_supported
    if bf16_supported():
        x86 = Detector(f"{ex['x86']}@bf16")
        assert (x86.kind, x86._run.precision) == ("x86-sparse", "bf16")
        x86_f32 = Detector(ex["x86"]).predict(img)
        assert ih.match(x86_f32, x86.predict(img), min_score=0.3, px=4.0, score_tol=0.1) >= 5
    else:  # FP32 where the CPU has no BF16, as OpenVINO's own models
        assert Detector(f"{ex['x86']}@bf16")._run.precision == "fp32"
    with pytest.raises(ConfigError, match=r"@bf16: only OpenVINO models and x86-sparse folders "
                                          r"run at another precision; this one runs on paddle"):
        Detector(f"{ex['nms']}@bf16")
    with pytest.raises(ConfigError, match=r"@fp8: unknown precision @fp8"):
        Detector(f"{ex['raw']}@fp8")


def test_importable_and_runs_without_paddle(ex):
    """Deploy code needs numpy, opencv and openvino only: with paddle and ppdet unimportable
    the Detector still runs the raw and x86-sparse exports and the boxes are the same."""
    want = Detector(ex["nms"]).predict(ih.image(101)).to_list()
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["paddle"] = None   # any `import paddle` raises ImportError
        sys.modules["ppdet"] = None
        from picosparse.deploy import Detector, infer_cfg
        img = infer_cfg.random_image(160, seed=101)
        out = [Detector(m).predict(img).to_list() for m in {[str(ex['raw']), str(ex['x86'])]!r}]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("paddle", "ppdet")
                        and sys.modules[m] is not None)
        print(json.dumps({{"out": out, "loaded": loaded}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["loaded"] == []
    for got in res["out"]:
        assert [d["label"] for d in got] == [d["label"] for d in want]
        assert np.allclose([d["box"] for d in got], [d["box"] for d in want], atol=0.02)


def test_errors(ex, tmp_path):
    with pytest.raises(DataError, match=r"^--model .*nope: folder does not exist$"):
        Detector(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no model.pdmodel \+ model.pdiparams or model.xml"):
        Detector(tmp_path)
    with pytest.raises(ConfigError, match="an x86-sparse export runs on OpenVINO only"):
        Detector(ex["x86"], runtime="paddle")
    with pytest.raises(ConfigError, match="--runtime lite: expected one of auto, paddle"):
        Detector(ex["raw"], runtime="lite")
    bare = tmp_path / "bare"
    shutil.copytree(ex["raw"], bare, ignore=shutil.ignore_patterns("infer_cfg.yml", "x86*"))
    with pytest.raises(DataError, match="no infer_cfg.yml beside the model"):
        Detector(bare)
    det = Detector(ex["raw"])
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"^--image .*bad.jpg: not a readable image file$"):
        det.predict(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match=r"expected RGB uint8 \[H, W, 3\], got float32"):
        det.predict(np.zeros((10, 10, 3), "float32"))
    # an export with NMS whose infer_cfg.yml claims otherwise: named, not a traceback
    wrong = tmp_path / "wrong"
    shutil.copytree(ex["nms"], wrong)
    cfg = yaml.safe_load((wrong / "infer_cfg.yml").read_text())
    cfg["picosparse"]["postprocess"] = False
    (wrong / "infer_cfg.yml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(Exception, match="not PicoDet's raw head outputs"):
        Detector(wrong, runtime="paddle").predict(ih.image())
