"""Shared by test_detector / test_infer: the demo model's exports (with NMS, without, its
x86-sparse export) at a given input size, made once per session, and detection matching."""

import functools
from pathlib import Path

import numpy as np

import deploy_helpers as h


@functools.lru_cache(maxsize=None)
def exports(size=160, kind="sparse"):
    """{"nms": dir, "raw": dir, "x86": dir} of h.weights(kind) exported at size x size."""
    from picosparse.steps import x86_sparse
    from picosparse.steps.export import ExportParams, export
    root = h._TMP / f"infer_{kind}_{size}"
    out = {"nms": root / "nms", "raw": root / "raw"}
    export(h.load_cfg(), h.weights(kind), out["nms"], ExportParams(input_size=size))
    export(h.load_cfg(), h.weights(kind), out["raw"],
           ExportParams(input_size=size, postprocess=False))
    # threshold 0: every 1x1 conv becomes the sparse op, whatever the weights' zeros
    params = x86_sparse.X86SparseParams(sparse_threshold=0.0)
    out["x86"] = Path(x86_sparse.convert(out["raw"], params)["out_dir"])
    return out


def image(seed=100, wide=1):
    """One of the noise images the test weights' BatchNorm statistics were set on (seeds
    100-103; other images saturate every score), each column repeated `wide` times: with
    `nearest`, a 160 x 320 image reaches the model as exactly that image, with different
    x and y scales."""
    from picosparse.deploy import infer_cfg
    return np.repeat(infer_cfg.random_image(160, seed=seed), wide, axis=1)


def nearest(det):
    """The Detector's Resize switched to nearest-neighbour (see `image`)."""
    for p in det.preprocess_ops:
        if p["type"] == "Resize":
            p["interp"] = 0
    return det


def assert_same_detections(a, b, box_tol=1e-2, score_tol=1e-4, min_score=None):
    """Same detections in the same order (both best first); optionally only those scoring
    clearly above `min_score` in both (runtimes may differ right at a threshold)."""
    if min_score is not None:
        a, b = a.above(min_score), b.above(min_score)
    assert len(a) == len(b), f"{len(a)} vs {len(b)} detections"
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.scores, b.scores, atol=score_tol)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_tol)


def match(a, b, min_score, px=1.0, score_tol=0.02):
    """Unordered matching for real photos: every detection of `a` scoring >= min_score + tol
    has one in `b` with the same label, each box side within `px` and a close score, and
    the other way round. Returns the number matched."""
    def one_way(x, y):
        n = 0
        for i in range(len(x)):
            if x.scores[i] < min_score + score_tol:
                continue
            d = np.abs(y.boxes - x.boxes[i]).max(axis=1)
            ok = (y.class_ids == x.class_ids[i]) & (d <= px) & \
                (np.abs(y.scores - x.scores[i]) <= score_tol)
            assert ok.any(), (f"{x.labels[i]} {x.scores[i]:.3f} {x.boxes[i].round(1)}: no "
                              f"match (nearest box side difference {d.min():.2f} px)")
            n += 1
        return n
    n = one_way(a, b)
    one_way(b, a)
    return n
