"""``quantize``: int8 static quantization (QDQ), calibrated, guarded by an accuracy budget.

1. Convert to opset 13 if per-channel weights need it (quantize_static does not, and
   writes an invalid model).
2. Calibrate the activations around the ops the backend runs in integer kernels
   (``Capabilities.int8_ops``), with ``calibration=minmax|percentile|entropy|mse``.
3. Write QDQ: int8 symmetric per-channel weights, activations as the backend prefers
   (uint8 asymmetric on ONNX Runtime CPU), int32 biases.
4. Guard (on by default): if the held-out drift exceeds the budget (``accuracy.max_drift``,
   default DEFAULT_BUDGET), keep the most sensitive layers in float (guard.py).
5. Check with ONNX Runtime's optimized graph that integer kernels really run.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import onnx
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.metrics import compare_outputs, drift
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.passes.quantize.calibration import Method, collect_ranges
from onnxsmith.passes.quantize.guard import layer_sensitivity, search_float_layers
from onnxsmith.passes.quantize.kernels import integer_kernel_check
from onnxsmith.passes.quantize.qdq import quantize_qdq, upgrade_for_per_channel
from onnxsmith.registry import register_pass
from onnxsmith.runtime import make_session, run_all

__all__ = ["DEFAULT_BUDGET", "QuantizePass"]

DEFAULT_BUDGET = 0.05  # drift (mean per-channel relative RMS error) the guard allows by default
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@register_pass
@dataclasses.dataclass(frozen=True)
class QuantizePass(Pass):
    name = "quantize"
    summary = "int8 static quantization (QDQ, per-channel weights), calibrated and guarded by the accuracy budget."
    exact = False
    needs_calibration = True
    in_place = False  # type: ignore[assignment]
    changes_input = False  # type: ignore[assignment]

    mode: Literal["int8"] = dataclasses.field(default="int8", metadata={"doc": "precision (more modes come)"})
    calibration: Method = dataclasses.field(default="percentile", metadata={"doc": "how activation ranges are chosen"})
    percentile: float = dataclasses.field(default=99.999, metadata={"doc": "for calibration=percentile"})
    per_channel: bool = dataclasses.field(default=True, metadata={"doc": "one weight scale per output channel"})
    activations: Literal["auto", "uint8", "int8"] = dataclasses.field(default="auto", metadata={"doc": "activation type (auto: the backend's)"})
    ops: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "op types to quantize (default: the backend's int8 ops)"})
    exclude: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "node names to keep in float"})
    guard: bool = dataclasses.field(default=True, metadata={"doc": "keep sensitive layers in float to meet the budget"})

    def __post_init__(self) -> None:
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError("percentile must be between 90 and 100")

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        calibration = ctx.require_calibration(self.name)
        capabilities = ctx.backend.capabilities if ctx.backend is not None else None
        op_types = list(self.ops or (capabilities.int8_ops if capabilities else WEIGHTED_OPS))
        activations = self.activations if self.activations != "auto" else (capabilities.int8_activations if capabilities else "uint8")
        notes: list[str] = []
        counts: dict[str, int] = {}

        work = ir.from_proto(ir.to_proto(model))  # never touch the caller's model
        if self.per_channel:
            work, from_opset = upgrade_for_per_channel(work)
            if from_opset is not None:
                notes.append(f"converted from opset {from_opset} to 13: per-channel DequantizeLinear needs it")
        tensors = _activation_tensors(work, op_types)
        ranges = collect_ranges(work, tensors, calibration.feeds(), method=self.calibration, percentile=self.percentile,
                                cache=ctx.activations)

        def quantize(exclude: list[str]) -> ir.Model:
            return quantize_qdq(work, ranges, op_types=op_types, exclude=[*self.exclude, *exclude],
                                per_channel=self.per_channel, activations=activations)

        quantized = quantize([])
        kept: list[tuple[str, float]] = []
        if self.guard and ctx.evaluation is not None and ctx.reference is not None:
            budget = ctx.max_drift if ctx.max_drift is not None else DEFAULT_BUDGET
            evaluate = _evaluator(ctx)
            value = evaluate(quantized)
            counts["guard_probes"] = 1
            if value > budget:
                layers = [n for n in work.graph if n.op_type in op_types and n.name not in self.exclude]
                sensitivity = layer_sensitivity(work, quantized, layers, calibration.feeds())
                ranked = sorted(sensitivity.items(), key=lambda item: -item[1])
                result = search_float_layers(ranked, quantize, evaluate, budget)
                quantized, kept = result.model, result.kept_float
                counts["guard_probes"] += result.probes
                notes.append(f"guard: drift {value:.4g} with every layer quantized exceeds the budget {budget:g}; "
                             f"{len(kept)} most sensitive layer(s) kept in float, drift now {result.drift:.4g}")
                if result.drift > budget:
                    notes.append(f"guard: the budget {budget:g} is not reachable with int8 on this model; the artifact is mostly float")
            notes.extend(f"kept in float: {name} (sensitivity {s:.4g})" for name, s in kept)

        provider = getattr(ctx.backend, "provider", None)
        if provider is not None:
            kernel_counts, fallbacks = integer_kernel_check(quantized, provider)
            counts.update(kernel_counts)
            notes.extend(f"runs as float after DequantizeLinear on {provider}: {name}" for name in fallbacks[:10])
        counts["layers_quantized"] = sum(1 for n in quantized.graph if n.op_type in WEIGHTED_OPS and _fed_by_dq(n))
        counts["layers_float"] = len(kept) + len(self.exclude)
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


def _evaluator(ctx: Context):
    feeds = ctx.evaluation.feeds()

    def evaluate(candidate: ir.Model) -> float:
        return drift(compare_outputs(ctx.reference, run_all(make_session(candidate, optimize=False), feeds)))

    return evaluate


def _fed_by_dq(node: ir.Node) -> bool:
    value = node.inputs[0] if node.inputs else None
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type == "DequantizeLinear"
