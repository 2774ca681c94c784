"""The task metrics of tests/tasks.py (the oracle of the real-model tests and of bench/) on hand-made
arrays with known answers (no real models)."""

from __future__ import annotations

import numpy as np
import pytest

import tasks as T
from conftest import real_model_or_skip
from onnxsmith.detections import MAX_DETECTIONS


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], dtype=float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    iou = T.box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(50 / 150)  # half overlap: 50 / (100 + 100 - 50)
    assert iou[0, 1] == 0.0
    assert iou[0, 2] == pytest.approx(1.0)
    assert iou[1, 2] == pytest.approx(4 / 100)  # contained box
    assert T.box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_nms_suppresses_overlaps_above_threshold_only():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [5, 0, 15, 10], [50, 50, 60, 60]], dtype=float)
    scores = np.array([0.9, 0.95, 0.5, 0.3])
    # box 1 (best) overlaps box 0 at IoU 90/110 = 0.82 -> dropped; box 2 overlaps box 1 at 60/140 = 0.43 -> kept
    assert T.nms(boxes, scores, 0.45).tolist() == [1, 2, 3]
    assert T.nms(boxes, scores, 0.4).tolist() == [1, 3]
    assert T.nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_nms_a_suppressed_box_suppresses_nothing():
    # A (best) drops B (IoU 8/12 = 0.67); B would drop C (0.67), but C overlaps A at 6/14 = 0.43 < 0.6: C stays
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]], dtype=float)
    assert T.nms(boxes, np.array([0.9, 0.8, 0.7]), 0.6).tolist() == [0, 2]
    assert T.nms(boxes[::-1], np.array([0.7, 0.8, 0.9]), 0.6).tolist() == [2, 0]  # best score first, not position
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=float)  # IoU exactly 0.5: kept (only > drops)
    assert T.nms(half, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]


def _yolo_output(rows: list[tuple[float, float, float, float, int, float]], classes: int = 3, n: int = 8) -> np.ndarray:
    """[1, 4 + classes, n] with the given (cx, cy, w, h, class, score) rows, the rest all zero."""
    out = np.zeros((1, 4 + classes, n), dtype=np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


def test_yolo_decode_thresholds_nms_and_clipping():
    out = _yolo_output([
        (50, 50, 20, 20, 1, 0.9),
        (51, 50, 20, 20, 2, 0.8),  # overlaps the first (other class): class-agnostic NMS drops it
        (200, 200, 40, 40, 0, 0.3),
        (100, 100, 10, 10, 0, 0.22),  # a candidate (>= 0.2) but below NMSBoxes' 0.25
        (315, 10, 20, 10, 2, 0.5),  # clipped at the right edge (320)
    ])
    det = T.yolo_decode(out)
    assert len(det) == 3
    assert det.classes.tolist() == [1, 2, 0]
    np.testing.assert_allclose(det.scores, [0.9, 0.5, 0.3], rtol=1e-6)
    np.testing.assert_allclose(det.boxes[0], [40, 40, 60, 60])
    np.testing.assert_allclose(det.boxes[1], [305, 5, 320, 15])


def _det(boxes, classes, scores=None) -> T.Detections:
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    scores = np.linspace(0.9, 0.5, len(boxes)) if scores is None else np.asarray(scores, dtype=float)
    return T.Detections(boxes, scores, np.asarray(classes, dtype=int))


def test_match_f1_same_class_and_iou():
    ref = [_det([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1]), _det([[0, 0, 10, 10]], [2])]
    cand = [
        _det([[1, 0, 11, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 1]),  # 2nd: wrong class, 3rd: no box there
        _det([[0, 0, 10, 10]], [2]),
    ]
    m = T.match_f1(ref, cand)
    assert m["matched"] == 2 and m["detections"] == 3
    assert m["f1"] == pytest.approx(2 * 2 / (3 + 4))
    assert m["precision"] == pytest.approx(2 / 4) and m["recall"] == pytest.approx(2 / 3)
    # IoU below 0.5 does not match: a box shifted by 6 of 10 px has IoU 40/160
    assert T.match_f1([_det([[0, 0, 10, 10]], [0])], [_det([[6, 0, 16, 10]], [0])])["f1"] == 0.0
    # IoU 0.5 exactly (half the box) and 7/13 (shifted by 3 px) do match
    assert T.match_f1([_det([[0, 0, 10, 10]], [0])], [_det([[0, 0, 10, 5]], [0])])["f1"] == 1.0
    assert T.match_f1([_det([[0, 0, 10, 10]], [0])], [_det([[3, 0, 13, 10]], [0])])["f1"] == 1.0
    # one reference box is matched once only, by the best-scoring candidate
    two = T.match_f1([_det([[0, 0, 10, 10]], [0])], [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 0])])
    assert two["matched"] == 1 and two["f1"] == pytest.approx(2 / 3)
    assert T.match_f1([_det([], [])], [_det([], [])])["f1"] == 1.0


def test_ctc_greedy_decode_blanks_and_repeats():
    chars = ["blank", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]  # a a _ a b b _ _ ' ' b -> "aab b"
    probs = np.eye(4)[steps][None]
    assert T.ctc_greedy_decode(probs, chars) == ["aab b"]
    assert T.ctc_greedy_decode(np.eye(4)[[0, 0, 0]], chars) == [""]
    batch = np.stack([np.eye(4)[[2, 2, 2]], np.eye(4)[[2, 0, 2]]])
    assert T.ctc_greedy_decode(batch, chars) == ["b", "bb"]


def test_binarized_iou_pooled_over_images():
    a = np.zeros((1, 1, 4, 4))
    a[..., :2, :] = 0.9  # 8 pixels on
    b = np.zeros((1, 1, 4, 4))
    b[..., :1, :] = 0.31  # 4 of them, just above the threshold
    b[..., 3, 3] = 0.5  # plus one outside
    assert T.binarized_iou([a], [b]) == pytest.approx(4 / 9)
    assert T.binarized_iou([a, a], [b, a]) == pytest.approx((4 + 8) / (9 + 8))
    assert T.binarized_iou([a * 0], [b * 0]) == 1.0
    at = np.full((1, 1, 2, 2), 0.3)  # not > 0.3
    assert T.binarized_iou([at], [np.full((1, 1, 2, 2), 0.2)]) == 1.0


def test_top1_agreement():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    cand = np.array([[0.8, 0.2], [0.6, 0.4], [0.55, 0.45], [0.1, 0.9]])
    assert T.top1_agreement(ref, cand) == pytest.approx(0.75)


def test_task_scores_and_bounds_from_outputs():
    cls = T.get_task("ppocr_cls")
    ref = [{"p": np.array([[0.9, 0.1]])}, {"p": np.array([[0.2, 0.8]])}]
    cand = [{"renamed": np.array([[0.7, 0.3]], dtype=np.float16)}, {"renamed": np.array([[0.6, 0.4]], dtype=np.float16)}]
    m = cls.score(ref, cand)
    assert m["top1"] == 0.5
    assert m["max_abs"] == pytest.approx(0.4, abs=1e-3)
    assert not cls.passed(m) and cls.passed({"top1": 0.96})
    # a tool that renamed two outputs: matched by position, not by name
    two = [{"z": np.array([[0.9, 0.1]]), "a": np.array([[0.1, 0.9]])}]
    renamed = [{"out0": np.array([[0.9, 0.1]]), "out1": np.array([[0.1, 0.9]])}]
    aligned = T._aligned(two, renamed)
    assert list(aligned[0]) == ["z", "a"] and aligned[0]["z"].tolist() == [[0.9, 0.1]]
    det = T.get_task("ppocr_det")
    maps = [{"m": np.full((1, 1, 2, 2), 0.9)}]
    assert det.score(maps, maps)["iou"] == 1.0 and det.score(maps, maps)["sqnr_db"] == float("inf")
    assert {T.get_task(n).bound for n in T.TASKS} == {0.9, 0.95, 0.99}
    minilm = T.get_task("minilm")
    hidden = [{"h": np.array([[[1.0, 0.0], [0.0, 1.0]]])}]
    moved = [{"h": np.array([[[1.0, 0.0], [5.0, -7.0]]])}]  # only the masked-out token changed
    assert minilm.score(hidden, moved, feeds=[{"attention_mask": np.array([[1, 0]])}])["cosine"] == pytest.approx(1.0)
    assert minilm.score(hidden, moved, feeds=[{"attention_mask": np.array([[1, 1]])}])["cosine"] < 0.9


def test_generic_scores_worst_output_sqnr_and_max_abs():
    ref = [{"a": np.array([3.0, 4.0]), "b": np.array([1.0, 0.0])}, {"a": np.array([0.0, 0.0]), "b": np.array([0.0, 2.0])}]
    cand = [{"a": np.array([3.0, 4.1]), "b": np.array([1.0, 0.0])}, {"a": np.array([0.0, 0.0]), "b": np.array([0.2, 2.0])}]
    m = T.generic_scores(ref, cand)
    # a: signal 25, noise 0.01 -> 33.98 dB; b: signal 5, noise 0.04 -> 20.97 dB; the worst is reported
    assert m["sqnr_db"] == pytest.approx(10 * np.log10(5 / 0.04))
    assert m["max_abs"] == pytest.approx(0.2)
    assert T.generic_scores(ref, ref)["sqnr_db"] == float("inf")


def test_save_npz_stacks_samples_for_core_data(tmp_path):
    from onnxsmith.data import InputSpec, load_dataset

    feeds = [{"x": np.full((1, 3, 4, 4), i, dtype=np.float32)} for i in range(3)]
    path = T.save_npz(feeds, tmp_path / "cal.npz")
    dataset = load_dataset(path, [InputSpec("x", np.dtype(np.float32), ("batch", 3, 4, 4))])
    assert len(dataset) == 3
    for i, feed in enumerate(dataset.feeds()):
        np.testing.assert_array_equal(feed["x"], feeds[i]["x"])


def test_word_boxes_and_line_crops_on_a_drawn_line():
    line = np.full((20, 200, 3), 230, dtype=np.uint8)
    for x0, x1 in ((10, 40), (50, 70), (120, 190)):  # three "words"; letters 2 px apart inside
        for x in range(x0, x1, 4):
            line[6:15, x:x + 2] = 20
    assert T.word_boxes(line) == [(10, 40), (50, 68), (120, 190)]
    crops = T.line_crops(line, max_ratio=4.0, pad=2)  # at most 80 px wide
    widths = sorted(c.shape[1] for c in crops)
    assert all(w <= 80 for w in widths)
    assert widths == [22, 34, 62, 74]  # w2, w1, "w1 w2" (packed, and the same as the pair), w3 (packed and single)


@pytest.mark.realmodel
def test_real_tasks_decode_what_the_pictures_show():
    """The preprocessing is the models' own: fp32 PP-OCRv4 rec reads page.png's words, and
    nudenet's YOLOv8n finds faces (FACE_FEMALE 1, FACE_MALE 12) in the held-out pictures."""
    import onnxruntime as ort

    rec, yolo = T.get_task("ppocr_rec"), T.get_task("yolov8n")
    rec_session = ort.InferenceSession(str(real_model_or_skip("ppocr_rec")), providers=["CPUExecutionProvider"])
    yolo_session = ort.InferenceSession(str(real_model_or_skip("yolov8n")), providers=["CPUExecutionProvider"])
    crops = rec.evaluation(rec.max_evaluation)
    texts = rec.texts([{"y": rec_session.run(None, f)[0]} for f in crops])
    assert {"markers", "coins", "background.", "histogram"} <= set(texts)
    assert len(crops) >= 30 and all(f["x"].shape == (1, 3, 48, 320) for f in crops)
    cal = rec.calibration(len(crops))
    assert not {f["x"].tobytes() for f in cal} & {f["x"].tobytes() for f in crops}  # held out
    pictures = yolo.evaluation(yolo.max_evaluation)
    found = [T.yolo_decode(yolo_session.run(None, f)[0]) for f in pictures]
    classes = np.concatenate([d.classes for d in found])
    assert np.count_nonzero((classes == 1) | (classes == 12)) >= 15
    assert yolo.score([{"o": yolo_session.run(None, f)[0]} for f in pictures[:3]],
                      [{"o": yolo_session.run(None, f)[0]} for f in pictures[:3]])["f1"] == 1.0


def test_nms_keeps_at_most_max_detections():
    grid = np.array([[x * 10, y * 10, x * 10 + 5, y * 10 + 5] for x in range(60) for y in range(60)], float)  # 3600 disjoint boxes
    scores = np.linspace(1, 0.5, len(grid))
    kept = T.nms(grid, scores, 0.45)
    assert len(kept) == MAX_DETECTIONS and kept.tolist() == list(range(MAX_DETECTIONS))
    assert len(T.nms(grid, scores, 0.45, max_detections=len(grid))) == len(grid)
