"""Labelled boxes on a copy of an image (OpenCV), one colour per class."""

import numpy as np


def colour(class_id):
    """A distinct, stable BGR colour per class (golden-ratio hues, full saturation)."""
    import cv2
    hue = int((class_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 230]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw(rgb, detections):
    """A BGR copy of the RGB image `rgb` with each detection's box and "label score"."""
    import cv2
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    font_scale = max(0.4, min(h, w) / 900)
    # lowest score first, so the best boxes' labels end up on top
    for i in np.argsort(detections.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections.boxes[i])
        c = colour(int(detections.class_ids[i]))
        cv2.rectangle(img, (x1, y1), (x2, y2), c, thick, cv2.LINE_AA)
        text = f"{detections.labels[i]} {float(detections.scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        ty = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1  # inside when at the top
        tx = min(max(x1, 0), max(w - tw - 2, 0))
        cv2.rectangle(img, (tx, ty), (tx + tw + 2, ty + th + base + 2), c, -1)
        grey = 0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2]
        ink = (0, 0, 0) if grey > 140 else (255, 255, 255)
        cv2.putText(img, text, (tx + 1, ty + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    ink, thick, cv2.LINE_AA)
    return img


def encode(bgr, suffix):
    """Image file bytes for `suffix` (.png, .jpg, ...), or None if OpenCV cannot write it."""
    import cv2
    try:
        ok, buf = cv2.imencode(suffix, bgr)
    except cv2.error:
        return None
    return buf.tobytes() if ok else None
