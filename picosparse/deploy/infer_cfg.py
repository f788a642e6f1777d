"""infer_cfg.yml: PaddleDetection's deploy config next to an exported model, and the inputs
a model needs (image preprocessing as that file describes it).

Besides PaddleDetection's keys (mode, draw_threshold, metric, use_dynamic_shape, arch,
min_subgraph_size, Preprocess, label_list, NMS, fpn_stride) we add a `picosparse:` block
(input shapes, post-process flag, source weights); PaddleDetection's deploy code ignores it.
"""

import json
from pathlib import Path

import yaml

from picosparse.errors import DataError

FILE = "infer_cfg.yml"
# PaddleDetection's TensorRT min_subgraph_size for the architectures picosparse exports
MIN_SUBGRAPH = {"PicoDet": 3, "GFL": 16}


def label_list(cfg_data):
    """Category names from EvalDataset's COCO annotation file, else "0".."N-1"."""
    ds = cfg_data.get("EvalDataset") or {}
    n = int(cfg_data.get("num_classes", 80))
    if isinstance(ds, dict) and ds.get("anno_path"):
        ann = Path(ds.get("dataset_dir") or ".") / ds["anno_path"]
        if ann.is_file():
            try:
                cats = json.loads(ann.read_text()).get("categories") or []
                names = [str(c["name"]) for c in sorted(cats, key=lambda c: c["id"])]
                if names:
                    return names
            except (ValueError, KeyError, TypeError, AttributeError, OSError):
                pass  # a broken annotation file is eval's problem; fall back to ids
    return [str(i) for i in range(n)]


def build(cfg_data, input_size, input_shapes, postprocess, labels, extra=None):
    """The infer_cfg.yml mapping for a model exported at a fixed square `input_size`."""
    arch = cfg_data["architecture"]
    reader = cfg_data.get("TestReader") or cfg_data.get("EvalReader") or {}
    pre = []
    for t in reader.get("sample_transforms") or []:
        for kind, args in t.items():
            if kind == "Decode":
                continue  # deploy code always decodes
            p = {"type": kind, **dict(args or {})}
            if kind == "Resize":
                # the exported shape is fixed: the deployed image must be exactly S x S
                p.update(target_size=[input_size, input_size], keep_ratio=False)
                p.setdefault("interp", 1)
            pre.append(p)
    for t in reader.get("batch_transforms") or []:
        for kind, args in t.items():
            if kind == "PadBatch":
                pre.append({"type": "PadStride", "stride": (args or {}).get("pad_to_stride", 32)})
    out = {"mode": "paddle", "draw_threshold": 0.5, "metric": cfg_data.get("metric", "COCO"),
           "use_dynamic_shape": False, "arch": arch,
           "min_subgraph_size": MIN_SUBGRAPH.get(arch, 3), "Preprocess": pre,
           "label_list": labels}
    head = (cfg_data.get(arch) or {}).get("head")
    decode = {}
    if isinstance(head, str) and isinstance(cfg_data.get(head), dict):
        h = cfg_data[head]
        if "nms" in h:
            out["NMS"] = dict(h["nms"])
        if "fpn_stride" in h:
            out["fpn_stride"] = list(h["fpn_stride"])
        # what decoding raw head outputs needs (Detector, for --no-postprocess exports);
        # unset keys take the head class's defaults (PicoHead and PicoHeadV2 share them)
        decode = {"head": head, "reg_max": int(h.get("reg_max", 16)),
                  "cell_offset": float(h.get("cell_offset", 0))}
    out["picosparse"] = {"input_size": input_size, "input_shapes": input_shapes,
                         "postprocess": bool(postprocess), **decode, **(extra or {})}
    return out


def dump(data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def find(model_path):
    """infer_cfg.yml of an inference dir, or the one beside a .nb file (None if absent)."""
    p = Path(model_path)
    f = p / FILE if p.is_dir() else p.parent / FILE
    return f if f.is_file() else None


def read(path):
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: unreadable infer_cfg.yml ({type(e).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("Preprocess"), list):
        raise DataError(f"{path}: not a PaddleDetection infer_cfg.yml (no Preprocess list)")
    return data


def input_size(data):
    ps = data.get("picosparse") or {}
    if ps.get("input_size"):
        return int(ps["input_size"])
    for p in data["Preprocess"]:
        if p.get("type") == "Resize" and p.get("target_size"):
            return int(p["target_size"][-1])
    return None


def input_shapes(data, size):
    """{name: shape} of the model's inputs; the default is what picosparse exports."""
    ps = (data or {}).get("picosparse") or {}
    if ps.get("input_shapes"):
        return {k: list(v) for k, v in ps["input_shapes"].items()}
    return {"image": [1, 3, size, size], "scale_factor": [1, 2]}


def read_image(path, flag="--image"):
    """An RGB uint8 HxWx3 array decoded as PaddleDetection's Decode does, or a DataError."""
    import cv2
    import numpy as np
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{flag} {p}: not a readable image file (no such file)")
    try:
        data = np.frombuffer(p.read_bytes(), dtype="uint8")
    except OSError as e:
        raise DataError(f"{flag} {p}: not a readable image file "
                        f"({e.strerror or type(e).__name__})") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise DataError(f"{flag} {p}: not a readable image file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def random_image(size, seed=0):
    import numpy as np
    return np.random.RandomState(seed).randint(0, 256, (size, size, 3)).astype("uint8")


def preprocess(rgb, preprocess_list, size):
    """Feed dict (image, im_shape, scale_factor) for one RGB uint8 image, with the same
    operations as PaddleDetection's reader (Resize on the uint8 image through fx/fy, then
    NormalizeImage in place), so a deployed model sees what `eval --weights` feeds."""
    import cv2
    import numpy as np
    h0, w0 = rgb.shape[:2]
    im = rgb
    scale = [1.0, 1.0]
    for p in preprocess_list:
        kind = p.get("type")
        if kind == "Resize":
            if p.get("keep_ratio"):
                raise DataError(f"{FILE}: Resize with keep_ratio: true is not supported "
                                "(picosparse exports a fixed square input)")
            th, tw = p.get("target_size", [size, size])
            sy, sx = th / h0, tw / w0
            interp = int(p.get("interp", 1))
            out = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=interp)
            if out.shape[:2] != (int(th), int(tw)):  # fx * w rounded off the fixed size
                out = cv2.resize(im, (int(tw), int(th)), interpolation=interp)
            im = out.astype("float32")
            scale = [sy, sx]
        elif kind == "NormalizeImage":
            im = im.astype("float32", copy=True)
            if p.get("is_scale", True):
                im *= 1.0 / 255.0
            if p.get("norm_type", "mean_std") == "mean_std":
                im -= np.array(p.get("mean", [0, 0, 0]))[None, None, :]
                im /= np.array(p.get("std", [1, 1, 1]))[None, None, :]
        elif kind == "Permute":
            im = im.transpose(2, 0, 1)
        elif kind == "PadStride":
            pass  # fixed S x S with S a multiple of 32: nothing to pad
        else:
            raise DataError(f"{FILE}: preprocess step {kind!r} is not supported")
    if im.ndim == 3 and im.shape[-1] == 3:
        im = im.transpose(2, 0, 1)
    image = np.ascontiguousarray(im[None].astype("float32"))
    return {"image": image,
            "im_shape": np.array([[image.shape[2], image.shape[3]]], "float32"),
            "scale_factor": np.array([scale], "float32")}
