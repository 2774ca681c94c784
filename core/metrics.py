"""How far a model's outputs moved from the original's: per output, and one drift number.

``drift`` is the budgeted number (``accuracy.max_drift``): for each output, the error of
each channel (axis 1: detector rows such as box coordinates vs class scores, classes,
tokens) relative to that channel's own RMS magnitude, averaged over channels and samples;
the worst output counts. Normalising per channel is what makes it track task metrics:
raw-output SQNR hides a broken class-score channel behind large box coordinates. Per
output we also report max abs error, cosine similarity and SQNR in dB over all samples.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxsmith.errors import RecipeError
from onnxsmith.runtime import Outputs

__all__ = [
    "DriftMetric",
    "OutputDrift",
    "channel_error",
    "compare_outputs",
    "default_drift",
    "drift",
    "load_metric",
    "within_tolerance",
]

# (reference outputs, candidate outputs), one dict per evaluation sample -> drift (0 = identical;
# larger = worse). The accuracy budget ``max_drift`` is compared with this number.
DriftMetric = Callable[[list[Outputs], list[Outputs]], float]


@dataclass
class OutputDrift:
    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    channel_error: float  # mean per-channel relative RMS error


def compare_outputs(reference: list[Outputs], candidate: list[Outputs]) -> dict[str, OutputDrift]:
    """Compare two models' outputs sample by sample, keyed by output name of the reference."""
    result = {}
    for name in reference[0]:
        ref = np.concatenate([np.asarray(r[name], dtype=np.float64).ravel() for r in reference])
        got = np.concatenate([np.asarray(c[name], dtype=np.float64).ravel() for c in candidate])
        if ref.shape != got.shape:
            raise ValueError(f"output '{name}' changed size: {ref.size} values before, {got.size} after")
        err = got - ref
        finite = np.isfinite(err).all()
        signal, noise = float(np.sum(ref * ref)), float(np.sum(err * err)) if finite else math.inf
        norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
        result[name] = OutputDrift(
            max_abs=float(np.max(np.abs(err))) if finite else math.inf,
            mean_abs=float(np.mean(np.abs(err))) if finite else math.inf,
            cosine=float(np.dot(ref, got) / norms) if norms > 0 else float(np.array_equal(ref, got)),
            sqnr_db=_sqnr_db(signal, noise),
            channel_error=float(np.mean([channel_error(r[name], c[name]) for r, c in zip(reference, candidate, strict=True)])),
        )
    return result


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


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def drift(per_output: dict[str, OutputDrift]) -> float:
    """The single budgeted number: the worst output's per-channel relative error."""
    return max((d.channel_error for d in per_output.values()), default=0.0)


def default_drift(reference: list[Outputs], candidate: list[Outputs]) -> float:
    """The built-in DriftMetric: ``drift`` of ``compare_outputs``."""
    return drift(compare_outputs(reference, candidate))


def load_metric(spec: str | None) -> DriftMetric:
    """The metric named ``package.module:function`` (imported only now), or the default for None.

    The function takes (reference, candidate), two lists of {output name: ndarray}, one
    dict per evaluation sample, and returns a float drift where 0 means identical.
    """
    if spec is None:
        return default_drift
    module_name, _, function_name = spec.partition(":")
    fix = "give --metric as package.module:function, importable from where onnxsmith runs"
    if not module_name or not function_name:
        raise RecipeError(f"metric '{spec}' is not of the form package.module:function", fix)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RecipeError(f"metric module '{module_name}' cannot be imported: {e}", fix) from e
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RecipeError(f"metric module '{module_name}' has no function '{function_name}'", fix)

    def checked(reference: list[Outputs], candidate: list[Outputs]) -> float:
        value = function(reference, candidate)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or math.isnan(value):
            raise RecipeError(f"metric '{spec}' returned {value!r}, not a number", "return a float drift (0 = identical)")
        return float(value)

    checked.__name__ = spec
    return checked


def within_tolerance(reference: list[Outputs], candidate: list[Outputs], *, rtol: float, atol: float) -> str | None:
    """None when every output is close (numpy's allclose rule); else the first failure, described."""
    for name in reference[0]:
        for i, (r, c) in enumerate(zip(reference, candidate, strict=True)):
            ref, got = np.asarray(r[name]), np.asarray(c[name])
            if ref.shape != got.shape:
                return f"output '{name}' changed shape from {ref.shape} to {got.shape}"
            if not np.allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True):
                worst = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
                return f"output '{name}' differs by up to {worst:.3g} on sample {i} (tolerance atol={atol}, rtol={rtol})"
    return None
