"""Validate a COCO detection dataset before a training run trips over it.

Unusable input (no annotation file, not JSON, no image folder, not COCO-shaped) raises
DataError (exit 2). Everything else is collected: `errors` make the dataset wrong (exit 1),
`warnings` are legal but worth knowing (PaddleDetection drops images without boxes unless
`allow_empty`). Each kind is counted in full; only its first MAX_PER_KIND details are listed.
"""

import json
import math
from collections import Counter
from pathlib import Path

from PIL import Image, ImageFile

from picosparse import progress
from picosparse.errors import DataError

MAX_PER_KIND = 10
BOX_TOLERANCE = 0.5  # pixels a box may stick out of its image (float rounding in tools)


class _Findings:
    """Findings by kind: every one counted, the first MAX_PER_KIND kept with their detail."""

    def __init__(self):
        self.by_kind = {}
        self.counts = Counter()

    def add(self, kind, detail):
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_PER_KIND:
            self.by_kind.setdefault(kind, []).append({"kind": kind, "detail": detail})

    @property
    def items(self):
        """Kept findings grouped by kind, kinds in the order first seen."""
        return [it for group in self.by_kind.values() for it in group]


def check_coco(ann, images, decode=True):
    """Check annotation file `ann` against image folder `images`; return a report dict.

    decode=False reads only image headers (fast on big datasets, misses truncated files).
    """
    ann, images = Path(ann), Path(images)
    data = load_coco(ann)
    if not images.is_dir():
        raise DataError(f"{images}: image folder does not exist")
    errors, warnings = _Findings(), _Findings()

    cats = _categories(data["categories"], errors)
    imgs = _images(data["images"], errors, warnings)
    per_image, per_cat = _annotations(data["annotations"], imgs, cats, errors)
    _image_files(images, imgs, errors, decode)

    for key in ("images", "annotations", "categories"):
        if not data[key]:
            errors.add(f"no_{key}", f"{ann}: the '{key}' list is empty")
    without = [i for i in imgs if not per_image.get(i)]
    if without and data["annotations"]:
        warnings.add("images_without_annotations",
                     f"{len(without)} image(s) have no boxes (e.g. id {without[0]}); "
                     "PaddleDetection skips them unless allow_empty")
    for cid, name in cats.items():
        if not per_cat.get(cid) and data["annotations"]:
            warnings.add("category_without_annotations", f"category {cid} '{name}' has no boxes")

    return {
        "ok": not errors.counts,
        "ann": str(ann),
        "images_dir": str(images),
        "counts": {
            "images": len(data["images"]),
            "annotations": len(data["annotations"]),
            "categories": len(data["categories"]),
            # boxes that passed every check, by category name
            "per_category": {_cat_label(cid, cats): per_cat.get(cid, 0) for cid in cats},
            "images_without_annotations": len(without),
        },
        "errors": errors.items,
        "error_counts": dict(errors.counts),
        "warnings": warnings.items,
        "warning_counts": dict(warnings.counts),
    }


def load_coco(ann):
    """Parse `ann`; DataError (one line naming the file) when it cannot be a COCO dataset."""
    ann = Path(ann)
    if not ann.is_file():
        raise DataError(f"{ann}: annotation file does not exist")
    try:
        data = json.loads(ann.read_bytes())
    except UnicodeDecodeError:
        raise DataError(f"{ann}: not a JSON text file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{ann}: not valid JSON (line {e.lineno}, column {e.colno}): "
                        f"{e.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{ann}: no '{key}' key; not a COCO detection dataset")
        if not isinstance(data[key], list):
            raise DataError(f"{ann}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_whole(v):
    """An integer, or a float holding one (some tools write 640.0)."""
    return _is_int(v) or (isinstance(v, float) and v.is_integer())


def _lookup(table, key):
    # ids from the JSON may be lists or dicts (unhashable): those are simply unknown
    return table.get(key) if _is_int(key) else None


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cat_label(cid, cats):
    names = Counter(cats.values())
    name = cats[cid]
    return name if names[name] == 1 else f"{name} (id {cid})"


def _categories(entries, errors):
    cats = {}
    for n, c in enumerate(entries):
        if not (isinstance(c, dict) and _is_int(c.get("id"))
                and isinstance(c.get("name"), str)):
            errors.add("malformed_category", f"categories[{n}] needs an integer 'id' and a "
                       f"string 'name': {_short(c)}")
        elif c["id"] in cats:
            errors.add("duplicate_category_id", f"category id {c['id']} appears more than once")
        else:
            cats[c["id"]] = c["name"]
    return cats


def _images(entries, errors, warnings):
    """id -> entry for the well-formed, first-seen images."""
    imgs, names = {}, {}
    for n, im in enumerate(entries):
        if not (isinstance(im, dict) and _is_int(im.get("id"))
                and isinstance(im.get("file_name"), str) and im["file_name"]
                and _is_whole(im.get("width")) and _is_whole(im.get("height"))
                and im["width"] > 0 and im["height"] > 0):
            errors.add("malformed_image", f"images[{n}] needs an integer 'id', a 'file_name' "
                       f"and positive integer 'width'/'height': {_short(im)}")
        elif im["id"] in imgs:
            errors.add("duplicate_image_id", f"image id {im['id']} appears more than once")
        else:
            imgs[im["id"]] = im
            if im["file_name"] in names:
                warnings.add("duplicate_file_name", f"'{im['file_name']}' is used by image ids "
                             f"{names[im['file_name']]} and {im['id']}")
            names.setdefault(im["file_name"], im["id"])
    return imgs


def _annotations(entries, imgs, cats, errors):
    """Check every annotation; return (boxes per image id, boxes per category id)."""
    seen = set()
    per_image, per_cat = Counter(), Counter()
    for n, a in enumerate(entries):
        if not isinstance(a, dict) or not _is_int(a.get("id")):
            errors.add("malformed_annotation", f"annotations[{n}] needs an integer 'id': "
                       f"{_short(a)}")
            continue
        aid = a["id"]
        if aid in seen:
            errors.add("duplicate_annotation_id", f"annotation id {aid} appears more than once")
            continue
        seen.add(aid)
        image = _lookup(imgs, a.get("image_id"))
        if image is None:
            errors.add("unknown_image", f"annotation {aid}: image_id {_short(a.get('image_id'))} "
                       "is not in 'images'")
        known_cat = _lookup(cats, a.get("category_id")) is not None
        if not known_cat:
            errors.add("unknown_category", f"annotation {aid}: category_id "
                       f"{_short(a.get('category_id'))} is not in 'categories'")
        if not _box_ok(a, aid, image, errors):
            continue
        if image is not None and known_cat:
            per_image[image["id"]] += 1
            per_cat[a["category_id"]] += 1
    return per_image, per_cat


def _box_ok(a, aid, image, errors):
    box = a.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) for v in box)):
        errors.add("malformed_bbox", f"annotation {aid}: bbox must be 4 numbers [x, y, w, h], "
                   f"got {_short(box)}")
        return False
    x, y, w, h = box
    if w <= 0 or h <= 0:
        errors.add("empty_bbox", f"annotation {aid}: bbox {box} has zero or negative area")
        return False
    if image is not None:
        W, H = image["width"], image["height"]
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            errors.add("bbox_outside_image", f"annotation {aid}: bbox {box} is outside image "
                       f"{image['id']} ({W}x{H})")
            return False
    return True


def _image_files(root, imgs, errors, decode):
    with progress.Progress(len(imgs), "check images", every=max(500, len(imgs) // 5)) as bar:
        for im in imgs.values():
            _image_file(root / im["file_name"], im, errors, decode)
            bar.update(1)


def _image_file(path, im, errors, decode):
    if not path.is_file():
        errors.add("missing_image", f"{path}: not found (image id {im['id']})")
        return
    # ppdet's trainer sets PIL's process-wide LOAD_TRUNCATED_IMAGES on import, which would
    # let truncated files pass; the check must not depend on what was imported before it
    strict, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(path) as f:
            size = f.size
            if decode:
                f.load()  # catches truncated/corrupt data that the header hides
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        errors.add("unreadable_image", f"{path}: cannot be read ({_one_line(e)})")
        return
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = strict
    if size != (im["width"], im["height"]):
        errors.add("size_mismatch", f"{path}: is {size[0]}x{size[1]}, the JSON says "
                   f"{im['width']}x{im['height']} (image id {im['id']})")


def _short(obj, n=80):
    s = json.dumps(obj, default=str)
    return s if len(s) <= n else s[:n - 3] + "..."


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__
