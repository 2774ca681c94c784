"""How far a model's outputs moved from the original's: per output, and one drift number.

``default_drift`` is the budgeted number (``accuracy.max_drift``, default 0.03 in the
lossy passes' guard). Each output is split into channels (axis 1: a detector's box
coordinates vs its class scores, a recogniser's time steps, an encoder's tokens), and each
channel is judged in its own units:

1. Channels whose reference values all lie in [0, 1] hold probabilities, scores or maps:
   applications threshold them or take an argmax, so what counts is how far they move in
   absolute terms, where they are large enough to matter. Their part is the mean absolute
   error over the elements where either model gives at least ACTIVE (0.05): the many
   near-zero background values would otherwise dilute it.
2. Other channels hold features or coordinates: their part is the mean over channels of
   (RMS error / RMS value)^2 / 2, which is 1 - cosine similarity for small errors.

The drift is the worst part of the worst output. Raw-output SQNR (one number for box
coordinates of hundreds of pixels and scores of 0..1) does not track tasks: ONNX Runtime's
int8 YOLOv8n keeps 26 dB yet loses half its detections. Measured against the task metrics
of the five real models (docs/benchmarks.md "## drift metric vs task metric", from
bench/metric_study.py): every int8 variant within 0.03 kept its task bound, except
PP-OCRv4 rec variants that differ from fp32 by a space in one or two of 32 word crops
(ambiguous steps, margin < 0.2), which no output-level number on 4 held-out feeds predicts.
Per output we also report max abs error, cosine similarity, SQNR in dB over all samples and
the mean per-channel relative RMS error (``channel_error``). Where the task is known, a task
metric (task_metrics.py, ``--metric embedding-cosine``) or the user's own replaces the drift.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxsmith.errors import DataError, RecipeError, first_line
from onnxsmith.runtime import Outputs
from onnxsmith.task_metrics import TASK_METRICS

__all__ = [
    "DEFAULT_DRIFT_BUDGET",
    "DriftMetric",
    "OutputDrift",
    "channel_error",
    "check_reference",
    "compare_outputs",
    "default_drift",
    "drift",
    "first_nan",
    "load_metric",
    "tolerance_for",
    "within_tolerance",
]

DEFAULT_DRIFT_BUDGET = 0.03  # the default drift's budget when the recipe sets none (module docstring: why)
ACTIVE = 0.05  # probability-like values below this, on both sides, are background
BOUND_TOLERANCE = 1e-6

# (reference outputs, candidate outputs, the feeds that produced them), one dict per evaluation
# sample -> drift (0 = identical; larger = worse). The budget ``max_drift`` is compared with it.
DriftMetric = Callable[[list[Outputs], list[Outputs], list[dict[str, np.ndarray]]], float]


@dataclass
class OutputDrift:
    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    channel_error: float  # mean per-channel relative RMS error


def first_nan(outputs: list[Outputs]) -> tuple[str, int] | None:
    """(output name, sample index) of the first NaN in ``outputs``, or None where there is none."""
    for index, sample in enumerate(outputs):
        for name, value in sample.items():
            array = np.asarray(value)
            if array.dtype.kind in "fc" and np.isnan(array).any():
                return name, index
    return None


def check_reference(reference: list[Outputs], describe_sample: Callable[[int], str] | None = None) -> None:
    """Refuse a reference holding NaN: no candidate can be compared with it (NaN equals nothing),
    so every pass would look either broken or, compared NaN to NaN, exact. ``describe_sample``
    names an evaluation sample for the message (Dataset.describe_sample)."""
    found = first_nan(reference)
    if found:
        where = describe_sample(found[1]) if describe_sample else f"evaluation sample {found[1]}"
        raise DataError(
            f"the original model outputs NaN in '{found[0]}' on {where}, so no pass can be verified against it",
            "check the model on that data (onnxsmith inspect; onnxruntime) and give data it computes numbers for",
        )


def compare_outputs(reference: list[Outputs], candidate: list[Outputs]) -> dict[str, OutputDrift]:
    """Compare two models' outputs sample by sample, keyed by output name of the reference.

    A candidate value that is NaN, or infinite where the reference is finite, makes the
    output's errors infinite and its cosine 0: such an output matches nothing."""
    result = {}
    for name in reference[0]:
        exact = _compared_exactly(name, reference, candidate)
        if exact is not None:
            result[name] = OutputDrift(0.0, 0.0, 1.0, math.inf, 0.0) if exact else OutputDrift(math.inf, math.inf, 0.0, -math.inf, math.inf)
            continue
        ref = np.concatenate([np.asarray(r[name], dtype=np.float64).ravel() for r in reference])
        got = np.concatenate([np.asarray(c[name], dtype=np.float64).ravel() for c in candidate])
        if ref.shape != got.shape:
            raise ValueError(f"output '{name}' changed size: {ref.size} values before, {got.size} after")
        with np.errstate(invalid="ignore"):  # inf - inf: where both are the same infinity the error is 0, not NaN
            err = np.where(got == ref, 0.0, got - ref)
        finite = np.isfinite(err).all()
        signal, noise = float(np.sum(ref * ref)), float(np.sum(err * err)) if finite else math.inf
        norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
        result[name] = OutputDrift(
            max_abs=float(np.max(np.abs(err))) if finite else math.inf,
            mean_abs=float(np.mean(np.abs(err))) if finite else math.inf,
            cosine=_cosine(ref, got, norms) if not np.isnan(got).any() else 0.0,
            sqnr_db=_sqnr_db(signal, noise),
            channel_error=float(np.mean([channel_error(r[name], c[name]) for r, c in zip(reference, candidate, strict=True)])),
        )
    return result


def _compared_exactly(name: str, reference: list[Outputs], candidate: list[Outputs]) -> bool | None:
    """For an output that has no numeric error to measure, whether it is unchanged: strings and
    other non-numeric values, and empty tensors (a zero-size dim). None for the others."""
    refs, gots = [np.asarray(r[name]) for r in reference], [np.asarray(c[name]) for c in candidate]
    numeric = all(a.dtype.kind in "biuf" for a in (*refs, *gots))
    if numeric and all(a.size for a in refs):
        return None
    return all(r.shape == g.shape and np.array_equal(r, g) for r, g in zip(refs, gots, strict=True))


def channel_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over channels (axis 1; the whole tensor below rank 2) of RMS error / RMS value."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if not np.isfinite(got).all():
        return math.inf
    if ref.ndim < 2:
        ref, got = ref.reshape(1, -1), got.reshape(1, -1)
    else:
        ref = np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1)
        got = np.moveaxis(got, 1, 0).reshape(got.shape[1], -1)
    error = np.sqrt(np.mean((got - ref) ** 2, axis=1))
    magnitude = np.sqrt(np.mean(ref**2, axis=1))
    floor = 1e-6 * max(float(magnitude.max()) if magnitude.size else 0.0, 1e-12)  # all-zero channels
    return float(np.mean(error / (magnitude + floor)))


def _cosine(ref: np.ndarray, got: np.ndarray, norms: float) -> float:
    if not math.isfinite(norms):
        return 0.0
    return float(np.dot(ref, got) / norms) if norms > 0 else float(np.array_equal(ref, got))


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0 or math.isinf(noise) or math.isnan(noise):
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def drift(per_output: dict[str, OutputDrift]) -> float:
    """The worst output's mean per-channel relative error (``channel_error``; reported, not budgeted)."""
    return max((d.channel_error for d in per_output.values()), default=0.0)


def default_drift(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]] | None = None) -> float:
    """The built-in DriftMetric (module docstring): the worst output's worst part (``feeds`` unused)."""
    worst = 0.0
    for name in reference[0]:
        exact = _compared_exactly(name, reference, candidate)
        if exact is not None:
            worst = worst if exact else math.inf
            continue
        ref = _channels([r[name] for r in reference])
        got = _channels([c[name] for c in candidate])
        if ref.shape != got.shape:
            raise ValueError(f"output '{name}' changed shape: {ref.shape} before, {got.shape} after")
        if not np.isfinite(got).all():
            return math.inf
        bounded = (ref.min(axis=1, initial=0.0) >= -BOUND_TOLERANCE) & (ref.max(axis=1, initial=0.0) <= 1 + BOUND_TOLERANCE)
        if bounded.any():
            r, g = ref[bounded], got[bounded]
            active = np.maximum(np.abs(r), np.abs(g)) >= ACTIVE
            if active.any():
                worst = max(worst, float(np.mean(np.abs(g - r)[active])))
        if (~bounded).any():
            r, g = ref[~bounded], got[~bounded]
            error = np.sqrt(np.mean((g - r) ** 2, axis=1))
            size = np.sqrt(np.mean(r**2, axis=1))
            relative = np.where(size > 0, error / np.where(size > 0, size, 1.0), np.where(error > 0, 1.0, 0.0))
            worst = max(worst, float(np.mean(relative**2) / 2))
    return worst


def _channels(runs: list[np.ndarray]) -> np.ndarray:
    """[channels (axis 1; one below rank 2), values of every run] as float64."""
    arrays = [np.asarray(a, dtype=np.float64) for a in runs]
    if arrays[0].ndim < 2:
        return np.concatenate([a.reshape(1, -1) for a in arrays], axis=1)
    return np.concatenate([np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) for a in arrays], axis=1)


def load_metric(spec: str | None) -> DriftMetric:
    """The DriftMetric ``spec`` names: None or ``drift`` for the default, a task metric's name
    (task_metrics.TASK_METRICS, e.g. ``embedding-cosine``), or ``package.module:function``
    (imported only now).

    A user's function takes (reference, candidate), two lists of {output name: ndarray},
    one dict per evaluation sample, and may take the feeds that produced them as a third
    argument; it returns a float drift where 0 means identical.
    """
    if spec is None or spec == "drift":
        return default_drift
    if spec in TASK_METRICS:
        return TASK_METRICS[spec].function
    module_name, _, function_name = spec.partition(":")
    fix = (f"give --metric as auto, drift, {', '.join(TASK_METRICS)}, or as package.module:function, "
           "importable from where onnxsmith runs")
    if not module_name or not function_name:
        raise RecipeError(f"metric '{spec}' is neither a built-in task metric nor of the form package.module:function", fix)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module's own code raises on import
        raise RecipeError(f"metric module '{module_name}' cannot be imported: {type(e).__name__}: {first_line(e)}", fix) from e
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RecipeError(f"metric module '{module_name}' has no function '{function_name}'", fix)
    wants_feeds = _takes_three_arguments(function)

    def checked(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]] | None = None) -> float:
        try:
            value = function(reference, candidate, feeds) if wants_feeds else function(reference, candidate)
        except Exception as e:  # the user's code, not onnxsmith's: name it, not an internal error
            raise RecipeError(f"metric '{spec}' raised {type(e).__name__}: {first_line(e)}",
                              f"fix {function_name} in {module_name} (call it on two lists of output dicts to see the traceback)") from e
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or math.isnan(value):
            raise RecipeError(f"metric '{spec}' returned {value!r}, not a number", "return a float drift (0 = identical)")
        return float(value)

    checked.__name__ = spec
    return checked


def _takes_three_arguments(function: Callable) -> bool:
    try:
        return len(inspect.signature(function).bind_partial(None, None, None).arguments) == 3
    except (TypeError, ValueError):  # takes fewer, or a builtin without a signature
        return False


def within_tolerance(reference: list[Outputs], candidate: list[Outputs], *, rtol: float, atol: float) -> str | None:
    """None when every output is close (numpy's allclose rule); else the first failure, described.
    NaN matches nothing, not even NaN (check_reference keeps NaN out of the reference)."""
    for name in reference[0]:
        for i, (r, c) in enumerate(zip(reference, candidate, strict=True)):
            ref, got = np.asarray(r[name]), np.asarray(c[name])
            if ref.shape != got.shape:
                return f"output '{name}' changed shape from {ref.shape} to {got.shape}"
            if ref.dtype.kind not in "biufc" or got.dtype.kind not in "biufc":  # strings: equal, or not
                if not np.array_equal(got, ref):
                    return f"output '{name}' (non-numeric) changed on sample {i}"
                continue
            if got.dtype.kind in "fc" and np.isnan(got).any():
                return f"output '{name}' is NaN on sample {i} where the original gives a number"
            out_rtol, out_atol = tolerance_for(ref.dtype, rtol, atol)
            if not np.allclose(got, ref, rtol=out_rtol, atol=out_atol, equal_nan=False):
                worst = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
                return f"output '{name}' differs by up to {worst:.3g} on sample {i} (tolerance atol={out_atol:.3g}, rtol={out_rtol:.3g})"
    return None


def tolerance_for(dtype: np.dtype, rtol: float, atol: float) -> tuple[float, float]:
    """(rtol, atol) for an output of ``dtype``: a pass states its tolerance for float32, and a
    float16 output gets at least 4 of its own ulps relative and one epsilon absolute (one
    reordered float16 sum moves a result by an ulp, 1e-3 relative, ten times float32's rtol)."""
    if dtype.kind != "f" or dtype.itemsize >= 4:
        return rtol, atol
    eps = float(np.finfo(dtype).eps)
    return max(rtol, 4 * eps), max(atol, eps)
