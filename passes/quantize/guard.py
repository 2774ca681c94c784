"""The accuracy guard: keep the most sensitive layers in float until the budget is met.

1. Quantize every eligible layer; if the drift (onnxsmith.metrics.drift on the held-out
   feeds) is within budget, done.
2. Rank layers by sensitivity: the error a layer adds, measured as the relative RMS error
   of its output in the fully quantized model minus that of its input (both against the
   float model on calibration feeds), so upstream errors are not blamed on it.
3. Bisection on k, the number of top-ranked layers kept in float: the smallest k whose
   model meets the budget (log2(n) quantize-and-evaluate probes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.runtime import make_session, run_all, with_outputs

__all__ = ["DEFAULT_BUDGET", "GuardResult", "guard_budget", "layer_sensitivity", "search_float_layers"]

DEFAULT_BUDGET = 0.05  # drift (ctx.metric) the guard allows when the recipe sets none


@dataclass
class GuardResult:
    model: ir.Model
    drift: float
    kept_float: list[tuple[str, float]] = field(default_factory=list)  # (node, sensitivity)
    probes: int = 1
    notes: list[str] = field(default_factory=list)


def guard_budget(
    float_model: ir.Model,
    quantized: ir.Model,
    layers: list[ir.Node],
    quantize: Callable[[list[str]], ir.Model],
    ctx: Context,
) -> GuardResult:
    """Keep the fewest, most sensitive ``layers`` in float so the held-out drift meets the budget.

    ``quantize(names)`` rebuilds the quantized model with ``names`` left in float; any mode
    (int8 static, dynamic...) can be guarded this way. Without evaluation data the model
    is returned as is, with a note saying the guard could not run.
    """
    if ctx.evaluation is None or ctx.reference is None:
        return GuardResult(quantized, float("nan"), probes=0, notes=["guard: no held-out data, so the drift was not checked"])
    budget = ctx.max_drift if ctx.max_drift is not None else DEFAULT_BUDGET
    feeds = ctx.evaluation.feeds()

    def evaluate(candidate: ir.Model) -> float:
        if ctx.backend is not None:
            return ctx.drift(ctx.backend.run_all(candidate, feeds))
        return ctx.drift(run_all(make_session(candidate), feeds))

    value = evaluate(quantized)
    if value <= budget:
        return GuardResult(quantized, value, probes=1)
    calibration = ctx.require_calibration("quantize")
    sensitivity = layer_sensitivity(float_model, quantized, layers, calibration.feeds())
    ranked = sorted(sensitivity.items(), key=lambda item: -item[1])
    result = search_float_layers(ranked, quantize, evaluate, budget)
    result.probes += 1
    result.notes.append(f"guard: drift {value:.4g} with every layer quantized exceeds the budget {budget:g}; "
                        f"{len(result.kept_float)} most sensitive layer(s) kept in float, drift now {result.drift:.4g}")
    if result.drift > budget:
        result.notes.append(f"guard: the budget {budget:g} is not reachable on this model; the artifact is mostly float")
    result.notes.extend(f"kept in float: {name} (sensitivity {s:.4g})" for name, s in result.kept_float)
    return result


def layer_sensitivity(
    float_model: ir.Model, quantized: ir.Model, layers: list[ir.Node], feeds: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Per layer (node of the float model), the relative error it adds in ``quantized``:
    the error of its output minus the largest error among its activation inputs."""
    quantized_names = {v.name for n in quantized.graph for v in n.outputs} | {v.name for v in quantized.graph.inputs}
    pairs = {
        node.name: ([v.name for v in node.inputs if v is not None and v.name in quantized_names and v.const_value is None],
                    node.outputs[0].name)
        for node in layers
        if node.outputs[0].name in quantized_names
    }
    tensors = sorted({t for inputs, out in pairs.values() for t in [*inputs, out]})
    reference = _collect(float_model, tensors, feeds)
    got = _collect(quantized, tensors, feeds)
    error = {t: _relative_rms(reference[t], got[t]) for t in tensors}
    return {name: max(0.0, error[out] - max((error[i] for i in inputs), default=0.0)) for name, (inputs, out) in pairs.items()}


def search_float_layers(
    ranked: list[tuple[str, float]],
    quantize: Callable[[list[str]], ir.Model],
    evaluate: Callable[[ir.Model], float],
    budget: float,
) -> GuardResult:
    """Bisection on how many of ``ranked`` (most sensitive first) to keep in float."""
    low, high = 0, len(ranked)  # k=low fails (checked by the caller); k=high is all float
    best: GuardResult | None = None
    probes = 0
    while high - low > 1:
        k = (low + high) // 2
        candidate = quantize([name for name, _ in ranked[:k]])
        probes += 1
        value = evaluate(candidate)
        if value <= budget:
            high, best = k, GuardResult(candidate, value, ranked[:k])
        else:
            low = k
    if best is None or len(best.kept_float) != high:
        model = quantize([name for name, _ in ranked[:high]])
        probes += 1
        best = GuardResult(model, evaluate(model), ranked[:high])
    best.probes = probes
    return best


def _collect(model: ir.Model, names: list[str], feeds, chunk: int = 256) -> dict[str, list[np.ndarray]]:
    collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        session = make_session(with_outputs(model, part), optimize=False)
        for feed in feeds:
            for n, array in zip(part, session.run(part, feed), strict=True):
                collected[n].append(array)
    return collected


def _relative_rms(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    num = sum(float(np.sum((g.astype(np.float64) - r) ** 2)) for r, g in zip(reference, got, strict=True))
    den = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))
