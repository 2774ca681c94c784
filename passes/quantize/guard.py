"""The accuracy guard: keep the most sensitive layers in float until the budget is met.

1. Quantize every eligible layer; if the drift (``ctx.metric``, by default
   onnxsmith.metrics.default_drift, on the held-out feeds) is within budget, done.
2. Rank layers by sensitivity: the error a layer adds, measured as the relative RMS error
   of its output as its readers see it (after the activation that follows it) in the fully
   quantized model minus that of its inputs (both against the float model on calibration
   feeds), so upstream errors are not blamed on it. Where each layer's int8 speed gain was
   measured on the target (layer_speed.py), by sensitivity per ms gained instead.
3. Bisection on k, the number of top-ranked layers kept in float: the smallest k whose
   model meets the budget (log2(n) quantize-and-evaluate probes).
4. Refinement by measured interactions (give_back): the kept layers are tried quantized
   again one at a time, least sensitive first, for a few probes.
5. Where that keeps more than one layer float, a second opinion: steps 3-4 again, ranked
   by each layer's own error (own_error_sensitivity); the plan that gives up less measured
   gain (or, without gains, fewer layers) is kept.

Activations are compared through the measurement service (``ctx.measure.compare``): one
feed and a bounded chunk of tensors at a time, so memory does not grow with the data or
the model. Candidates' outputs come from ``ctx.measure.outputs``, so the pipeline's check
of the chosen model reuses the guard's last run of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.measure import Measurements
from onnxsmith.metrics import DEFAULT_DRIFT_BUDGET
from onnxsmith.passes.quantize.range_search import read_value

__all__ = ["DEFAULT_BUDGET", "GuardResult", "give_back", "gives_up_less", "guard_budget", "layer_sensitivity",
           "own_error_sensitivity", "relative_errors", "search_float_layers"]

DEFAULT_BUDGET = DEFAULT_DRIFT_BUDGET  # what the guard allows when the context sets no budget (library use)
REFINE_PROBES = 4  # give-back probes after the bisection
GAIN_FLOOR_MS = 1e-3


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
    *,
    refine: int = REFINE_PROBES,
    gains: dict[str, float] | None = None,
) -> GuardResult:
    """Keep the fewest, most sensitive ``layers`` in float so the held-out drift meets the budget.

    With ``gains`` (each layer's measured int8 speed gain, ms), layers are ranked by
    sensitivity per ms gained: a sensitive layer that buys little speed goes float first.

    ``quantize(names)`` rebuilds the quantized model with ``names`` left in float; any mode
    (int8 static, dynamic...) can be guarded this way. Without evaluation data the model
    is returned as is, with a note saying the guard could not run.
    """
    if ctx.evaluation is None or ctx.reference is None:
        return GuardResult(quantized, float("nan"), probes=0, notes=["guard: no held-out data, so the drift was not checked"])
    started = time.perf_counter()
    budget = ctx.max_drift if ctx.max_drift is not None else DEFAULT_BUDGET
    feeds = ctx.evaluation.feeds()

    def evaluate(candidate: ir.Model) -> float:
        return ctx.drift(ctx.measure.outputs(candidate, feeds, ctx.backend or get_backend("cpu")))

    value = evaluate(quantized)
    if value <= budget:
        return GuardResult(quantized, value, probes=1, notes=[
            f"guard: drift {value:.4g} with every layer quantized is within the budget {budget:g} "
            f"(1 probe, {time.perf_counter() - started:.1f} s)"])
    calibration = ctx.require_calibration("quantize")

    def search(sensitivity: dict[str, float]) -> tuple[GuardResult, int]:
        ranked = sorted(sensitivity.items(), key=lambda item: -_cost(item, gains))
        found = search_float_layers(ranked, quantize, evaluate, budget)
        searched = len(found.kept_float)
        if found.drift <= budget and refine:
            found = give_back(found, quantize, evaluate, budget, refine)
        return found, searched

    result, searched = search(layer_sensitivity(ctx.measure, float_model, quantized, layers, calibration.feeds()))
    how = "sensitive"
    own_errors = own_error_sensitivity(ctx.measure, quantized, layers, calibration.feeds()) if len(result.kept_float) > 1 else {}
    if own_errors:
        other, other_searched = search(own_errors)
        other.probes += result.probes
        if gives_up_less(other, result, budget, gains):
            result, searched, how = other, other_searched, "sensitive by their own error"
        else:
            result.probes = other.probes
    result.probes += 1
    result.notes.append(f"guard: drift {value:.4g} with every layer quantized exceeds the budget {budget:g}; "
                        f"{len(result.kept_float)} of {len(layers)} layer(s) kept in float (bisection: the {searched} most "
                        f"{how}, then {searched - len(result.kept_float)} given back), drift now {result.drift:.4g}; "
                        f"{result.probes} probes in {time.perf_counter() - started:.1f} s")
    if result.drift > budget:
        result.notes.append(f"guard: the budget {budget:g} is not reachable on this model; the artifact is mostly float")
    result.notes.extend(f"kept in float: {name} (sensitivity {s:.4g})" for name, s in result.kept_float)
    return result


def gives_up_less(candidate: GuardResult, current: GuardResult, budget: float, gains: dict[str, float] | None) -> bool:
    """Whether ``candidate`` meets the budget and gives up less than ``current``: less measured
    gain in the layers it keeps float, or, without gains, fewer layers kept float."""
    def given_up(result: GuardResult) -> float:
        if gains is None:
            return float(len(result.kept_float))
        return sum(max(gains.get(name, 0.0), 0.0) for name, _ in result.kept_float)

    return candidate.drift <= budget and given_up(candidate) < given_up(current)


def _cost(item: tuple[str, float], gains: dict[str, float] | None) -> float:
    """What keeping a layer in int8 costs per unit of what it buys: its sensitivity, per ms of
    measured gain when there are gains (a floor of 1 us: no layer buys less than nothing)."""
    name, sensitivity = item
    if gains is None:
        return sensitivity
    return sensitivity / max(gains.get(name, 0.0), GAIN_FLOOR_MS)


def layer_sensitivity(
    measure: Measurements, float_model: ir.Model, quantized: ir.Model, layers: list[ir.Node], feeds: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Per layer (node of the float model), the relative error it adds in ``quantized``: the
    error of its output as its readers see it (after the activation that follows it: a
    clipped pre-activation is no error after SiLU) minus the largest error among its
    activation inputs."""
    quantized_names = {v.name for n in quantized.graph for v in n.outputs} | {v.name for v in quantized.graph.inputs}
    pairs = {}
    for node in layers:
        output = read_value(node.outputs[0])
        if output.name not in quantized_names:
            output = node.outputs[0]
        if output.name not in quantized_names:
            continue
        inputs = [v.name for v in node.inputs if v is not None and v.name in quantized_names and v.const_value is None]
        pairs[node.name] = (inputs, output.name)
    tensors = sorted({t for inputs, out in pairs.values() for t in [*inputs, out]})
    error = relative_errors(measure, float_model, quantized, tensors, feeds)
    return {name: max(0.0, error[out] - max((error[i] for i in inputs), default=0.0)) for name, (inputs, out) in pairs.items()}


def own_error_sensitivity(
    measure: Measurements, quantized: ir.Model, layers: list[ir.Node], feeds: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Per layer (node of the float model), the relative error it adds itself in ``quantized``:
    its output there against the same layer run in float (float weights) on the very input it
    gets there, before that input's quantization. The guard's second opinion: the difference
    of errors (layer_sensitivity) reads 0 where the error arriving from upstream is larger than
    the layer's output error (a wide layer averages it out). On a PP-OCRv4 rec plan (its cost
    table replayed with --costs), four of 15 layers read 0 there, and keeping either of two of
    them float alone took the held-out drift from 4 lines of 16 to 1; the first search kept 13
    of the 15 float (1.33x over fp32), the search by own error 2 (1.95x), text held. On the
    dense plans of PP-OCRv4 det, rec and YOLOv8n it found nothing better (20, 36 and 20 layers
    float stand), and an earlier form of it, used as the only ranking, kept more float there
    (39, 44, 36): so it is a second search, kept only where it gives up less. Layers whose node
    the rewrite renamed are left out."""
    shadowed, measured, pairs = _float_shadows(quantized, layers)
    if not pairs:
        return {}
    error = relative_errors(measure, shadowed, measured, sorted(pairs.values()), feeds)
    return {name: error[probe] for name, probe in pairs.items()}


_SHADOW = "__float_shadow"


def _float_shadows(quantized: ir.Model, layers: list[ir.Node]) -> tuple[ir.Model, ir.Model, dict[str, str]]:
    """Two copies of ``quantized`` that expose, under one probe name per layer, the layer's
    float result (a copy of the float node with its float weights, reading what reaches the
    layer's node in ``quantized`` as it was before its quantization, or as quantized where
    the quantization absorbed an activation) and the node's result there; and the probe
    name of each layer it could do this for (its node kept its name)."""
    shadowed, measured = quantized.clone(), quantized.clone()
    shadowed_nodes = {node.name: node for node in shadowed.graph}
    measured_nodes = {node.name: node for node in measured.graph}
    pairs: dict[str, str] = {}
    for layer in layers:
        node, reading = shadowed_nodes.get(layer.name), measured_nodes.get(layer.name)
        if node is None or reading is None or node.op_type != layer.op_type or len(node.inputs) != len(layer.inputs):
            continue
        inputs: list[ir.Value | None] = []
        for float_input, quantized_input in zip(layer.inputs, node.inputs, strict=True):
            if float_input is None or float_input.const_value is None:
                source = _before_quantization(quantized_input)
                # where an activation was folded into the quantization (Relu into Q's range), the
                # tensor before it is not the float input: read the quantized value then
                inputs.append(source if source is not None and float_input is not None
                              and source.name == float_input.name else quantized_input)
            else:  # a weight: the float model's own tensor, shared, under a name of its own
                weight = ir.Value(name=f"{float_input.name}{_SHADOW}_{layer.name}", shape=float_input.shape,
                                  type=float_input.type, const_value=float_input.const_value)
                shadowed.graph.register_initializer(weight)
                inputs.append(weight)
        probe = f"{layer.name}{_SHADOW}"
        shadowed.graph.append(ir.Node(layer.domain, layer.op_type, inputs, attributes=list(layer.attributes.values()),
                                      outputs=[ir.Value(name=probe)], name=probe, overload=layer.overload))
        measured.graph.append(ir.Node("", "Identity", [reading.outputs[0]], outputs=[ir.Value(name=probe)], name=probe))
        pairs[layer.name] = probe
    return shadowed, measured, pairs


def _before_quantization(value: ir.Value | None) -> ir.Value | None:
    """The tensor ``value`` was before a QuantizeLinear -> DequantizeLinear pair, or ``value``."""
    dequantize = value.producer() if value is not None else None
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return value
    quantize = dequantize.inputs[0].producer() if dequantize.inputs[0] is not None else None
    return quantize.inputs[0] if quantize is not None and quantize.op_type == "QuantizeLinear" else value


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


def give_back(
    found: GuardResult,
    quantize: Callable[[list[str]], ir.Model],
    evaluate: Callable[[ir.Model], float],
    budget: float,
    probes: int,
) -> GuardResult:
    """Refine a bisection's float set by measured interactions: the ranking comes from the
    fully quantized model, where a layer's error is partly its neighbours' amplified; once the
    most sensitive layers are float, some of the others are harmless. Try quantizing the kept
    layers again, least sensitive first, one probe each (at most ``probes``), keeping every
    give-back the budget allows."""
    best, kept, probes_used = found, list(found.kept_float), found.probes
    for layer in sorted(found.kept_float, key=lambda item: item[1])[:probes]:
        trial = [item for item in kept if item[0] != layer[0]]
        candidate = quantize([name for name, _ in trial])
        value = evaluate(candidate)
        probes_used += 1
        if value <= budget:
            kept = trial
            best = GuardResult(candidate, value, trial, notes=list(found.notes))
    best.probes = probes_used
    return best


def relative_errors(
    measure: Measurements, float_model: ir.Model, quantized: ir.Model, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Per tensor, RMS(quantized - float) / RMS(float) over ``feeds``."""
    energies = measure.compare(float_model, quantized, tensors, feeds)
    return {t: float(np.sqrt(noise / signal)) if signal > 0 else float(np.sqrt(noise)) for t, (noise, signal) in energies.items()}
