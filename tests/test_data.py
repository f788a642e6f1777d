"""`picosparse data synth` / `data check`: files produced, determinism, atomicity, every check."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from picosparse.cli import cli
from picosparse.data import synth
from picosparse.data.check import MAX_PER_KIND, check_coco
from picosparse.data.synth import MARKER, DataParams, synthesize
from picosparse.errors import DataError

SMALL = dict(num_train=6, num_val=4, size=96)


def run(*args):
    return CliRunner().invoke(cli, ["-q", *args])


def files(root):
    """relative path -> bytes of every file under root."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "shapes"
    synthesize(out, DataParams(seed=3, **SMALL))
    return out


@pytest.fixture
def copy(dataset, tmp_path):
    """A private copy of the small dataset to corrupt."""
    dst = tmp_path / "shapes"
    shutil.copytree(dataset, dst)
    return dst


def load(path):
    return json.loads(Path(path).read_text())


def save(path, data):
    Path(path).write_text(json.dumps(data))


# ---- synth ------------------------------------------------------------------------------

def test_cli_synth_then_check_round_trip(tmp_path):
    out = tmp_path / "shapes"
    r = run("data", "synth", "--out", str(out), "--num-train", "8", "--num-val", "3",
            "--size", "128", "--seed", "5")
    assert r.exit_code == 0, r.output
    assert "8 images" in r.stdout and "3 images" in r.stdout
    assert len(list((out / "train").glob("*.jpg"))) == 8
    assert len(list((out / "val").glob("*.jpg"))) == 3
    for split in ("train", "val"):
        r = run("data", "check", "--ann", str(out / f"{split}.json"),
                "--images", str(out / split))
        assert r.exit_code == 0, r.output
        assert "ok: no errors" in r.stdout


def test_summary_matches_files(tmp_path):
    s = synthesize(tmp_path / "d", DataParams(seed=1, **SMALL))
    train, val = load(s["train_json"]), load(s["val_json"])
    assert s["images"] == {"train": 6, "val": 4}
    assert s["annotations"] == {"train": len(train["annotations"]),
                                "val": len(val["annotations"])}
    assert [(c["id"], c["name"]) for c in s["categories"]] == [
        (1, "circle"), (2, "square"), (3, "triangle"), (4, "cross")]
    assert train["categories"] == s["categories"]
    assert json.loads((tmp_path / "d" / MARKER).read_text())["seed"] == 1


def test_images_and_boxes_are_consistent(dataset):
    coco = load(dataset / "train.json")
    per_image = {}
    for a in coco["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
        x, y, w, h = a["bbox"]
        assert a["category_id"] in (1, 2, 3, 4)
        assert x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
        # 12%..45% of the side, up to the rotation of squares and crosses
        assert 0.1 * 96 <= max(w, h) <= 0.6 * 96
        assert 0 < a["area"] <= w * h
    assert all(1 <= per_image.get(im["id"], 0) <= 5 for im in coco["images"])
    for im in coco["images"]:
        assert cv2.imread(str(dataset / "train" / im["file_name"])).shape == (96, 96, 3)


def test_boxes_are_the_tight_extent_of_separate_shapes(monkeypatch):
    # grey background, white shapes: each connected bright blob must be exactly one box
    monkeypatch.setattr(synth, "_background",
                        lambda rng, size: np.full((size, size, 3), 128, np.uint8))
    monkeypatch.setattr(synth, "_contrasting_color",
                        lambda rng, img, mask: np.array([255] * 3, np.uint8))
    for i in range(20):
        img, objects = synth.render_image(np.random.default_rng(i), 160)
        fg = (img.min(axis=2) > 200).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        blobs = sorted(tuple(int(v) for v in stats[k, :4]) for k in range(1, n))
        assert blobs == sorted(tuple(b) for _, b, _ in objects)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = files(synthesize(tmp_path / "a", DataParams(seed=7, **SMALL))["out"])
    b = files(synthesize(tmp_path / "b", DataParams(seed=7, **SMALL))["out"])
    c = files(synthesize(tmp_path / "c", DataParams(seed=8, **SMALL))["out"])
    assert a == b
    assert a.keys() == c.keys()
    assert a["train.json"] != c["train.json"]
    assert a["train/000000.jpg"] != c["train/000000.jpg"]


def test_val_split_does_not_depend_on_train_count(tmp_path):
    a = files(synthesize(tmp_path / "a", DataParams(seed=2, num_train=2, num_val=3,
                                                   size=64))["out"])
    b = files(synthesize(tmp_path / "b", DataParams(seed=2, num_train=5, num_val=3,
                                                   size=64))["out"])
    assert {k: v for k, v in a.items() if k.startswith("val")} == \
        {k: v for k, v in b.items() if k.startswith("val")}


def test_replaces_previous_synth_output(tmp_path):
    out = tmp_path / "d"
    synthesize(out, DataParams(seed=0, num_train=5, num_val=2, size=64))
    synthesize(out, DataParams(seed=0, num_train=2, num_val=2, size=64))
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.jpg", "000001.jpg"]


def test_empty_out_folder_is_fine(tmp_path):
    (tmp_path / "d").mkdir()
    synthesize(tmp_path / "d", DataParams(num_train=1, num_val=1, size=64))
    assert (tmp_path / "d" / "train.json").is_file()


def test_refuses_foreign_non_empty_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    r = run("data", "synth", "--out", str(out), "--num-train", "1", "--num-val", "1")
    assert r.exit_code == 2
    assert str(out) in r.stderr and "Traceback" not in r.output
    assert files(out) == {"thesis.tex": b"keep me"}


def test_refuses_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        synthesize(tmp_path / "f", DataParams(num_train=1, num_val=1, size=64))


@pytest.mark.parametrize("flag,value", [("--size", "32"), ("--num-train", "0"),
                                        ("--num-val", "-1"), ("--seed", "-3")])
def test_bad_arguments_one_line_exit_2(tmp_path, flag, value):
    r = run("data", "synth", "--out", str(tmp_path / "d"), flag, value)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and flag in lines[0]
    assert not (tmp_path / "d").exists()


def _fail_after(monkeypatch, n):
    real, calls = synth._write_jpeg, []

    def flaky(path, img):
        calls.append(path)
        if len(calls) > n:
            raise RuntimeError("disk full")
        real(path, img)
    monkeypatch.setattr(synth, "_write_jpeg", flaky)


def test_failure_mid_way_leaves_nothing(tmp_path, monkeypatch):
    _fail_after(monkeypatch, 5)
    with pytest.raises(RuntimeError):
        synthesize(tmp_path / "d", DataParams(**SMALL))
    assert list(tmp_path.iterdir()) == []  # neither OUT nor a temp folder


def test_failure_mid_way_keeps_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "d"
    synthesize(out, DataParams(seed=0, **SMALL))
    before = files(out)
    _fail_after(monkeypatch, 7)
    with pytest.raises(RuntimeError):
        synthesize(out, DataParams(seed=1, **SMALL))
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


# ---- check ------------------------------------------------------------------------------

def test_check_counts(dataset):
    rep = check_coco(dataset / "train.json", dataset / "train")
    coco = load(dataset / "train.json")
    assert rep["ok"] and rep["errors"] == [] and rep["warnings"] == []
    c = rep["counts"]
    assert (c["images"], c["annotations"], c["categories"]) == (6, len(coco["annotations"]), 4)
    assert sum(c["per_category"].values()) == c["annotations"]
    assert set(c["per_category"]) == {"circle", "square", "triangle", "cross"}
    assert c["images_without_annotations"] == 0


def _corrupt_json(fn):
    def apply(root):
        path = root / "train.json"
        data = load(path)
        fn(data)
        save(path, data)
    return apply


def _set(section, index, **kv):
    return _corrupt_json(lambda d: d[section][index].update(kv))


def _delete_image(root):
    (root / "train" / "000001.jpg").unlink()


def _garbage_image(root):
    (root / "train" / "000001.jpg").write_bytes(b"not a jpeg at all")


def _truncated_image(root):
    p = root / "train" / "000001.jpg"
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])  # header intact, scan data cut


def _other_size_image(root):
    cv2.imwrite(str(root / "train" / "000001.jpg"), np.zeros((50, 70, 3), np.uint8))


CORRUPTIONS = {
    "missing_image": _delete_image,
    "unreadable_image": _garbage_image,
    "size_mismatch": _other_size_image,
    "bbox_outside_image": _set("annotations", 0, bbox=[90, 10, 20, 20]),
    "empty_bbox": _set("annotations", 0, bbox=[10, 10, 0, 5]),
    "malformed_bbox": _set("annotations", 0, bbox=[10, 10, 5]),
    "unknown_category": _set("annotations", 0, category_id=99),
    "unknown_image": _set("annotations", 0, image_id=999),
    "duplicate_image_id": _set("images", 1, id=1),
    "duplicate_category_id": _set("categories", 1, id=1),
    "malformed_image": _corrupt_json(lambda d: d["images"][0].pop("width")),
    "malformed_category": _set("categories", 0, name=None),
    "duplicate_annotation_id": _corrupt_json(
        lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"])),
    "no_annotations": _corrupt_json(lambda d: d.update(annotations=[])),
    "no_images": _corrupt_json(lambda d: d.update(images=[], annotations=[])),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_check_detects(copy, kind):
    CORRUPTIONS[kind](copy)
    rep = check_coco(copy / "train.json", copy / "train")
    assert not rep["ok"]
    assert rep["error_counts"].get(kind, 0) >= 1, rep["error_counts"]
    assert any(e["kind"] == kind for e in rep["errors"])


def test_truncated_jpeg_needs_decoding_to_be_caught(copy):
    _truncated_image(copy)
    full = check_coco(copy / "train.json", copy / "train")
    header = check_coco(copy / "train.json", copy / "train", decode=False)
    assert full["error_counts"] == {"unreadable_image": 1}
    assert header["ok"]


def test_cli_check_exit_1_and_json(copy):
    _set("annotations", 0, category_id=99)(copy)
    r = run("data", "check", "--ann", str(copy / "train.json"), "--images",
            str(copy / "train"), "--json", "-")
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and rep["error_counts"] == {"unknown_category": 1}
    r = run("data", "check", "--ann", str(copy / "train.json"), "--images", str(copy / "train"))
    assert r.exit_code == 1
    assert "unknown_category" in r.stdout and "1 error(s)" in r.stdout


def test_errors_are_capped_per_kind_but_all_counted(copy):
    def many_bad(d):
        for a in d["annotations"]:
            a["bbox"] = [0, 0, -1, 4]
        extra = [dict(d["annotations"][0], id=1000 + i) for i in range(20)]
        d["annotations"].extend(extra)
    _corrupt_json(many_bad)(copy)
    rep = check_coco(copy / "train.json", copy / "train")
    n = len(load(copy / "train.json")["annotations"])
    assert rep["error_counts"]["empty_bbox"] == n > MAX_PER_KIND
    assert sum(e["kind"] == "empty_bbox" for e in rep["errors"]) == MAX_PER_KIND


def test_images_without_boxes_warn_but_pass(copy):
    _corrupt_json(lambda d: d.update(
        annotations=[a for a in d["annotations"] if a["image_id"] != 2]))(copy)
    rep = check_coco(copy / "train.json", copy / "train")
    assert rep["ok"]
    assert rep["counts"]["images_without_annotations"] == 1
    assert rep["warning_counts"]["images_without_annotations"] == 1


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    ("{\"images\": [", "not valid JSON (line 1"),
    ("[1, 2]", "must be a JSON object"),
    ("{\"images\": [], \"categories\": []}", "no 'annotations'"),
    ("{\"images\": {}, \"annotations\": [], \"categories\": []}", "'images' must be a list"),
])
def test_cli_check_unusable_annotation_file_exit_2(copy, content, message):
    ann = copy / "broken.json"
    if content is not None:
        ann.write_text(content)
    r = run("data", "check", "--ann", str(ann), "--images", str(copy / "train"))
    assert r.exit_code == 2
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]  # one line
    assert str(ann) in r.stderr and message in r.stderr
    assert "Traceback" not in r.output


def test_cli_check_missing_image_folder_exit_2(copy):
    r = run("data", "check", "--ann", str(copy / "train.json"), "--images", str(copy / "nope"))
    assert r.exit_code == 2
    assert "nope" in r.stderr and "image folder does not exist" in r.stderr


def test_odd_json_values_are_errors_not_crashes(copy):
    def odd(d):
        d["annotations"][0]["category_id"] = [1]  # unhashable
        d["annotations"][1]["image_id"] = {"id": 1}
        d["annotations"][2]["bbox"] = [1, 2, float("nan"), 4]
        d["images"][0]["width"] = 96.0  # a whole float is accepted
    _corrupt_json(odd)(copy)
    rep = check_coco(copy / "train.json", copy / "train")
    assert rep["error_counts"] == {"unknown_category": 1, "unknown_image": 1,
                                   "malformed_bbox": 1}


def test_outputs_get_umask_permissions_not_private(tmp_path):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700); results must not stay private."""
    import os
    from picosparse.atomic import write_text
    from picosparse.data.synth import DataParams, synthesize
    old = os.umask(0o022)
    try:
        synthesize(tmp_path / "ds", DataParams(num_train=1, num_val=1, size=64))
        write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_truncated_jpeg_caught_even_after_ppdet_import(copy):
    """ppdet flips PIL's global LOAD_TRUNCATED_IMAGES on import; the check must not care."""
    from PIL import ImageFile
    from picosparse import paddle_env
    paddle_env.stack()
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as ppdet.engine.trainer leaves it
    try:
        _truncated_image(copy)
        assert check_coco(copy / "train.json", copy / "train")["error_counts"] == {
            "unreadable_image": 1}
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for ppdet's readers
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
