"""PicoDet's post-process in numpy, for exports without it (`export --no-postprocess`, and so
every x86-sparse export): what PaddleDetection's PicoHead / PicoHeadV2 do in eval mode.

Raw outputs, per FPN level l (stride s_l, an h_l x w_l grid, N_l = h_l * w_l cells, row-major):
  scores [1, N_l, C]            sigmoid class scores
  boxes  [1, N_l, 4 * (R + 1)]  DFL logits: R + 1 bins for each of left, top, right, bottom
in that order: the L score outputs first, then the L box outputs.
Decoding: softmax over each side's bins, integral sum_i p_i * i (distances in cells), then
box = ((cx, cy) -/+ distances) * s_l with the cell at column x, row y centred at
(x + cell_offset, y + cell_offset) (PicoHead's `cell_offset`; PaddleDetection's own
deploy code assumes 0.5), divided by the resize factor to get original-image pixels, then
Paddle's multiclass_nms3: per class, scores > score_threshold, the nms_top_k best, greedy IoU
suppression above nms_threshold, then the keep_top_k best over all classes. float32 all the
way, ties broken by position, like the C++ kernel, so the boxes match the exported NMS.
"""

import math

import numpy as np

NMS_DEFAULTS = {"score_threshold": 0.05, "nms_top_k": -1, "keep_top_k": 100,
                "nms_threshold": 0.5, "normalized": True, "nms_eta": 1.0}  # MultiClassNMS's


class LayoutError(ValueError):
    """The outputs are not PicoDet's raw head outputs for this input size."""


def level_grids(input_hw, strides):
    """[(h, w)] of each level's grid: ceil(input / stride), as PicoHead's anchors."""
    h, w = input_hw
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def split_levels(outputs, input_hw, strides, num_classes, reg_max=None):
    """[(scores [N, C], box logits [N, 4(R+1)])] per level, and R, from the raw outputs."""
    arrays = [np.asarray(o) for o in outputs]
    arrays = [a[0] if a.ndim == 3 and a.shape[0] == 1 else a for a in arrays]
    if any(a.ndim != 2 for a in arrays):
        raise LayoutError("expected [1, N, K] outputs, got shapes "
                          + ", ".join(str(list(a.shape)) for a in arrays))
    cells = [h * w for h, w in level_grids(input_hw, strides)]
    n = len(strides)
    if len(arrays) != 2 * n:
        raise LayoutError(f"expected {2 * n} outputs (scores and box distributions for "
                          f"{n} levels), got {len(arrays)}")
    scores, boxes = arrays[:n], arrays[n:]
    if reg_max is None:
        reg_max = boxes[0].shape[1] // 4 - 1
    for i, (sc, bx, nc) in enumerate(zip(scores, boxes, cells)):
        if sc.shape != (nc, num_classes) or bx.shape != (nc, 4 * (reg_max + 1)):
            raise LayoutError(
                f"level {i} (stride {strides[i]}): expected scores [1, {nc}, {num_classes}] "
                f"and boxes [1, {nc}, {4 * (reg_max + 1)}], got {list(sc.shape)} and "
                f"{list(bx.shape)}")
    return list(zip(scores, boxes)), reg_max


def dfl_integral(logits, reg_max):
    """[N, 4(R+1)] logits -> [N, 4] expected distances in cells (PaddleDetection's Integral)."""
    x = logits.reshape(-1, 4, reg_max + 1).astype(np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return p @ np.arange(reg_max + 1, dtype=np.float32)


def grid_points(h, w, cell_offset):
    """[h*w, 2] (x, y) cell centres in cells, row-major."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1) + np.float32(cell_offset)


def decode(outputs, input_hw, strides, num_classes, scale_factor=(1.0, 1.0), reg_max=None,
           cell_offset=0.0):
    """Raw outputs -> (boxes [M, 4] x1 y1 x2 y2 in original pixels, scores [C, M]) over all
    levels; scale_factor is (resized / original) as (y, x)."""
    levels, reg_max = split_levels(outputs, input_hw, strides, num_classes, reg_max)
    all_boxes, all_scores = [], []
    for (sc, logits), (h, w), s in zip(levels, level_grids(input_hw, strides), strides):
        d = dfl_integral(logits, reg_max)
        pts = grid_points(h, w, cell_offset)
        box = np.concatenate([pts - d[:, :2], pts + d[:, 2:]], axis=1)
        all_boxes.append(box * np.float32(s))
        all_scores.append(sc.astype(np.float32))
    sy, sx = (np.float32(v) for v in scale_factor)
    boxes = np.concatenate(all_boxes) / np.array([sx, sy, sx, sy], np.float32)
    return boxes, np.concatenate(all_scores).T


def _iou_matrix(boxes, normalized):
    """Paddle's JaccardOverlap between every pair of boxes (0 where they do not touch)."""
    norm = np.float32(0 if normalized else 1)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    iw = np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]) + norm
    ih = np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]) + norm
    inter = iw * ih
    valid = (x2 >= x1) & (y2 >= y1)
    area = np.where(valid, (x2 - x1 + norm) * (y2 - y1 + norm), np.float32(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area[:, None] + area[None] - inter)
    apart = ((x1[None] > x2[:, None]) | (x2[None] < x1[:, None]) | (y1[None] > y2[:, None])
             | (y2[None] < y1[:, None]))
    return np.where(apart, np.float32(0), iou)


def nms(boxes, threshold, normalized=True, eta=1.0):
    """Indices (into `boxes`, sorted best first) that greedy NMS keeps. A 0/0 IoU (empty
    boxes) suppresses, as NaN <= threshold is false in the C++ kernel."""
    iou = _iou_matrix(boxes, normalized)
    keep = []
    if eta >= 1.0:  # fixed threshold: dropping what each kept box suppresses is the same
        gone = np.zeros(len(boxes), bool)
        for i in range(len(boxes)):
            if not gone[i]:
                keep.append(i)
                gone |= ~(iou[i] <= threshold)
        return keep
    thr = threshold
    for i in range(len(boxes)):
        if not keep or bool(np.all(iou[i, keep] <= thr)):
            keep.append(i)
            if thr > 0.5:
                thr *= eta
    return keep


def multiclass_nms(boxes, scores, score_threshold=0.05, nms_top_k=-1, keep_top_k=100,
                   nms_threshold=0.5, normalized=True, nms_eta=1.0, background_label=-1):
    """Paddle's multiclass_nms3 for one image: boxes [M, 4], scores [C, M] ->
    [K, 6] float32 rows (class, score, x1, y1, x2, y2), by class then score."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    picked = {}
    for c in range(scores.shape[0]):
        if c == background_label:
            continue
        idx = np.nonzero(scores[c] > np.float32(score_threshold))[0]
        if not idx.size:
            continue
        order = idx[np.argsort(-scores[c, idx], kind="stable")]
        if nms_top_k > -1:
            order = order[:nms_top_k]
        kept = order[nms(boxes[order], np.float32(nms_threshold), normalized, nms_eta)]
        if kept.size:
            picked[c] = kept
    total = sum(len(v) for v in picked.values())
    if keep_top_k > -1 and total > keep_top_k:
        cls = np.concatenate([np.full(len(v), c) for c, v in picked.items()])
        idx = np.concatenate(list(picked.values()))
        best = np.argsort(-scores[cls, idx], kind="stable")[:keep_top_k]
        picked = {}
        for j in best:
            picked.setdefault(int(cls[j]), []).append(int(idx[j]))
    rows = [np.concatenate([np.full((len(v), 1), c, np.float32),
                            scores[c, v][:, None], boxes[v]], axis=1)
            for c, v in sorted(picked.items())]
    return np.concatenate(rows) if rows else np.zeros((0, 6), np.float32)


def nms_settings(nms_cfg):
    """multiclass_nms keyword arguments from infer_cfg.yml's NMS block."""
    cfg = dict(nms_cfg or {})
    return {k: type(v)(cfg.get(k, v)) for k, v in NMS_DEFAULTS.items()}
