"""Object detections from a YOLO-style head, and how well two models' detections agree.

A YOLOv8-style detector outputs, per image, ``4 + classes`` attributes for each of N
candidate boxes: the box centre, width and height in input pixels, then one score in
[0, 1] per class. Decoding follows what applications do (ultralytics' and nudenet's
post-processing): keep candidates whose best class score reaches a threshold, then greedy
class-agnostic non-maximum suppression. Two models agree when their detections match one
to one at IoU >= 0.5 with the same class (``match_f1``). Used by the ``detection-f1``
task metric (task_metrics.py) and by the real-model tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MATCH_IOU", "MAX_DETECTIONS", "NMS_IOU", "SCORE_THRESHOLD", "Detections", "box_iou", "match_f1", "nms", "yolo_decode"]

SCORE_THRESHOLD = 0.25  # ultralytics' and nudenet's default confidence
NMS_IOU = 0.45  # nudenet's NMSBoxes IoU (ultralytics v5's default)
MATCH_IOU = 0.5
MAX_DETECTIONS = 300  # per image, as ultralytics' max_det


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4] (x1, y1, x2, y2): [n, m]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU, max_detections: int = MAX_DETECTIONS) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first (as
    ``cv2.dnn.NMSBoxes``: a box is dropped when its IoU with a kept one is above the threshold),
    at most ``max_detections`` of them. Each kept box's IoU with all others is computed as it
    is kept: time and memory grow with kept x candidates, never candidates squared (a head
    scoring thousands of candidates on noise would otherwise take seconds and gigabytes)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        if len(keep) == max_detections:
            break
        suppressed |= box_iou(boxes[i], boxes)[0] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Detections:
    """One image's detections: boxes [n, 4] (x1, y1, x2, y2, input pixels), scores [n], classes [n]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def yolo_decode(
    output: np.ndarray,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
    size: float | None = None,
) -> Detections:
    """The detections in one image's YOLOv8 output [4 + classes, N] (or [1, 4 + classes, N]):
    candidates whose best class score is >= ``score_threshold``, boxes clipped to [0, ``size``]
    when given, then class-agnostic NMS. Coordinates stay in input pixels."""
    out = np.asarray(output, np.float64)
    if out.ndim == 3:
        if out.shape[0] != 1:
            raise ValueError(f"yolo_decode takes one image's output, got a batch of {out.shape[0]}")
        out = out[0]
    class_scores = out[4:]
    best = class_scores.max(axis=0)
    rows = np.flatnonzero(best >= score_threshold)
    cx, cy, w, h = out[:4, rows]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).reshape(-1, 4)
    if size is not None:
        boxes = np.clip(boxes, 0, size)
    scores = best[rows]
    classes = class_scores[:, rows].argmax(axis=0)
    keep = nms(boxes, scores, iou_threshold)
    return Detections(boxes[keep], scores[keep], classes[keep])


def match_f1(reference: list[Detections], candidate: list[Detections], *, iou: float = MATCH_IOU) -> dict[str, float]:
    """Detections of the candidate matched to the reference's, image by image: greedily, best
    candidate score first, each to the unmatched reference box of the same class with the
    highest IoU >= ``iou``. Counts are pooled over images. F1 = 2 TP / (reference + candidate);
    1.0 when neither found anything."""
    tp = n_ref = n_cand = 0
    for ref, cand in zip(reference, candidate, strict=True):
        n_ref, n_cand = n_ref + len(ref), n_cand + len(cand)
        if not len(ref) or not len(cand):
            continue
        overlap = box_iou(cand.boxes, ref.boxes)
        overlap[cand.classes[:, None] != ref.classes[None, :]] = -1.0
        taken = np.zeros(len(ref), dtype=bool)
        for i in np.argsort(-cand.scores, kind="stable"):
            row = np.where(taken, -1.0, overlap[i])
            j = int(np.argmax(row))
            if row[j] >= iou:
                taken[j] = True
                tp += 1
    f1 = 1.0 if n_ref + n_cand == 0 else 2.0 * tp / (n_ref + n_cand)
    return {
        "f1": f1,
        "precision": tp / n_cand if n_cand else float(n_ref == 0),
        "recall": tp / n_ref if n_ref else float(n_cand == 0),
        "detections": float(n_ref),
        "matched": float(tp),
    }
