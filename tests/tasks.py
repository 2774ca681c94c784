"""The task behind each real model: its real data, its task metric against fp32, its bound.

    task = get_task("yolov8n")
    cal, ev = task.calibration(16), task.evaluation(32)   # lists of {input name: array}
    m = task.score(reference_outputs, candidate_outputs)  # {"f1": ..., "max_abs": ..., "sqnr_db": ...}
    task.passed(m)                                         # m[task.metric] >= task.bound
    save_npz(cal, "cal.npz")                               # for `onnxsmith optimize --calib cal.npz`

Calibration and evaluation inputs never overlap: they come from different pictures, lines
or sentences (each task's docstring says which). Every feed is one sample with batch 1,
and all feeds of a task have one shape, so they stack into the .npz that core/data.py
reads (samples on a new first axis). ``timed()`` is the feed latency is measured on.

Preprocessing is what the models' own packages do (read from the wheels in
``~/.cache/onnxsmith/models/wheels``):

* rapidocr-onnxruntime 1.4.4, ``config.yaml``: Det ``limit_side_len: 736``, ``limit_type:
  min``, mean = std = 0.5, post-processing ``thresh: 0.3``; Cls ``cls_image_shape: [3, 48,
  192]``, ``cls_batch_num: 6``, ``label_list: ['0', '180']``; Rec ``rec_img_shape: [3, 48,
  320]``, ``rec_batch_num: 6``. Images are read with ``cv2.imread`` (BGR) and fed in that
  order, ``(x / 255 - 0.5) / 0.5``. ``ch_ppocr_rec/text_recognize.py`` widens a batch past
  320 only for lines wider than 320/48: our crops stay below that ratio, so 48x320 is what
  rapidocr feeds them. ``ch_ppocr_rec/utils.py`` (CTCLabelDecode): the characters are the
  model's metadata ``character`` (one per line), with "blank" inserted at index 0 and " "
  appended; decoding is argmax per step, repeats merged, blanks dropped.
  ``ch_ppocr_det/utils.py`` (DBPostProcess): ``segmentation = pred > thresh``.
* nudenet 3.4.2, ``nudenet.py``: the image padded to a square, ``blobFromImage(1/255,
  (320, 320), swapRB=True)`` (realmodels.yolo_input); ``_postprocess``: rows of
  ``output[0].T`` are (cx, cy, w, h, class scores...); a row is a candidate when its
  best class score is >= 0.2; then ``cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)``:
  score >= 0.25, class-agnostic NMS at IoU 0.45.
* all-MiniLM-L6-v2 (sentence-transformers): the sentence embedding is the mean of
  ``last_hidden_state`` over the tokens the attention mask keeps.

Bounds (issue 4): YOLOv8n detection F1 >= 0.95; rec identical text >= 0.95; det
binarized-map IoU >= 0.90; MiniLM mean cosine >= 0.99; cls top-1 agreement >= 0.95 (ours:
issue 4 names no bound for cls; the same as the other agreement metrics).
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from PIL import Image

import realmodels as rm  # tests/realmodels.py: pytest and bench/ scripts put tests/ on sys.path

from onnxsmith import detections
from onnxsmith.detections import Detections, box_iou, match_f1, nms
from onnxsmith.task_metrics import ctc_greedy_paths, mean_pool, row_cosine

__all__ = [
    "TASKS",
    "Detections",
    "Task",
    "binarized_iou",
    "box_iou",
    "ctc_greedy_decode",
    "generic_scores",
    "get_task",
    "match_f1",
    "mean_pool",
    "nms",
    "row_cosine",
    "save_npz",
    "top1_agreement",
    "yolo_decode",
]

Feed = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]

TASKS: tuple[str, ...] = ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n", "minilm")

# nudenet 3.4.2 _postprocess
YOLO_CANDIDATE = 0.2
YOLO_SCORE = 0.25
YOLO_NMS_IOU = 0.45
YOLO_SIZE = 320
# rapidocr config.yaml, Det.thresh
DET_THRESH = 0.3
DET_SIZE = (736, 736)  # square crops: rapidocr's limit_side_len 736 on the short side
LINE_BATCH = 6  # rapidocr's rec_batch_num and cls_batch_num
SEQ_LEN = 128


# --- metrics: pure functions on arrays (unit-tested in tests/test_tasks.py) ----------


def yolo_decode(output: np.ndarray, *, candidate: float = YOLO_CANDIDATE, score_threshold: float = YOLO_SCORE,
                iou_threshold: float = YOLO_NMS_IOU, size: int = YOLO_SIZE) -> Detections:
    """nudenet's post-processing of one image's YOLOv8 output [4 + classes, N]: rows with a best
    class score >= ``candidate`` and >= ``score_threshold``, boxes clipped to the input,
    class-agnostic NMS (onnxsmith.detections.yolo_decode). Coordinates stay in input pixels
    (nudenet's rescaling to the original image is the same for every model compared, so it
    cannot change a match)."""
    return detections.yolo_decode(output, score_threshold=max(candidate, score_threshold), iou_threshold=iou_threshold, size=size)


def ctc_greedy_decode(probs: np.ndarray, characters: list[str] | tuple[str, ...]) -> list[str]:
    """Texts of a CTC output [batch, steps, classes] (or [steps, classes]): the best class per
    step, repeats merged, blanks (class 0) dropped; ``characters[k]`` is class k's text."""
    return ["".join(characters[k] for k in path) for path in ctc_greedy_paths(probs)]


def binarized_iou(reference: list[np.ndarray], candidate: list[np.ndarray], *, threshold: float = DET_THRESH) -> float:
    """IoU of the maps binarized at ``threshold`` (``pred > thresh``, as DBPostProcess), with
    intersection and union pooled over every image; 1.0 when both are empty everywhere."""
    inter = union = 0
    for ref, cand in zip(reference, candidate, strict=True):
        a, b = np.asarray(ref) > threshold, np.asarray(cand) > threshold
        if a.shape != b.shape:
            raise ValueError(f"probability maps differ in shape: {a.shape} and {b.shape}")
        inter += int(np.count_nonzero(a & b))
        union += int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else inter / union


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows [n, classes] whose argmax is the same."""
    ref, cand = np.asarray(reference), np.asarray(candidate)
    ref, cand = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    return float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1)))


def generic_scores(reference: list[Outputs], candidate: list[Outputs]) -> dict[str, float]:
    """Over every output: the largest abs error and the lowest SQNR in dB (core/metrics.py)."""
    from onnxsmith.metrics import compare_outputs

    per_output = compare_outputs(reference, candidate)
    return {
        "max_abs": max(d.max_abs for d in per_output.values()),
        "sqnr_db": min(d.sqnr_db for d in per_output.values()),
    }


def _aligned(reference: list[Outputs], candidate: list[Outputs]) -> list[Outputs]:
    """The candidate's outputs under the reference's names (by position when a tool renamed
    them), as float32 or the reference's dtype (an fp16 model's outputs are float16)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference runs but {len(candidate)} candidate runs")
    out = []
    for ref, cand in zip(reference, candidate, strict=True):
        if set(cand) != set(ref):
            if len(cand) != len(ref):
                raise ValueError(f"outputs {sorted(ref)} vs {sorted(cand)}: different counts")
            cand = dict(zip(ref, cand.values(), strict=True))
        out.append({name: np.asarray(cand[name]).astype(np.asarray(ref[name]).dtype, copy=False) for name in ref})
    return out


def save_npz(feeds: list[Feed], path: str | Path) -> Path:
    """Write ``feeds`` as the .npz ``onnxsmith optimize --calib/--eval`` reads: per input, the
    feeds stacked on a new first (sample) axis, each sample keeping its batch dim."""
    if not feeds:
        raise ValueError("no feeds to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: np.stack([f[name] for f in feeds]) for name in feeds[0]})
    return path


# --- the tasks ------------------------------------------------------------------------------


class Task(ABC):
    """A real model, its real inputs, and the task metric that says whether it still works."""

    name: str
    metric: str  # the key of score()'s dict the bound is on
    bound: float
    metric_text: str  # e.g. "detection F1 vs fp32"
    data_text: str  # what the calibration and evaluation inputs are

    def model_path(self) -> Path:
        return rm.real_model(self.name)

    def calibration(self, n: int) -> list[Feed]:
        return _take(self._calibration_pool(n), n, f"{self.name} calibration")

    def evaluation(self, n: int) -> list[Feed]:
        return _take(self._evaluation_pool(), n, f"{self.name} evaluation")

    @property
    def max_evaluation(self) -> int:
        """How many held-out feeds there are."""
        return len(self._evaluation_pool())

    def timed(self) -> Feed:
        """The feed latency is measured on: one held-out sample (or rapidocr's batch of lines)."""
        return self.evaluation(1)[0]

    def score(self, reference: list[Outputs], candidate: list[Outputs], feeds: list[Feed] | None = None) -> dict[str, float]:
        """The task metric(s) of ``candidate`` against ``reference`` (each a list of one run's
        outputs per feed, as onnxsmith.runtime.run_all returns), plus max abs error and SQNR."""
        candidate = _aligned(reference, candidate)
        scores = self._task_scores(reference, candidate, feeds)
        scores.update(generic_scores(reference, candidate))
        return scores

    def passed(self, scores: dict[str, float]) -> bool:
        value = scores.get(self.metric)
        return value is not None and not math.isnan(value) and value >= self.bound

    @property
    def bound_text(self) -> str:
        return f"{self.metric} >= {self.bound:g}"

    @abstractmethod
    def _calibration_pool(self, n: int) -> list[Feed]: ...

    @abstractmethod
    def _evaluation_pool(self) -> list[Feed]: ...

    @abstractmethod
    def _task_scores(self, reference: list[Outputs], candidate: list[Outputs], feeds: list[Feed] | None) -> dict[str, float]: ...


def _take(pool: list[Feed], n: int, what: str) -> list[Feed]:
    if n < 1:
        raise ValueError(f"{what}: ask for at least 1 feed, not {n}")
    if n > len(pool):
        raise ValueError(f"{what}: only {len(pool)} real inputs, asked for {n}")
    return pool[:n]


def _only(outputs: Outputs) -> np.ndarray:
    (value,) = outputs.values()
    return value


def _interleave(*lists: list) -> list:
    out = []
    for i in range(max(map(len, lists))):
        out.extend(lst[i] for lst in lists if i < len(lst))
    return out


# --- YOLOv8n (nudenet) ------------------------------------------------------------------------

# scikit-image photographs: the two with people (astronaut, camera) go one to each side.
YOLO_CAL_PHOTOS = ("camera", "chelsea", "motorcycle_left", "rocket", "hubble_deep_field", "retina", "ihc", "brick", "grass", "gravel")
YOLO_EVAL_PHOTOS = ("astronaut", "moon", "coffee", "motorcycle_right", "coins")
# lfw_subset.npy: faces 0-99, then non-faces 100-199; calibration and evaluation each get half of both.
LFW_CAL = (range(0, 50), range(100, 150))
LFW_EVAL = (range(50, 100), range(150, 200))
MOSAIC_GRIDS = (2, 3, 4)


def face_mosaics(faces: range, others: range, grids: tuple[int, ...] = MOSAIC_GRIDS, size: int = YOLO_SIZE) -> list[np.ndarray]:
    """RGB uint8 ``size`` x ``size`` pictures tiling LFW face crops (two cells in three) and
    LFW non-face crops on a g x g grid, g cycling through ``grids``, until the faces run out:
    real faces at several scales, for a detector whose classes include FACE_FEMALE/FACE_MALE."""
    lfw = rm.lfw_faces()
    face_ids, other_ids = list(faces), list(others)
    pictures, k = [], 0
    while face_ids:
        g = grids[k % len(grids)]
        cell = size // g
        canvas = np.full((size, size), 128, dtype=np.uint8)
        for i in range(g * g):
            pool = other_ids if (i % 3 == 2 and other_ids) else face_ids
            if not pool:
                break
            tile = Image.fromarray(lfw[pool.pop(0)]).resize((cell, cell), Image.BICUBIC)
            r, c = divmod(i, g)
            canvas[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = np.asarray(tile)
        pictures.append(np.repeat(canvas[..., None], 3, axis=2))
        k += 1
    return pictures


class YoloTask(Task):
    """YOLOv8n of nudenet 3.4.2 at 320x320, batch 1.

    Calibration: 10 scikit-image photos (camera, chelsea, ...), then their mirror images,
    interleaved with mosaics of LFW faces 0-49 and non-faces 100-149. Evaluation: the other
    5 photos (astronaut, moon, coffee, motorcycle_right, coins), their mirror images, and
    mosaics of LFW faces 50-99 and non-faces 150-199. Metric: nudenet's decoding + NMS, then
    detections matched (same class, IoU >= 0.5) -> F1, pooled over images.
    """

    name = "yolov8n"
    metric = "f1"
    bound = 0.95
    metric_text = "detection F1 vs fp32 (nudenet decode + NMS, same class, IoU >= 0.5)"
    data_text = ("calibration: 10 scikit-image photos, mirrored copies, LFW face mosaics; held out: 5 other photos "
                 "(astronaut, moon, coffee, motorcycle_right, coins), mirrored copies, mosaics of other LFW faces; 1x3x320x320")

    def _calibration_pool(self, n: int) -> list[Feed]:
        return self._calibration_feeds()

    @functools.cache
    def _calibration_feeds(self) -> list[Feed]:
        return self._pool(YOLO_CAL_PHOTOS, *LFW_CAL)

    @functools.cache
    def _evaluation_pool(self) -> list[Feed]:
        return self._pool(YOLO_EVAL_PHOTOS, *LFW_EVAL)

    @staticmethod
    def _pool(names: tuple[str, ...], faces: range, others: range) -> list[Feed]:
        photos = rm.photos(list(names))
        pictures = [photos[n] for n in names]
        mirrored = [p[:, ::-1] for p in pictures]
        images = _interleave(pictures + mirrored, face_mosaics(faces, others))
        return [{"images": rm.yolo_input(img)} for img in images]

    def _task_scores(self, reference, candidate, feeds):
        ref = [yolo_decode(_only(r)[i]) for r in reference for i in range(len(_only(r)))]
        cand = [yolo_decode(_only(c)[i]) for c in candidate for i in range(len(_only(c)))]
        return match_f1(ref, cand)


# --- PP-OCRv4 det ---------------------------------------------------------------------------


def square_crops(rgb: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` square crops (side = the short side) spread evenly along the long side."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    starts = np.linspace(0, max(h, w) - side, count).round().astype(int)
    return [rgb[:, s:s + side] if w >= h else rgb[s:s + side, :] for s in starts]


class DetTask(Task):
    """PP-OCRv4 det (DBNet) at 736x736, batch 1: square crops resized as rapidocr does (its
    short side up to limit_side_len 736; a square crop of the 191-px-high page.png becomes
    736x736).

    Calibration: pages of text rendered with PIL, interleaved with square crops of the
    scikit-image photos (rapidocr is run on photos too). Evaluation: three square crops each
    of the real scans page.png and text.png (printed and handwritten text). Metric: the
    probability map binarized at 0.3 (rapidocr's Det.thresh), IoU pooled over images.
    """

    name = "ppocr_det"
    metric = "iou"
    bound = 0.90
    metric_text = "binarized (> 0.3) probability-map IoU vs fp32, pooled"
    data_text = ("calibration: rendered text pages and photo crops; held out: 6 square crops of scikit-image "
                 "page.png and text.png; 1x3x736x736 (rapidocr's det preprocessing)")

    def _calibration_pool(self, n: int) -> list[Feed]:
        pages = rm.text_pages(n, size=(368, 368), seed=1)
        photos = [square_crops(img, 1)[0] for img in rm.photos().values()]
        images = _interleave(pages, photos)[:n]
        return [{"x": rm.det_input(img, DET_SIZE)} for img in images]

    @functools.cache
    def _evaluation_pool(self) -> list[Feed]:
        scans = rm.text_photos()
        crops = _interleave(square_crops(scans["page"], 3), square_crops(scans["text"], 3))
        return [{"x": rm.det_input(img, DET_SIZE)} for img in crops]

    def _task_scores(self, reference, candidate, feeds):
        return {"iou": binarized_iou([_only(r) for r in reference], [_only(c) for c in candidate])}


# --- PP-OCRv4 rec and the cls model: word crops of page.png --------------------------------


def word_boxes(line: np.ndarray, *, min_gap: float = 0.2) -> list[tuple[int, int]]:
    """Column spans (start, end) of the words in a text-line crop (RGB uint8): runs of inked
    columns separated by gaps of at least ``min_gap`` x the line height. Ink is what is 40
    grey levels darker than the local background (the 95th percentile within 10 columns:
    the lighting of a photographed page changes along the line)."""
    grey = line.astype(np.float32).mean(axis=2)
    h = line.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(grey, ((0, 0), (10, 10)), mode="edge"), 21, axis=1)
    background = np.percentile(windows.transpose(1, 0, 2).reshape(grey.shape[1], -1), 95, axis=1)
    ink = (background[None, :] - grey) > 40
    inked = ink[h // 4: h - h // 5].any(axis=0)  # the x-height band: not the neighbours' descenders
    spans: list[tuple[int, int]] = []
    x, w = 0, len(inked)
    while x < w:
        if not inked[x]:
            x += 1
            continue
        start = x
        while x < w and inked[x]:
            x += 1
        if spans and start - spans[-1][1] < min_gap * h:
            spans[-1] = (spans[-1][0], x)
        else:
            spans.append((start, x))
    return spans


def line_crops(line: np.ndarray, max_ratio: float, *, pad: int = 4) -> list[np.ndarray]:
    """Crops of one line of text whose width/height stays <= ``max_ratio``: every single word,
    every two neighbouring words, and the line packed greedily into runs of words, without
    duplicates; ``pad`` pixels kept left and right."""
    spans = word_boxes(line)
    h, w = line.shape[:2]
    pieces: list[tuple[int, int]] = []

    def add(a: int, b: int) -> None:
        x0, x1 = max(0, a - pad), min(w, b + pad)
        if (x1 - x0) <= max_ratio * h and (x0, x1) not in pieces:
            pieces.append((x0, x1))

    start = 0
    while start < len(spans):  # greedy packing
        end = start
        while end + 1 < len(spans) and spans[end + 1][1] - spans[start][0] + 2 * pad <= max_ratio * h:
            end += 1
        add(spans[start][0], spans[end][1])
        start = end + 1
    for i in range(len(spans) - 1):
        add(spans[i][0], spans[i + 1][1])
    for a, b in spans:
        add(a, b)
    return [line[:, a:b].copy() for a, b in pieces]


# page.png's lines (realmodels.page_lines): 0 heading, 1-5 prose, 6 a code line.
PAGE_CAL_LINES = (0, 2, 4, 6)
PAGE_EVAL_LINES = (1, 3, 5)


class _LineTask(Task):
    shape: tuple[int, int, int]
    rotate: bool  # the cls model: every other crop upside down

    @functools.cache
    def _crops(self, lines: tuple[int, ...]) -> list[np.ndarray]:
        page = rm.page_lines()
        _, height, width = self.shape
        crops = [c for i in lines for c in line_crops(page[i], width / height)]
        if self.rotate:
            crops = [np.ascontiguousarray(c[::-1, ::-1]) if k % 2 else c for k, c in enumerate(crops)]
        return crops

    def _feeds(self, crops: list[np.ndarray]) -> list[Feed]:
        return [{"x": rm.line_input(c, self.shape)} for c in crops]

    def _calibration_pool(self, n: int) -> list[Feed]:
        real = self._crops(PAGE_CAL_LINES)
        rendered = rm.text_lines(max(0, n - len(real)), seed=7, rotate_every=2 if self.rotate else 0)
        return self._feeds(_interleave(real, rendered))

    @functools.cache
    def _evaluation_pool(self) -> list[Feed]:
        return self._feeds(self._crops(PAGE_EVAL_LINES))

    def timed(self) -> Feed:
        """rapidocr's batch of lines (rec_batch_num / cls_batch_num 6)."""
        return {"x": np.concatenate([f["x"] for f in self.evaluation(LINE_BATCH)])}


class RecTask(_LineTask):
    """PP-OCRv4 rec, 1x3x48x320: word crops of scikit-image's page.png.

    The page's printed lines (realmodels.page_lines) cut into words (column gaps), crops of
    one word, two neighbouring words and greedy runs of words no wider than 320/48 x their
    height (so rapidocr feeds them at 48x320 unwidened). Calibration: lines 0, 2, 4, 6 (heading,
    prose, code), topped up with rendered lines when more are asked for; evaluation: lines
    1, 3, 5. Metric: CTC greedy decoding with the model's own character list; the fraction
    of crops whose text is identical to fp32's.
    """

    name = "ppocr_rec"
    metric = "text"
    bound = 0.95
    shape = rm.REC_SHAPE
    rotate = False
    metric_text = "fraction of crops with CTC-decoded text identical to fp32's"
    data_text = ("calibration: word crops of page.png lines 0, 2, 4, 6 (rendered lines beyond those); "
                 "held out: word crops of lines 1, 3, 5; 1x3x48x320 (rapidocr's rec preprocessing)")

    @functools.cached_property
    def characters(self) -> list[str]:
        """rapidocr's CTCLabelDecode list: "blank", the model's metadata ``character`` lines, " "."""
        import onnx

        model = onnx.load(str(self.model_path()), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        return ["blank", *meta["character"].splitlines(), " "]

    def texts(self, outputs: list[Outputs]) -> list[str]:
        return [t for o in outputs for t in ctc_greedy_decode(_only(o), self.characters)]

    def _task_scores(self, reference, candidate, feeds):
        ref, cand = self.texts(reference), self.texts(candidate)
        return {"text": float(np.mean([a == b for a, b in zip(ref, cand, strict=True)]))}


class ClsTask(_LineTask):
    """The text-direction classifier (ch_ppocr_mobile_v2.0_cls), 1x3x48x192: labels '0', '180'.

    The same word crops of page.png as the recogniser (no wider than 192/48 x their height),
    every other one turned upside down. Calibration: lines 0, 2, 4, 6 (rendered lines beyond
    those); evaluation: lines 1, 3, 5. Metric: top-1 agreement with fp32.
    """

    name = "ppocr_cls"
    metric = "top1"
    bound = 0.95
    shape = rm.CLS_SHAPE
    rotate = True
    metric_text = "top-1 agreement with fp32 (labels 0 / 180)"
    data_text = ("calibration: word crops of page.png lines 0, 2, 4, 6, every other one upside down; held out: "
                 "those of lines 1, 3, 5; 1x3x48x192 (rapidocr's cls preprocessing)")

    def _task_scores(self, reference, candidate, feeds):
        ref = np.concatenate([_only(r) for r in reference])
        cand = np.concatenate([_only(c) for c in candidate])
        return {"top1": top1_agreement(ref, cand)}


# --- MiniLM ---------------------------------------------------------------------------------

MINILM_EVAL_START = 400  # evaluation sentences start here in realmodels.sentences(); calibration below


class MiniLMTask(Task):
    """all-MiniLM-L6-v2, 1x128 tokens (padded), batch 1.

    Calibration: README sentences 0.. of the installed packages (realmodels.sentences);
    evaluation: sentences 400.. (never used for calibration). Metric: cosine of the
    mean-pooled (attention-mask) embeddings with fp32's, mean over sentences (and the min).
    """

    name = "minilm"
    metric = "cosine"
    bound = 0.99
    metric_text = "mean-pooled embedding cosine vs fp32 (mean over sentences; min too)"
    data_text = f"calibration: README sentences 0..; held out: sentences {MINILM_EVAL_START}..; 1x{SEQ_LEN} tokens"

    def __init__(self) -> None:
        self._masks: dict[int, list[np.ndarray]] = {}

    def calibration(self, n: int) -> list[Feed]:
        if n > MINILM_EVAL_START:
            raise ValueError(f"minilm calibration: at most {MINILM_EVAL_START} sentences (the rest are held out)")
        return self._pool(rm.sentences(n))

    def evaluation(self, n: int) -> list[Feed]:
        feeds = self._pool(rm.sentences(n, start=MINILM_EVAL_START))
        self._masks[n] = [f["attention_mask"] for f in feeds]
        return feeds

    @property
    def max_evaluation(self) -> int:
        return len(rm._sentence_pool()) - MINILM_EVAL_START

    @staticmethod
    def _pool(texts: list[str]) -> list[Feed]:
        batch = rm.minilm_inputs(texts, SEQ_LEN)
        return [{k: v[i:i + 1] for k, v in batch.items()} for i in range(len(texts))]

    def _calibration_pool(self, n: int) -> list[Feed]:  # calibration() is overridden
        return self.calibration(n)

    def _evaluation_pool(self) -> list[Feed]:
        return self.evaluation(self.max_evaluation)

    def _task_scores(self, reference, candidate, feeds):
        if feeds is not None:
            masks = [f["attention_mask"] for f in feeds]
        elif len(reference) in self._masks:
            masks = self._masks[len(reference)]  # the feeds of evaluation(len(reference))
        else:
            raise ValueError("minilm: pass the feeds to score() (mean pooling needs their attention_mask)")
        ref = np.concatenate([mean_pool(_only(r), m) for r, m in zip(reference, masks, strict=True)])
        cand = np.concatenate([mean_pool(_only(c), m) for c, m in zip(candidate, masks, strict=True)])
        cos = row_cosine(ref, cand)
        return {"cosine": float(cos.mean()), "cosine_min": float(cos.min())}


_CLASSES: dict[str, type[Task]] = {
    "ppocr_det": DetTask, "ppocr_rec": RecTask, "ppocr_cls": ClsTask, "yolov8n": YoloTask, "minilm": MiniLMTask,
}


@functools.cache
def get_task(name: str) -> Task:
    """The task of real model ``name`` (one of TASKS)."""
    if name not in _CLASSES:
        raise KeyError(f"unknown task '{name}'; choose one of {list(TASKS)}")
    return _CLASSES[name]()
