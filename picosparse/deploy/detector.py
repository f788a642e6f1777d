"""Detector: an exported PicoDet folder -> boxes on images, for any artifact picosparse makes.

    from picosparse.deploy import Detector
    det = Detector("runs/x/export/x86_sparse", threads=1)    # or an export folder
    for d in det.predict("bus.jpg", threshold=0.5).to_list():
        print(d["label"], d["score"], d["box"])              # x1 y1 x2 y2, original pixels

It reads infer_cfg.yml (preprocessing, labels, NMS settings), runs the model and, when the
export has no NMS (`export --no-postprocess`, every x86-sparse export), decodes PicoDet's head
outputs and applies NMS itself (picosparse.deploy.postprocess). Needs numpy, opencv and the
runtime: OpenVINO for x86-sparse exports and OpenVINO IR folders, Paddle Inference or OpenVINO
(reading model.pdmodel) for Paddle inference folders; paddle is imported only for the paddle
runtime.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from picosparse.deploy import infer_cfg, postprocess
from picosparse.errors import ConfigError, DataError, PicosparseError
from picosparse.x86.runtime import META_NAME

RUNTIMES = ("auto", "paddle", "openvino")
X86_META = META_NAME  # x86_sparse.json (x86/runtime.py imports OpenVINO only when loading)
IR_FILE = "model.xml"
PD_MODEL, PD_PARAMS = "model.pdmodel", "model.pdiparams"


@dataclass
class Detections:
    """One image's detections, best first: boxes [N, 4] (x1, y1, x2, y2 in the original
    image's pixels), scores [N], class_ids [N], labels [N] names."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list
    image_size: tuple  # (height, width) of the original image

    def __len__(self):
        return len(self.scores)

    def above(self, threshold):
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.class_ids[keep],
                          [n for n, k in zip(self.labels, keep) if k], self.image_size)

    def to_list(self):
        return [{"label": n, "class_id": int(c), "score": round(float(s), 5),
                 "box": [round(float(v), 2) for v in b]}
                for b, s, c, n in zip(self.boxes, self.scores, self.class_ids, self.labels)]


def artifact_kind(path, flag="--model"):
    """"x86-sparse" (model.xml + x86_sparse.json), "paddle" (model.pdmodel + .pdiparams) or
    "openvino-ir" (model.xml), or a one-line DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{flag} {p}: folder does not exist")
    if not p.is_dir():
        raise DataError(f"{flag} {p}: not a folder (give an exported model folder: "
                        "model.pdmodel + model.pdiparams, or an x86_sparse folder)")
    if (p / PD_MODEL).is_file() and (p / PD_PARAMS).is_file():
        return "paddle"
    if (p / IR_FILE).is_file():
        return "x86-sparse" if (p / X86_META).is_file() else "openvino-ir"
    raise DataError(f"{flag} {p}: no model.pdmodel + model.pdiparams or model.xml (not an "
                    "exported model; make one with `picosparse export`)")


def _find_cfg(p, kind, flag):
    f = infer_cfg.find(p)
    if f is None and kind == "x86-sparse":  # older x86-sparse folders: the source's
        f = infer_cfg.find(p.parent)
    if f is None:
        raise DataError(f"{flag} {p}: no infer_cfg.yml beside the model (it holds the "
                        "preprocessing and labels; `picosparse export` writes it)")
    return f


def _importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def choose_runtime(kind, runtime, has_nms, flag="--model", path=""):
    """The runtime that runs this artifact: OpenVINO for IR folders; for Paddle folders the
    paddle runtime when the export has NMS (OpenVINO 2026.4's multiclass_nms crashed on some
    inputs here), OpenVINO otherwise, each falling back to the other when not installed."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if kind in ("x86-sparse", "openvino-ir"):
        if runtime == "paddle":
            what = "an x86-sparse export" if kind == "x86-sparse" else "an OpenVINO IR folder"
            raise ConfigError(f"{flag} {path}: {what} runs on OpenVINO only; use --runtime "
                              "openvino or auto")
        return kind
    if runtime != "auto":
        return runtime
    order = ("paddle", "openvino") if has_nms else ("openvino", "paddle")
    for r in order:
        if _importable(r):
            return r
    return order[0]  # the runner names what is missing


def _runner(kind, runtime, path, threads, precision):
    from picosparse.deploy import runtimes
    if kind == "x86-sparse":
        return runtimes.X86SparseRunner(path, threads, precision)
    if kind == "openvino-ir":
        return runtimes.OpenVINOIRRunner(path, threads, precision)
    return runtimes.RUNNERS[runtime](path, threads, precision)


class Detector:
    """Run an exported PicoDet (Paddle inference folder, x86-sparse export, OpenVINO IR
    folder) on images; `predict` returns Detections in original-image coordinates.

    runtime: "auto" | "paddle" | "openvino" (x86-sparse and IR folders always run on
    OpenVINO); threads: inference threads (OpenVINO and picosparse's sparse ops, or Paddle);
    precision: "f32" | "bf16" (also written MODEL_DIR@bf16): OpenVINO's inference precision,
    and for an x86-sparse folder picosparse's BF16 sparse kernel, so the accuracy of a BF16
    deployment is measured too.
    """

    def __init__(self, model_dir, runtime="auto", threads=1, flag="--model", precision="f32"):
        from picosparse.deploy.runtimes import split_precision
        model_dir, precision, _ = split_precision(model_dir, precision, flag)
        self.path = Path(model_dir)
        self.flag = flag
        self.kind = artifact_kind(self.path, flag)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"--threads {threads}: expected an integer >= 1")
        self.cfg_file = _find_cfg(self.path, self.kind, flag)
        cfg = infer_cfg.read(self.cfg_file)
        self.cfg = cfg
        ps = cfg.get("picosparse") or {}
        self.input_size = infer_cfg.input_size(cfg)
        if not self.input_size:
            raise DataError(f"{self.cfg_file}: no input size (no Resize target_size)")
        self.preprocess_ops = cfg["Preprocess"]
        self.label_list = [str(x) for x in cfg.get("label_list") or []]
        self.draw_threshold = float(cfg.get("draw_threshold", 0.5))
        self.nms = postprocess.nms_settings(cfg.get("NMS"))
        self.strides = [int(s) for s in cfg.get("fpn_stride") or [8, 16, 32, 64]]
        self.reg_max = ps.get("reg_max")
        # PaddleDetection's own deploy code decodes with cell centres (+0.5)
        self.cell_offset = float(ps.get("cell_offset", 0.5))
        # exports without our block: PaddleDetection's default export has NMS
        self.has_nms = bool(ps.get("postprocess", True))
        # PaddleSlim INT8 (`picosparse quant`/`qat`): OpenVINO cannot read its dequantize ops
        int8 = self.kind == "paddle" and (ps.get("quant") or {}).get("backend") == "paddle"
        self.runtime = choose_runtime(self.kind, runtime, self.has_nms or int8, flag, self.path)
        if precision != "f32" and (self.runtime not in ("openvino", "openvino-ir")) and \
                self.kind != "x86-sparse":
            raise ConfigError(f"{flag} {self.path}@{precision}: only OpenVINO models and "
                              f"x86-sparse folders run at another precision; this one runs on "
                              f"{self.runtime}")
        self.threads, self.precision = threads, precision
        self._run = _runner(self.kind, self.runtime, self.path, threads, precision)
        self._inputs = self._run.input_names()

    def __repr__(self):
        return (f"Detector({str(self.path)!r}, runtime={self.runtime!r}, "
                f"threads={self.threads}, precision={self.precision!r})")

    @property
    def num_classes(self):
        return len(self.label_list)

    def label(self, class_id):
        return self.label_list[class_id] if 0 <= class_id < len(self.label_list) \
            else str(class_id)

    def predict(self, images, threshold=None):
        """Detections of one image, or a list of them for a list of images. An image is a
        path or an RGB uint8 array [H, W, 3]; threshold drops lower scores (default: keep
        everything the NMS keeps, as evaluation wants)."""
        if isinstance(images, (list, tuple)):
            return [self._one(im, threshold) for im in images]
        return self._one(images, threshold)

    __call__ = predict

    def raw_outputs(self, rgb):
        """The model's own outputs for one RGB image, and its scale_factor (y, x)."""
        feed = infer_cfg.preprocess(rgb, self.preprocess_ops, self.input_size)
        self._run.feed(feed)
        self._run.run()
        return self._run.outputs(), feed

    def _one(self, image, threshold):
        rgb = _as_rgb(image)
        outs, feed = self.raw_outputs(rgb)
        rows = self._nms_rows(outs) if self.has_nms else self._decode(outs, feed)
        rows = rows[rows[:, 0] >= 0]  # Paddle's NMS marks "nothing found" with class -1
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]
        ids = rows[:, 0].astype(np.int64)
        det = Detections(rows[:, 2:6].copy(), rows[:, 1].copy(), ids,
                         [self.label(int(c)) for c in ids], tuple(rgb.shape[:2]))
        return det.above(threshold) if threshold is not None else det

    def _nms_rows(self, outs):
        """Outputs of an export with NMS: bbox [K, 6] and bbox_num [1]."""
        bbox = next((np.asarray(o) for o in outs if np.ndim(o) == 2 and np.shape(o)[1] == 6),
                    None)
        nums = [np.asarray(o) for o in outs if np.size(o) == 1 and np.ndim(o) == 1]
        if bbox is None:
            raise PicosparseError(
                f"{self.flag} {self.path}: outputs {[list(np.shape(o)) for o in outs]} are not "
                "NMS boxes [K, 6]; if it was exported with --no-postprocess, set "
                f"picosparse.postprocess: false in {self.cfg_file}")
        n = int(nums[0].ravel()[0]) if nums else len(bbox)
        return bbox[:n].astype(np.float32)

    def _decode(self, outs, feed):
        n = self.num_classes or None
        if n is None:
            n = int(np.shape(outs[0])[-1])
        h, w = feed["image"].shape[2:]
        try:
            boxes, scores = postprocess.decode(
                outs, (h, w), self.strides, n, feed["scale_factor"][0], self.reg_max,
                self.cell_offset)
        except postprocess.LayoutError as e:
            raise PicosparseError(f"{self.flag} {self.path}: not PicoDet's raw head outputs "
                                  f"({e})") from None
        return postprocess.multiclass_nms(boxes, scores, **self.nms)


def _as_rgb(image):
    if isinstance(image, (str, Path)):
        return infer_cfg.read_image(image)
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise DataError(f"image array: expected RGB uint8 [H, W, 3], got {a.dtype} "
                        f"{list(a.shape)}")
    return a
