"""int8 static quantization (QDQ): calibrate, write QDQ, guard the budget, check kernels.

1. Convert to opset 13 if per-channel weights need it (quantize_static does not, and
   writes an invalid model).
   With ``smooth=ALPHA``, SmoothQuant first (passes/smooth.py); the Mul nodes smoothing
   inserted (here or by an earlier ``smooth`` pass) stay float.
2. Calibrate the activations around the ops the backend runs in integer kernels
   (``Capabilities.int8_ops``), with ``calibration=minmax|percentile|entropy|mse``.
3. Write QDQ: int8 symmetric per-channel weights, activations as the backend prefers
   (uint8 asymmetric on ONNX Runtime CPU), int32 biases; then correct the biases for the
   mean shift the rounded weights cause (bias_correction.py) and write QDQ again.
4. Guard (on by default): if the held-out drift exceeds the budget (``accuracy.max_drift``,
   default DEFAULT_BUDGET), keep the most sensitive layers in float (guard.py).
5. Check with ONNX Runtime's optimized graph that integer kernels really run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.quantize.bias_correction import apply_bias_corrections, bias_corrections
from onnxsmith.passes.quantize.calibration import collect_ranges
from onnxsmith.passes.quantize.guard import guard_budget
from onnxsmith.passes.quantize.kernels import integer_kernel_check
from onnxsmith.passes.quantize.qdq import quantize_qdq, upgrade_for_per_channel
from onnxsmith.passes.smooth import smooth_model, smoothing_nodes

if TYPE_CHECKING:
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

__all__ = ["WEIGHTED_OPS", "quantize_int8"]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def quantize_int8(options: QuantizePass, model: ir.Model, ctx: Context) -> PassResult:
    """``model`` (untouched) quantized to int8 QDQ as ``self``'s options say."""
    calibration = ctx.require_calibration(options.name)
    capabilities = ctx.backend.capabilities if ctx.backend is not None else None
    op_types = list(options.ops or (capabilities.int8_ops if capabilities else WEIGHTED_OPS))
    activations = options.activations if options.activations != "auto" else (capabilities.int8_activations if capabilities else "uint8")
    notes: list[str] = []
    counts: dict[str, int] = {}

    work = ir.from_proto(ir.to_proto(model))  # never touch the caller's model
    if options.per_channel:
        work, from_opset = upgrade_for_per_channel(work)
        if from_opset is not None:
            notes.append(f"converted from opset {from_opset} to 13: per-channel DequantizeLinear needs it")
    if options.smooth:
        smoothed = smooth_model(work, calibration.feeds(), alpha=options.smooth, exclude=options.exclude, cache=ctx.activations)
        counts["layers_smoothed"] = sum(len(record["layers"]) for record in smoothed)
    smoothing = smoothing_nodes(work)  # smooth's Muls stay float: quantizing their input would undo them
    tensors = _activation_tensors(work, op_types)
    ranges = collect_ranges(work, tensors, calibration.feeds(), method=options.calibration, percentile=options.percentile,
                            cache=ctx.activations)

    corrections: dict[str, np.ndarray] = {}

    def quantize(exclude: list[str]) -> ir.Model:
        excluded = [*options.exclude, *smoothing, *exclude]
        source = work
        if corrections:
            source = apply_bias_corrections(work, {k: v for k, v in corrections.items() if k not in excluded})
        return quantize_qdq(source, ranges, op_types=op_types, exclude=excluded,
                            per_channel=options.per_channel, activations=activations,
                            reduce_range=bool(capabilities and capabilities.int8_reduce_range and activations == "uint8"))

    quantized = quantize([])
    if options.bias_correction:
        layers = [n.name for n in work.graph if n.op_type in WEIGHTED_OPS and n.name not in options.exclude]
        corrections.update(bias_corrections(work, quantized, layers, calibration.feeds()))
        if corrections:
            quantized = quantize([])
        counts["biases_corrected"] = len(corrections)
    kept: list[tuple[str, float]] = []
    if options.guard:
        layers = [n for n in work.graph if n.op_type in op_types and n.name not in [*options.exclude, *smoothing]]
        outcome = guard_budget(work, quantized, layers, quantize, ctx)
        quantized, kept = outcome.model, outcome.kept_float
        counts["guard_probes"] = outcome.probes
        notes.extend(outcome.notes)

    provider = getattr(ctx.backend, "provider", None)
    if provider is not None:
        kernel_counts, fallbacks = integer_kernel_check(quantized, provider)
        counts.update(kernel_counts)
        notes.extend(f"runs as float after DequantizeLinear on {provider}: {name}" for name in fallbacks[:10])
    counts["layers_quantized"] = sum(1 for n in quantized.graph if n.op_type in WEIGHTED_OPS and _int8_weight(n))
    counts["layers_float"] = len(kept) + len(options.exclude)
    quantized.metadata_props.update(model.metadata_props)
    return PassResult(quantized, modified=True, counts=counts, notes=notes)


def _activation_tensors(model: ir.Model, op_types: list[str]) -> list[str]:
    """Float tensors entering or leaving the ops to quantize (the ones needing a range)."""
    inferred = onnx.shape_inference.infer_shapes(ir.to_proto(model))
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    names: list[str] = []
    for node in model.graph:
        if node.op_type not in op_types:
            continue
        for value in [*node.inputs, *node.outputs]:
            if value is None or value.const_value is not None or value.name in model.graph.initializers:
                continue
            if types.get(value.name) == onnx.TensorProto.FLOAT and value.name not in names:
                names.append(value.name)
    return names


def _int8_weight(node: ir.Node) -> bool:
    """Whether the layer's weight (input 1) is int8 data read through DequantizeLinear; a layer
    kept in float may still read a dequantized activation on input 0, so that input is no sign."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    producer = weight.producer() if weight is not None else None
    return (producer is not None and producer.op_type == "DequantizeLinear"
            and producer.inputs[0] is not None and producer.inputs[0].const_value is not None)
