"""A generated COCO detection dataset of simple shapes: deterministic, learnable, fast.

Every image gets its own random stream derived from (seed, split, index), so the same seed
gives byte-identical files and train/val never share an image. Each shape is drawn through
its own mask; the box is the mask's exact pixel extent and shapes never touch each other, so
every box is the true tight extent of what is visible.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from picosparse import progress
from picosparse.atomic import atomic_dir
from picosparse.errors import DataError
from picosparse.params import at_least, between, check, param

MARKER = ".picosparse-synth.json"
FORMAT_VERSION = 1  # bump when the generator's output changes for the same seed
CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "cross", "supercategory": "shape"},
]
SPLITS = ("train", "val")
JPEG_QUALITY = 92
MIN_SIZE, MAX_SIZE = 64, 4096
OBJECT_COUNT_P = (0.1, 0.2, 0.25, 0.25, 0.2)  # P(1..5 objects): more boxes per step learn faster
SIDE_RANGE = (0.12, 0.45)  # object box side as a fraction of the image side
MAX_IOU = 0.2  # between any two boxes of one image
MIN_COLOR_DIST = 150.0  # RGB distance between an object and the background under it
BACKGROUND_P = (0.25, 0.25, 0.2, 0.15, 0.15)  # solid, gradient, noise, stripes, blobs
TEXTURE = 0.5  # textures keep this share of their contrast: distractors, not camouflage
PLACE_TRIES = 30
_SUB = 16  # cv2 fixed-point: polygons are drawn with 4 fractional bits


def _int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class DataParams:
    """`picosparse data synth` / the pipeline kind `data`."""

    seed: int = param(0, "int", check=at_least(0), help="Random seed (same seed, same bytes).")
    num_train: int = param(400, "int", check=at_least(1), help="Training images.")
    num_val: int = param(100, "int", check=at_least(1), help="Validation images.")
    size: int = param(192, "int", check=between(MIN_SIZE, MAX_SIZE), help="Image side in pixels.")

    def __post_init__(self):
        for name in ("seed", "num_train", "num_val", "size"):  # numpy integers too
            if _int(getattr(self, name)):
                object.__setattr__(self, name, int(getattr(self, name)))
        check(self)


def synthesize(out, params=DataParams()):
    """Write OUT/{train,val}.json and OUT/{train,val}/*.jpg; return a summary dict."""
    seed, num_train, num_val, size = params.seed, params.num_train, params.num_val, params.size
    out = Path(out)
    _check_replaceable(out)
    meta = {"generator": "picosparse data synth", "format_version": FORMAT_VERSION,
            "seed": seed, "num_train": num_train, "num_val": num_val, "size": size}
    counts = {"train": num_train, "val": num_val}
    n_anns = {}
    with atomic_dir(out) as tmp:
        for split_id, split in enumerate(SPLITS):
            coco = _write_split(tmp, split, split_id, counts[split], seed, size)
            n_anns[split] = len(coco["annotations"])
        # marks OUT as ours, so a later synth may replace it (and nothing else may)
        (tmp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {
        "out": str(out),
        "train_json": str(out / "train.json"),
        "val_json": str(out / "val.json"),
        "train_dir": str(out / "train"),
        "val_dir": str(out / "val"),
        "images": counts,
        "annotations": n_anns,
        "categories": [dict(c) for c in CATEGORIES],
    }


def _check_replaceable(out):
    """Only an empty folder or an earlier synth output may be replaced."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DataError(f"{out}: folder is not empty and is not a `picosparse data synth` "
                        f"output (no {MARKER}); choose another --out or empty it")



def _write_split(root, split, split_id, n, seed, size):
    img_dir = root / split
    img_dir.mkdir()
    images, anns = [], []
    # a few progress lines at most: this takes seconds
    with progress.Progress(n, f"synth {split}", every=max(100, n // 5)) as bar:
        for i in range(n):
            # one stream per image: counts of one split never change the other's images
            rng = np.random.default_rng([seed, split_id, i])
            img, objects = render_image(rng, size)
            name = f"{i:06d}.jpg"
            _write_jpeg(img_dir / name, img)
            image_id = i + 1
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for cat_id, bbox, area in objects:
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id,
                             "bbox": bbox, "area": area, "iscrowd": 0})
            bar.update(1)
    coco = {
        "info": {"description": "picosparse synthetic shapes", "version": str(FORMAT_VERSION),
                 "seed": seed, "split": split},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": CATEGORIES,
    }
    (root / f"{split}.json").write_text(json.dumps(coco, sort_keys=True) + "\n")
    return coco


def _write_jpeg(path, img):
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


# ---- one image -------------------------------------------------------------------------

def render_image(rng, size):
    """Return (BGR uint8 image, [(category_id, [x, y, w, h], area), ...])."""
    img = _background(rng, size)
    occupied = np.zeros((size, size), np.uint8)
    boxes, objects = [], []
    for _ in range(int(rng.choice(len(OBJECT_COUNT_P), p=OBJECT_COUNT_P)) + 1):
        placed = _place(rng, size, occupied, boxes)
        if placed is None:
            continue  # the image is full enough; fewer objects is fine
        cat_id, mask, box = placed
        color = _contrasting_color(rng, img, mask)
        img[mask > 0] = color
        occupied |= mask
        boxes.append(box)
        objects.append((cat_id, list(box), int(cv2.countNonZero(mask))))
    # mild sensor noise (float32: float64 noise was half the run time)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6))
    noise += img
    np.clip(noise, 0, 255, out=noise)
    return noise.astype(np.uint8), objects


def _place(rng, size, occupied, boxes):
    """Draw one random shape where it fits; None after PLACE_TRIES misses."""
    # keep shapes 2 px apart so neither hides a pixel of the other
    keep_out = cv2.dilate(occupied, np.ones((5, 5), np.uint8)) if boxes else occupied
    for _ in range(PLACE_TRIES):
        cat_id = int(rng.integers(1, len(CATEGORIES) + 1))
        side = rng.uniform(*SIDE_RANGE) * size
        pts = _shape_points(rng, cat_id, side)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        span = hi - lo
        if (span >= size - 4).any():
            continue
        # shift so the whole shape lies at least 1 px inside the image
        offset = np.array([rng.uniform(1 - lo[0], size - 2 - hi[0]),
                           rng.uniform(1 - lo[1], size - 2 - hi[1])])
        mask = np.zeros((size, size), np.uint8)
        _fill(mask, cat_id, pts + offset, side)
        x, y, w, h = cv2.boundingRect(mask)
        if w < 2 or h < 2:
            continue
        box = (x, y, w, h)
        if cv2.countNonZero(mask & keep_out):
            continue
        if any(_iou(box, b) > MAX_IOU for b in boxes):
            continue
        return cat_id, mask, box
    return None


def _shape_points(rng, cat_id, side):
    """Outline points (float, centred on 0) whose extent is about `side`."""
    if cat_id == 1:  # circle: the points only carry its extent, _fill draws the disc
        r = side / 2
        return np.array([[-r, -r], [r, r]])
    if cat_id == 2:  # square, mildly rotated so it never looks like a diamond
        half = side / 2
        pts = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        angle = rng.uniform(-20, 20)
    elif cat_id == 3:  # equilateral triangle, any orientation
        r = side / math.sqrt(3)
        pts = np.array([[r * math.cos(a), r * math.sin(a)]
                        for a in np.deg2rad([-90, 30, 150])])
        angle = rng.uniform(0, 360)
    else:  # plus-shaped cross, mildly rotated so it never looks like an X
        half, arm = side / 2, side * rng.uniform(0.14, 0.2)
        pts = np.array([[-arm, -half], [arm, -half], [arm, -arm], [half, -arm],
                        [half, arm], [arm, arm], [arm, half], [-arm, half],
                        [-arm, arm], [-half, arm], [-half, -arm], [-arm, -arm]])
        angle = rng.uniform(-20, 20)
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return pts @ rot.T


def _fill(mask, cat_id, pts, side):
    if cat_id == 1:
        centre = pts.mean(axis=0)
        cv2.circle(mask, tuple(int(round(c * _SUB)) for c in centre),
                   int(round(side / 2 * _SUB)), 255, -1, cv2.LINE_8, shift=4)
    else:
        poly = np.round(pts * _SUB).astype(np.int32)
        cv2.fillPoly(mask, [poly], 255, cv2.LINE_8, shift=4)


def _iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def _contrasting_color(rng, img, mask):
    """A random colour far enough from the mean background under the mask."""
    under = np.array(cv2.mean(img, mask=mask)[:3])
    best, best_d = None, -1.0
    for _ in range(30):
        c = _random_color(rng)
        d = float(np.linalg.norm(c - under))
        if d >= MIN_COLOR_DIST:
            return c.astype(np.uint8)
        if d > best_d:
            best, best_d = c, d
    if best_d < MIN_COLOR_DIST / 2:
        best = np.where(under > 127, 0.0, 255.0)  # fall back to the opposite corner
    return best.astype(np.uint8)


def _random_color(rng):
    return rng.integers(0, 256, 3).astype(np.float64)


# ---- backgrounds ------------------------------------------------------------------------

def _background(rng, size):
    kind = int(rng.choice(len(BACKGROUND_P), p=BACKGROUND_P))
    if kind == 0:
        img = _solid(rng, size)
    elif kind == 1:
        img = _gradient(rng, size)
    elif kind == 2:
        img = _smooth_noise(rng, size)
    elif kind == 3:
        img = _stripes(rng, size)
    else:
        img = _blobs(rng, size)
    if rng.random() < 0.3:
        _distractor_lines(rng, img)
    return img


def _solid(rng, size):
    img = np.empty((size, size, 3), np.uint8)
    img[:] = _random_color(rng).astype(np.uint8)
    return img


def _gradient(rng, size):
    c0, c1 = _random_color(rng), _random_color(rng)
    t = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    ramp = xx * math.cos(t) + yy * math.sin(t)
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    img = c0 + ramp[..., None] * (c1 - c0)
    return img.astype(np.uint8)


def _smooth_noise(rng, size):
    cells = int(rng.integers(3, 8))
    base = _random_color(rng)
    small = base + TEXTURE * (rng.integers(0, 256, (cells, cells, 3)) - base)
    small = small.astype(np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _stripes(rng, size):
    # low-contrast parallel stripes: texture, not objects
    base, other = _random_color(rng), _random_color(rng)
    other = base + TEXTURE * 0.7 * (other - base)
    period = rng.uniform(6, 30)
    t = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = (xx * math.cos(t) + yy * math.sin(t)) / period
    on = (phase - np.floor(phase)) < rng.uniform(0.3, 0.7)
    img = np.where(on[..., None], other, base)
    return img.astype(np.uint8)


def _blobs(rng, size):
    # soft (blurred) ellipses: no sharp edges, so they never pass for a shape
    base = _random_color(rng)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = base.astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 16, size // 4, 2))
        color = tuple(float(v) for v in base + TEXTURE * (_random_color(rng) - base))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=size / 24)


def _distractor_lines(rng, img):
    size = img.shape[0]
    for _ in range(int(rng.integers(1, 4))):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(float(v) for v in _random_color(rng))
        cv2.line(img, p0, p1, color, 1, cv2.LINE_AA)
