"""Built-in task metrics, chosen by name (``--metric embedding-cosine``, ``--metric top1``): drift = 1 - a task score.

The default drift (metrics.py) judges every output position in its own units, and cannot
know which positions the task reads. A sentence encoder's task reads the mean of its token
states over the real tokens only, so padding dilutes the default number, and token errors
that cancel in the mean inflate it. On all-MiniLM-L6-v2 its 0.03 budget let through an
int8 variant of mean-pooled cosine 0.986 (bench/int4_bench.py, docs/benchmarks.md "## int4
and smooth"). When the task is known, budget the task itself: ``max_drift`` is then
1 - the score to keep (0.01 for cosine 0.99).

A task metric takes (reference, candidate, feeds): two lists of {output name: ndarray},
one dict per evaluation sample, and the feeds that produced them. Each comes with the
budget it gets when the recipe sets none (``TaskMetric.budget``). The counting metrics
change in steps of one thing they count (top1: a row; ctc-text: a sequence; detection-f1:
a detection): on a small evaluation set their budgets allow no change at all, so the guard
keeps intact only what it can see (``TaskMetric.counted`` says how many there are).
task_choice.py picks one from the model's signature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxsmith.detections import SCORE_THRESHOLD, Detections, match_f1, yolo_decode
from onnxsmith.errors import RecipeError
from onnxsmith.runtime import Outputs

__all__ = ["MASK_INPUT", "TASK_METRICS", "TaskMetric", "counting_near_misses", "ctc_greedy_paths", "ctc_text_disagreement", "detection_disagreement",
           "embedding_cosine", "has_padding", "image_detections", "mean_pool", "row_cosine", "top1_disagreement", "yolo_attributes_first"]

MASK_INPUT = "attention_mask"
DETECTION_BAND = (0.15, 0.2, 0.25, 0.3, 0.35)  # score thresholds around the usual 0.25 (detection_disagreement)
NEAR_MISS_FACTOR = 2.0  # counting_near_misses: a sample this multiple of the candidate's error would change counts as changed

# (reference, candidate, feeds) -> drift; metrics.DriftMetric, which cannot be imported here (metrics.py imports this module)
TaskFunction = Callable[[list[Outputs], list[Outputs], list[dict[str, np.ndarray]]], float]


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Mean of ``hidden`` [batch, seq, dim] over the positions where ``mask`` [batch, seq] is
    nonzero (sentence-transformers' mean pooling), over all positions without a mask: [batch, dim]."""
    h = np.asarray(hidden, np.float64)
    if mask is None:
        return h.mean(axis=1)
    m = (np.asarray(mask) != 0).astype(np.float64)[..., None]
    return (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``a`` and ``b`` [n, dim]: [n] (1 for equal zero rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(a == b, axis=1), 1.0, 0.0))


def embedding_cosine(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
    """1 - the mean cosine of sentence embeddings, for the worst embedding output.

    Outputs [batch, dim] are embeddings already; outputs [batch, seq, dim] are mean-pooled
    over the tokens the feed's ``attention_mask`` marks (over every token without one).
    Other outputs are not embeddings and are not judged.
    """

    def drift(name: str) -> float:
        ref = np.concatenate([_embedding(r[name], feed) for r, feed in zip(reference, feeds, strict=True)])
        got = np.concatenate([_embedding(c[name], feed) for c, feed in zip(candidate, feeds, strict=True)])
        return 1.0 - float(row_cosine(ref, got).mean())

    names = [name for name, value in reference[0].items() if np.ndim(value) in (2, 3) and _is_float(value)]
    return _worst("embedding-cosine", "[batch, dim] or [batch, seq, dim]", reference, names, drift)


def _embedding(output: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    output = np.asarray(output, np.float64)
    if output.ndim == 2:
        return output
    mask = feed.get(MASK_INPUT)
    if mask is not None and np.shape(mask) != output.shape[:2]:
        mask = None  # not a token mask of this output
    return mean_pool(output, mask)


def top1_disagreement(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
    """The fraction of rows whose argmax over the last axis changed, for the worst score output.

    A classifier's outputs [..., classes] (logits or probabilities, 2 classes or more) are
    judged row by row; other outputs are not. ``feeds`` is unused.
    """

    def drift(name: str) -> float:
        classes = np.shape(reference[0][name])[-1]
        ref = np.concatenate([np.reshape(r[name], (-1, classes)) for r in reference])
        got = np.concatenate([np.reshape(c[name], (-1, classes)) for c in candidate])
        return float(np.mean(ref.argmax(axis=1) != got.argmax(axis=1)))

    names = _outputs(reference, _score_output)
    return _worst("top1", "[..., classes]", reference, names, drift)


def ctc_greedy_paths(probs: np.ndarray) -> list[tuple[int, ...]]:
    """The label sequences of a CTC output [batch, steps, classes] (or [steps, classes]): the
    best class per step, repeats merged, blanks (class 0) dropped; one tuple per batch row."""
    p = np.asarray(probs)
    if p.ndim == 2:
        p = p[None]
    paths = []
    for best in p.argmax(axis=2):
        keep = np.ones(len(best), dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != 0
        paths.append(tuple(int(k) for k in best[keep]))
    return paths


def ctc_text_disagreement(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
    """The fraction of sequences whose greedy CTC decoding changed (a recogniser's text), for
    the worst output [batch, steps, classes] with class 0 the blank. ``feeds`` is unused."""

    def drift(name: str) -> float:
        ref = [path for r in reference for path in ctc_greedy_paths(r[name])]
        got = [path for c in candidate for path in ctc_greedy_paths(c[name])]
        return float(np.mean([a != b for a, b in zip(ref, got, strict=True)]))

    names = _outputs(reference, _ctc_output)
    return _worst("ctc-text", "[batch, steps, classes]", reference, names, drift)


def yolo_attributes_first(shape: tuple[int, ...]) -> bool | None:
    """For a YOLOv8-style output [batch, 4 + classes, N] or [batch, N, 4 + classes]: whether the
    attributes come first (the shorter axis); None when the shape is not such a head (rank 3,
    at least one class, ten times more candidates than attributes)."""
    if len(shape) != 3 or min(shape[1:]) < 5 or max(shape[1:]) < 10 * min(shape[1:]):
        return None
    return shape[1] < shape[2]


def image_detections(output: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> list[Detections]:
    """Each batch row's detections in a YOLOv8-style output (detections.yolo_decode)."""
    out = np.asarray(output)
    if not yolo_attributes_first(out.shape):
        out = np.swapaxes(out, 1, 2)
    return [yolo_decode(row, score_threshold=score_threshold) for row in out]


def detection_disagreement(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
    """1 - the mean F1 of the candidate's detections matched to the reference's (same class,
    IoU >= 0.5; detections.match_f1) over the score thresholds of DETECTION_BAND, for the
    worst YOLOv8-style output. ``feeds`` is unused.

    One threshold is not enough on a few images: a score that moves across a threshold
    flips a detection on some image, and the evaluation images may hold none right at
    0.25. Measured: YOLOv8n int8 on OpenVINO kept F1 1.0 at 0.25 on the guard's 4 images
    and lost 3 of 26 detections (F1 0.939) on 19 held-out ones; at 0.2 the 4 images showed
    it (0.933). The mean of the band, not its worst: one detection flipped at one threshold
    moves the worst F1 by about 1/(2n) on n detections, over a 0.02 budget on YOLOv8n's 16
    calibration images (18 detections), and with five thresholds to cross, the smallest error
    flips one somewhere: OpenVINO's bf16 flipped one at 0.35 on its 19 held-out images (worst
    0.023, mean 0.005). An error that shifts many scores still moves all five."""

    def drift(name: str) -> float:
        def f1(threshold: float) -> float:
            ref = [d for r in reference for d in image_detections(r[name], threshold)]
            got = [d for c in candidate for d in image_detections(c[name], threshold)]
            return match_f1(ref, got)["f1"]

        return 1.0 - float(np.mean([f1(threshold) for threshold in DETECTION_BAND]))

    names = _outputs(reference, _yolo_output)
    return _worst("detection-f1", "[batch, 4 + classes, boxes]", reference, names, drift)


def counting_near_misses(function: TaskFunction) -> TaskFunction:
    """A counting metric that also counts near misses: a row, sequence or detection changes if
    the candidate changes it, or if the candidate's error made NEAR_MISS_FACTOR times larger would.

    On a handful of samples a counting metric sees a change only where one happens, and a
    budget of 0.02 on 4 lines passes an artifact that changes 1 line in 10 two times in
    three. Measured on 24 PP-OCRv4 rec int8 artifacts that changed 6-31% of 32 held-out
    lines, plain counting on the guard's 4 held-out lines passed 7, on all 16 real lines 3,
    and counting near misses on the 16 lines 2 (both at 6%); on artifacts whose 32 lines
    held, it flagged none (docs/benchmarks.md "## optimize --auto on the real models").
    """

    def judged(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
        amplified = [{name: _amplified(r[name], value) for name, value in c.items()} for r, c in zip(reference, candidate, strict=True)]
        return max(function(reference, candidate, feeds), function(reference, amplified, feeds))

    return judged


def _amplified(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """``candidate`` with its error against ``reference`` made NEAR_MISS_FACTOR times larger (float outputs only)."""
    if not _is_float(candidate) or np.shape(candidate) != np.shape(reference):
        return candidate
    ref = np.asarray(reference, np.float64)
    return (ref + NEAR_MISS_FACTOR * (np.asarray(candidate, np.float64) - ref)).astype(np.asarray(candidate).dtype)


def _outputs(reference: list[Outputs], judged: Callable[[np.ndarray], bool]) -> list[str]:
    """The float outputs a task metric judges (``judged`` says which shapes), in the model's order."""
    return [name for name, value in reference[0].items() if _is_float(value) and judged(value)]


def _score_output(value: np.ndarray) -> bool:  # top1: [..., classes]
    return np.ndim(value) > 0 and np.shape(value)[-1] >= 2


def _ctc_output(value: np.ndarray) -> bool:  # ctc-text: [batch, steps, classes]
    return np.ndim(value) == 3


def _yolo_output(value: np.ndarray) -> bool:  # detection-f1: [batch, 4 + classes, boxes], either order
    return yolo_attributes_first(np.shape(value)) is not None


def _is_float(value: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(value).dtype, np.floating)


def _worst(metric: str, wanted: str, reference: list[Outputs], names: list[str], drift: Callable[[str], float]) -> float:
    """The largest ``drift`` over the outputs ``names``; a RecipeError when the model has none."""
    if not names:
        shapes = {name: np.shape(value) for name, value in reference[0].items()}
        raise RecipeError(f"metric '{metric}' found no float output of shape {wanted} (outputs: {shapes})",
                          "use --metric auto (the default), --metric drift, or --metric package.module:function")
    return max(0.0, *(drift(name) for name in names))


def has_padding(feeds: list[dict[str, np.ndarray]]) -> bool:
    """Whether any feed's ``attention_mask`` leaves tokens out (padding the default drift still judges)."""
    return any(MASK_INPUT in feed and not np.all(np.asarray(feed[MASK_INPUT]) != 0) for feed in feeds)


def _rows(reference: list[Outputs]) -> int:
    """top1 counts rows: those of its first score output, [..., classes]."""
    names = _outputs(reference, _score_output)
    return sum(int(np.prod(np.shape(r[names[0]])[:-1])) for r in reference) if names else 0


def _sequences(reference: list[Outputs]) -> int:
    """ctc-text counts sequences: the batch rows of its first output [batch, steps, classes]."""
    names = _outputs(reference, _ctc_output)
    return sum(np.shape(r[names[0]])[0] for r in reference) if names else 0


def _detections(reference: list[Outputs]) -> int:
    """detection-f1 counts the original's detections at the usual score threshold, in its first YOLOv8-style output."""
    names = _outputs(reference, _yolo_output)
    return sum(len(d) for r in reference for d in image_detections(r[names[0]])) if names else 0


@dataclass(frozen=True)
class TaskMetric:
    """A task metric, the budget it gets by default, and what its drift means; for a counting
    metric, how many things it counts on the original's outputs, and what they are."""

    function: TaskFunction
    budget: float
    meaning: str
    counted: Callable[[list[Outputs]], int] | None = None  # a counting metric: drift moves in steps of one of these
    unit: str = ""  # what ``counted`` counts, plural


TASK_METRICS = {
    "embedding-cosine": TaskMetric(embedding_cosine, 0.01, "1 - mean cosine of the mean-pooled sentence embeddings"),
    "top1": TaskMetric(top1_disagreement, 0.01, "share of rows whose top-1 class changed", _rows, "rows"),
    "ctc-text": TaskMetric(ctc_text_disagreement, 0.02, "share of sequences whose greedy CTC decoding changed", _sequences, "sequences"),
    "detection-f1": TaskMetric(detection_disagreement, 0.02, "1 - the mean F1 of the detections matched to the original's, "
                               "decoded at score thresholds 0.15-0.35", _detections, "detections"),
}
