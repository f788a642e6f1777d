"""`picosparse infer`: an exported model on images -> detections, and copies of the images with
the boxes drawn (picosparse.deploy.Detector does the work)."""

import time
from dataclasses import dataclass
from pathlib import Path

from picosparse import progress
from picosparse.errors import ConfigError, DataError
from picosparse.params import at_least, between, check, param

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, kw_only=True)
class InferParams:
    """`picosparse infer`; checked when made."""

    threshold: float = param(None, "number?", check=between(0, 1), help=(
        "Minimum score shown and drawn [the model's draw_threshold, 0.5]."))
    runtime: str = param("auto", "str", choices=("auto", "paddle", "openvino"), help=(
        "auto: OpenVINO for x86-sparse/IR folders and exports without NMS, Paddle Inference "
        "for exports with NMS."))
    threads: int = param(1, "int", check=at_least(1), help="Inference threads.")

    def __post_init__(self):
        check(self)


def list_images(path):
    """The image itself, or a folder's images (by suffix, sorted by name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"--image {p}: no images in this folder "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not p.exists():
        raise DataError(f"--image {p}: file does not exist")
    return [p]


def _check_out(out, images):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    parents = {f.parent.resolve() for f in images}
    if out.resolve() in parents:
        raise ConfigError(f"--out {out}: is the folder of the input images; the drawn copies "
                          "would replace them (pick another folder)")
    return out


def _write_image(bgr, dest):
    """Write atomically in the format of dest's suffix (PNG when OpenCV cannot write that)."""
    from picosparse.atomic import atomic_path
    from picosparse.deploy.draw import encode
    data = encode(bgr, dest.suffix.lower())
    if data is None:
        dest = dest.with_suffix(dest.suffix + ".png")
        data = encode(bgr, ".png")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def infer(model, image, out=None, params=InferParams()):
    """Detect objects in IMAGE (a file or a folder of images) with the exported MODEL.

    threshold: minimum score shown and drawn (default: the model's infer_cfg.yml
    draw_threshold). With `out`, a copy of each image with labelled boxes is written there
    under the same name. Returns
      {"model", "kind", "runtime", "threads", "input_size", "threshold", "out",
       "images": [{"image", "width", "height", "output": path|None, "ms",
                   "detections": [{"label", "class_id", "score", "box": [x1, y1, x2, y2]}]}]}
    """
    from picosparse.deploy import infer_cfg
    from picosparse.deploy.detector import Detector
    threshold, runtime, threads = params.threshold, params.runtime, params.threads
    files = list_images(image)
    out = _check_out(out, files) if out else None
    for f in files:  # every image readable before anything runs or is written
        infer_cfg.read_image(f)
    det = Detector(model, runtime=runtime, threads=threads)
    thr = det.draw_threshold if threshold is None else float(threshold)
    rows = []
    with progress.Progress(len(files), "infer") as bar:
        for f in files:
            rgb = infer_cfg.read_image(f)
            t0 = time.perf_counter()
            found = det.predict(rgb, threshold=thr)
            ms = (time.perf_counter() - t0) * 1e3
            written = None
            if out is not None:
                from picosparse.deploy.draw import draw
                written = str(_write_image(draw(rgb, found), out / f.name))
            rows.append({"image": str(f), "height": int(rgb.shape[0]),
                         "width": int(rgb.shape[1]), "output": written, "ms": round(ms, 2),
                         "detections": found.to_list()})
            bar.update(1)
    return {"model": str(model), "kind": det.kind, "runtime": det.runtime,
            "threads": threads, "input_size": det.input_size, "threshold": thr,
            "out": str(out) if out is not None else None, "images": rows}
