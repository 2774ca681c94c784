"""Which metric budgets a model's accuracy: the one its task needs, recognised from its signature.

The per-channel output drift (metrics.default_drift) judges every output value, so it
cannot know what the application reads. Measured on our real models, its 0.03 budget let
through a MiniLM int8 artifact of embedding cosine 0.983 and an OpenVINO recogniser whose
text changed on a third of the lines. When the model's inputs and outputs say what the task
is, the guard budgets the task itself (task_metrics.py):

- an input ``attention_mask`` [batch, seq] and float outputs [batch, seq, dim] (or pooled
  [batch, dim >= 128]): a text encoder, judged by the cosine of its mean-pooled embeddings;
- an output [batch, steps, classes] of probabilities per step where class 0 wins most
  steps: a CTC recogniser (class 0 is CTC's blank), judged by its greedy-decoded sequences;
- an output [batch, 4 + classes, boxes] (either order) with class scores in [0, 1] behind
  four unbounded box coordinates: a YOLOv8-style detector, judged by matched detections
  (only when the original model detects something on the evaluation feeds);
- outputs [batch, classes] that are probabilities, or logits straight from a Gemm/MatMul:
  a classifier, judged by its top-1 class.

Anything else keeps the default drift, and so does a recognised task whose metric moves
under a float-rounding-sized change of the outputs on the evaluation feeds (it could not
tell a pass's error from noise). ``--metric`` names one explicitly, and ``--max-drift``
overrides the budget. The choice and its reason go into the report.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.metrics import DEFAULT_DRIFT_BUDGET, DriftMetric, load_metric
from onnxsmith.runtime import Outputs
from onnxsmith.task_metrics import MASK_INPUT, TASK_METRICS, NEAR_MISS_FACTOR, counting_near_misses, image_detections, yolo_attributes_first

__all__ = ["AUTO", "DRIFT", "MetricChoice", "Shortfall", "choose_metric", "recognise_task"]

AUTO = "auto"
DRIFT = "drift"
BLANK_SHARE = 0.3  # CTC: class 0 wins at least this share of steps (recognisers emit blanks between characters)
EMBEDDING_DIM = 128  # pooled encoder outputs at least this wide are embeddings; narrower ones are class logits
PROBABILITY_TOLERANCE = 1e-3
ROUNDING_JITTER = 1e-5  # relative: a few float32 roundings deep, a tenth of an exact pass's rtol
LOGIT_PATH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Add"})  # ops between a classifier's Gemm and its output


@dataclass(frozen=True)
class Shortfall:
    """Too few counted things to show a counting metric's budget: ``units`` ``unit`` (rows,
    sequences, detections) on ``samples`` samples, where the rule of three needs ``needed``;
    ``samples_needed`` at the same rate per sample (None when these samples hold none)."""

    unit: str
    units: int
    samples: int
    needed: int
    samples_needed: int | None

    @property
    def one(self) -> str:
        """The unit in the singular: "row", "sequence", "detection"."""
        return self.unit.removesuffix("s")


@dataclass(frozen=True)
class MetricChoice:
    """The metric the budget is on, the budget, and why."""

    name: str
    metric: DriftMetric
    budget: float
    budget_from: str  # "recipe" or "metric default"
    reason: str

    def units_needed(self) -> int | None:
        """How many rows, sequences or detections (TaskMetric.counted) a counting metric needs
        before "none changed" shows its budget holds (the rule of three: none changed in n
        bounds the share below 3/n at 95%); None for a metric that does not count, or a zero budget."""
        task = TASK_METRICS.get(self.name)
        if task is None or task.counted is None or not self.budget:
            return None
        return math.ceil(3 / self.budget)

    def shortfall(self, reference: list[Outputs]) -> Shortfall | None:
        """How far the samples whose original outputs are ``reference`` fall short of showing
        this budget (units_needed); None where they show it, or the metric does not count."""
        needed = self.units_needed()
        if needed is None:
            return None
        task = TASK_METRICS[self.name]
        units = task.counted(reference)
        if units >= needed:
            return None
        samples = len(reference)
        return Shortfall(task.unit, units, samples, needed, math.ceil(needed * samples / units) if units else None)

    def judged_on_more(self, samples: int, short: Shortfall) -> MetricChoice:
        """This choice judged on ``samples`` real samples (the held-out ones ``short`` describes,
        and calibration ones), counting near misses (task_metrics.counting_near_misses): how the
        guard judges a counting metric with too few held-out samples to show its budget."""
        return dataclasses.replace(self, metric=counting_near_misses(self.metric), reason=(
            f"{self.reason}; the {short.units} {short.unit} of {short.samples} held-out samples cannot show a {self.name} "
            f"budget of {self.budget:g}, so it is judged on {samples} real samples (calibration ones too) and a {short.one} that "
            f"{NEAR_MISS_FACTOR:g} times the error would change counts as changed"))

    def describe(self) -> dict[str, object]:
        """The report's ``accuracy`` section."""
        meaning = TASK_METRICS[self.name].meaning if self.name in TASK_METRICS else (
            "worst per-channel output drift" if self.name == DRIFT else "your metric's drift")
        return {"metric": self.name, "meaning": meaning, "reason": self.reason, "budget": self.budget, "budget_from": self.budget_from}


def choose_metric(spec: str | None, max_drift: float | None, model: ir.Model, reference: list[Outputs],
                  feeds: list[dict[str, np.ndarray]]) -> MetricChoice:
    """The metric ``spec`` names (``--metric``), or, for None/``auto``, the one the model's
    task needs (recognise_task); the budget is ``max_drift`` when given, else the metric's own."""
    if spec not in (None, AUTO):
        name, reason = spec, "chosen with --metric"
    else:
        name, reason = recognise_task(model, reference, feeds)
        if name in TASK_METRICS:
            name, reason = _stable_or_drift(name, reason, reference, feeds)
    task = TASK_METRICS.get(name)
    budget = max_drift if max_drift is not None else (task.budget if task else DEFAULT_DRIFT_BUDGET)
    return MetricChoice(name, task.function if task else load_metric(name), budget,
                        "recipe" if max_drift is not None else "metric default", reason)


def _stable_or_drift(name: str, reason: str, reference: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> tuple[str, str]:
    """Keep the recognised task metric only if float rounding cannot move it: its value
    between the reference outputs and the same outputs changed by ROUNDING_JITTER relative
    (what an exact pass may do) must stay under a quarter of its budget. A detection head
    on noise images, with hundreds of overlapping boxes at the score threshold, fails it:
    an exact cleanup moved its F1 by 0.5, and no guard could ever have met the budget."""
    task = TASK_METRICS[name]
    rng = np.random.default_rng(0)
    jittered = [{k: _jitter(v, rng) for k, v in outputs.items()} for outputs in reference]
    moved = task.function(reference, jittered, feeds)
    if moved <= task.budget / 4:
        return name, reason
    return DRIFT, (f"{reason}; but a change of {ROUNDING_JITTER:g} relative in the outputs, what float rounding does, "
                   f"moves {name} by {moved:.3g} on these feeds, so it cannot tell a pass's error from rounding: "
                   "the output drift is used (give real inputs with --calib, or choose with --metric)")


def _jitter(value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        return value
    return (value * (1 + ROUNDING_JITTER * rng.standard_normal(value.shape))).astype(value.dtype)


def recognise_task(model: ir.Model, reference: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> tuple[str, str]:
    """(metric name, why) from the model's inputs, its outputs on ``feeds`` (``reference``)
    and the ops that produce them; (``drift``, why not) when no task signature fits all its
    float outputs."""
    outputs = {name: np.asarray(value) for name, value in reference[0].items() if np.issubdtype(np.asarray(value).dtype, np.floating)}
    if not outputs:
        return DRIFT, "the model has no float output to judge by a task"
    for recognise in (_encoder, _ctc, _detector, _classifier):
        found = recognise(model, outputs, reference, feeds)
        if found:
            return found
    if all(_in_unit_range(v) for v in outputs.values()):
        return DRIFT, (f"outputs {_shapes(outputs)} hold scores in [0, 1] of no recognised task (a probability map?): "
                       "judged by their mean absolute error where either model is active")
    return DRIFT, f"no task signature fits the outputs {_shapes(outputs)}: every output value is judged in its own units"


def _encoder(model: ir.Model, outputs: dict[str, np.ndarray], reference: list[Outputs], feeds: list[dict]) -> tuple[str, str] | None:
    mask = feeds[0].get(MASK_INPUT)
    if mask is None or np.ndim(mask) != 2:
        return None
    tokens = all(v.ndim == 3 and v.shape[:2] == mask.shape for v in outputs.values())
    pooled = all(v.ndim == 2 and v.shape[0] == mask.shape[0] and v.shape[1] >= EMBEDDING_DIM for v in outputs.values())
    if not (tokens or pooled):
        return None
    what = "token states" if tokens else "pooled embeddings"
    return "embedding-cosine", (f"input '{MASK_INPUT}' {list(mask.shape)} with {what} {_shapes(outputs)}: a text encoder, "
                                "judged by the cosine of its mean-pooled sentence embeddings")


def _ctc(model: ir.Model, outputs: dict[str, np.ndarray], reference: list[Outputs], feeds: list[dict]) -> tuple[str, str] | None:
    if not all(v.ndim == 3 and v.shape[2] >= 3 and _probabilities(v) for v in outputs.values()):
        return None
    blank = min(float(np.mean(np.concatenate([np.asarray(r[n]).argmax(axis=2).ravel() for r in reference]) == 0)) for n in outputs)
    if blank < BLANK_SHARE:
        return None
    return "ctc-text", (f"outputs {_shapes(outputs)} hold class probabilities per step and class 0 wins {blank:.0%} of the "
                        "steps (CTC's blank): a sequence recogniser, judged by its greedy-decoded sequences")


def _detector(model: ir.Model, outputs: dict[str, np.ndarray], reference: list[Outputs], feeds: list[dict]) -> tuple[str, str] | None:
    for value in outputs.values():
        first = yolo_attributes_first(value.shape)
        if first is None:
            return None
        attributes = value if first else np.swapaxes(value, 1, 2)
        scores, boxes = attributes[:, 4:], attributes[:, :4]
        if not (_in_unit_range(scores) and not _in_unit_range(boxes)):
            return None
    found = sum(len(d) for r in reference for name in outputs for d in image_detections(r[name]))
    if not found:
        return DRIFT, (f"outputs {_shapes(outputs)} look like a YOLO-style detection head, but the original model detects "
                       "nothing on the evaluation feeds, so matched detections would judge nothing: give real images with --calib")
    return "detection-f1", (f"outputs {_shapes(outputs)} hold 4 box coordinates and class scores in [0, 1] per candidate "
                            f"(a YOLOv8-style head; {found} detection(s) on the evaluation feeds): judged by matched detections")


def _classifier(model: ir.Model, outputs: dict[str, np.ndarray], reference: list[Outputs], feeds: list[dict]) -> tuple[str, str] | None:
    if not all(v.ndim == 2 and v.shape[1] >= 2 for v in outputs.values()):
        return None
    if all(_probabilities(v) for v in outputs.values()):
        what = "class probabilities"
    elif all(_from_gemm(model, name) for name in outputs):
        what = "class logits from a Gemm/MatMul"
    else:
        return None
    return "top1", f"outputs {_shapes(outputs)} hold {what}: a classifier, judged by its top-1 class"


def _probabilities(value: np.ndarray) -> bool:
    """Whether every row over the last axis is a probability distribution (a softmax)."""
    return _in_unit_range(value) and bool(np.allclose(value.sum(axis=-1), 1.0, atol=PROBABILITY_TOLERANCE))


def _in_unit_range(value: np.ndarray) -> bool:
    return value.size > 0 and float(value.min()) >= -PROBABILITY_TOLERANCE and float(value.max()) <= 1 + PROBABILITY_TOLERANCE


def _from_gemm(model: ir.Model, output: str) -> bool:
    """Whether graph output ``output`` comes from a Gemm/MatMul through LOGIT_PATH ops only."""
    value = next((v for v in model.graph.outputs if v.name == output), None)
    while value is not None and value.producer() is not None:
        node = value.producer()
        if node.op_type in ("Gemm", "MatMul"):
            return True
        if node.op_type not in LOGIT_PATH:
            return False
        value = next((v for v in node.inputs if v is not None and v.const_value is None and not v.is_initializer()), None)
    return False


def _shapes(outputs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"'{name}' {list(value.shape)}" for name, value in outputs.items())
