"""fp16/bf16: which nodes compute in the low precision, and why every other stays fp32.

An autocast policy, as PyTorch's AMP, decided node by node in topological order:

1. Compute ops (``COMPUTE_OPS``: Conv, ConvTranspose, MatMul, Gemm, attention, RNNs) run in
   the low precision where the backend has kernels for it in that precision.
2. Ops whose precision is known to suffer stay fp32 (``KEEP_FP32``, with the reason):
   reductions, Softmax, normalisations, Exp/Log/Pow/Sqrt/Reciprocal, Resize, Range, NMS...
3. Every other op follows its inputs: low when all its float activation inputs are low
   (elementwise ops, activations, pooling, data movement), so a Conv-Add-Relu chain stays
   low and a cast happens once per boundary, not once per op.
4. Always fp32: nodes in subgraphs; shape arithmetic and constant subgraphs (no input
   derived from the model's inputs except through Shape/Size); probabilities (Sigmoid,
   Softmax...) that reach a graph output or a comparison through data movement only, as a
   threshold downstream flips on tiny errors; nodes whose constants do not fit the low type
   (PP-OCRv4 det's last BatchNormalization has a variance of 9.8e7, fp16 tops out at 65504:
   ONNX Runtime's fp16 converter clips it, and its binarized map drops to IoU 0.3-0.6).

Which input slots a low node converts comes from the op's schema: the slots whose type
parameter is bound by a float input and admits the low type (Resize's ``scales`` stays
float, Cast's output type is its attribute's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.quantize.output_heads import reaches

__all__ = ["COMPUTE_OPS", "KEEP_FP32", "NodePlan", "Plan", "fits", "plan_precision", "qualified_op"]

LOW_TYPES = {"fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}
# Relative RMS rounding error a constant may take in the low type (fp16 rounds to 2^-11
# relative, bf16 to 2^-8): more means it under- or overflowed.
FIT_TOLERANCE = {"fp16": 2.0**-10, "bf16": 2.0**-7}
_FIT_CHUNK = 1 << 22  # elements of a weight checked at a time

COMPUTE_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "Einsum",
    "Attention", "MultiHeadAttention", "GroupQueryAttention", "LSTM", "GRU", "RNN",
})
_REDUCTION = "reduction: a long sum loses precision (and overflows fp16)"
_NORM = "normalisation: mean and variance of the activations need fp32"
_RANGE = "exponent/power: overflows or underflows the low type"
KEEP_FP32: dict[str, str] = {
    **dict.fromkeys(("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                     "ReduceLogSumExp", "ReduceProd", "CumSum"), _REDUCTION),
    **dict.fromkeys(("Softmax", "LogSoftmax"), "softmax: exponentials summed along an axis"),
    **dict.fromkeys(("LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
                     "MeanVarianceNormalization", "LpNormalization", "RMSNormalization", "SkipLayerNormalization",
                     "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                     "EmbedLayerNormalization"), _NORM),
    **dict.fromkeys(("Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Softplus"), _RANGE),
    **dict.fromkeys(("Resize", "Upsample"), "Resize: interpolation coordinates in float; no low kernel on many backends"),
    **dict.fromkeys(("Range", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"),
                    "generates values: kept exact"),
    **dict.fromkeys(("NonMaxSuppression", "TopK", "RoiAlign"), "box and score thresholds"),
    "Cast": "a Cast sets its own output type",
}
_PROBABILITY_OPS = frozenset({"Sigmoid", "HardSigmoid", "Softmax", "LogSoftmax"})
_MOVEMENT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice", "Split", "Flatten",
                           "Identity", "Gather", "Expand"})
_COMPARISON_OPS = frozenset({"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal", "ArgMax", "ArgMin"})
_SHAPE_OPS = frozenset({"Shape", "Size"})
_VARIADIC = 2  # onnx.defs.OpSchema.FormalParameterOption.Variadic


@dataclass
class NodePlan:
    """One node with float inputs or outputs: low or not (and why), and its low slots."""

    low: bool
    reason: str = ""  # why it stays fp32; "" when low
    inputs: tuple[int, ...] = ()  # input slots converted to the low type
    outputs: tuple[int, ...] = ()  # output slots that become the low type


@dataclass
class Plan:
    precision: str
    nodes: dict[ir.Node, NodePlan] = field(default_factory=dict)

    @property
    def low_type(self) -> ir.DataType:
        return LOW_TYPES[self.precision]

    def is_low(self, node: ir.Node) -> bool:
        plan = self.nodes.get(node)
        return plan is not None and plan.low


def plan_precision(
    model: ir.Model,
    precision: str,
    *,
    kernels: frozenset[str] | None,
    compute: frozenset[str] = COMPUTE_OPS,
    forced: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
    provider: str = "the backend",
) -> Plan:
    """The plan for every main-graph node of ``model`` (topologically sorted) with a float
    input or output. ``kernels``: op types the backend runs in ``precision`` (None: any the
    ONNX schema allows); ``compute``: the op types that start a low region; ``forced``: op
    types the user asked for, run low even if listed in KEEP_FP32; ``exclude``: node names
    kept fp32 (the user's, and the guard's)."""
    planner = _Planner(model, precision, kernels=kernels, compute=compute, forced=forced, exclude=exclude,
                       provider=provider)
    return planner.plan


class _Planner:
    """Walks the graph once, in order; ``live`` and ``low_values`` grow as it goes."""

    def __init__(self, model: ir.Model, precision: str, *, kernels, compute, forced, exclude, provider) -> None:
        self.precision, self.low_str = precision, _type_str(LOW_TYPES[precision])
        self.kernels, self.compute, self.forced, self.exclude, self.provider = kernels, compute, forced, exclude, provider
        self.plan = Plan(precision)
        graph = model.graph
        dtypes = _dtypes(model)
        opsets = dict(model.opset_imports)
        self.live: set[ir.Value] = {v for v in graph.inputs if not v.is_initializer()}
        self.low_values: set[ir.Value] = set()
        self.probabilities = _thresholded_probabilities(graph)
        for node in graph:
            is_live = node.op_type not in _SHAPE_OPS and any(v in self.live for v in node.inputs if v is not None)
            if is_live:
                self.live.update(node.outputs)
            floats = [i for i, v in enumerate(node.inputs) if v is not None and dtypes.get(v) == ir.DataType.FLOAT]
            if not floats and not any(dtypes.get(v) == ir.DataType.FLOAT for v in node.outputs):
                continue
            reason, slots, out_slots = self._decide(node, _schema(node, opsets), floats, is_live)
            reason = reason or _unfit_constant(node, slots, precision)
            if reason:
                self.plan.nodes[node] = NodePlan(False, reason)
            else:
                self.plan.nodes[node] = NodePlan(True, "", slots, out_slots)
                self.low_values.update(node.outputs[i] for i in out_slots)

    def _decide(self, node: ir.Node, schema, floats: list[int], is_live: bool) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
        """(reason to stay fp32 or "", low input slots, low output slots)."""
        op, precision = node.op_type, self.precision
        if node.name in self.exclude:
            return "excluded (by the user or the accuracy guard)", (), ()
        if not is_live:
            return "shape arithmetic or constant subgraph", (), ()
        if op in KEEP_FP32 and op not in self.forced:
            return KEEP_FP32[op], (), ()
        if node in self.probabilities and op not in self.forced:
            return "probabilities compared with a threshold downstream (a graph output or a comparison)", (), ()
        if schema is None:
            return f"no schema known for {node.domain or 'ai.onnx'}::{op}", (), ()
        if not floats:
            return "no float input", (), ()
        allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        by_param: dict[str | None, list[int]] = {}
        for i in floats:
            by_param.setdefault(_param(schema.inputs, i), []).append(i)
        convertible = {p for p in by_param if p in allowed and self.low_str in allowed[p]}
        blocked = [p for p, slots in by_param.items() if p not in convertible and any(node.inputs[i] in self.live for i in slots)]
        if blocked or not convertible:
            return f"ONNX {op}-{schema.since_version} has no {precision} type for its float input", (), ()
        slots = tuple(i for i in floats if _param(schema.inputs, i) in convertible)
        out_slots = tuple(i for i in range(len(node.outputs)) if _param(schema.outputs, i) in convertible)
        if self.kernels is not None and qualified_op(node) not in self.kernels:
            return f"no {precision} kernel on {self.provider}", (), ()
        if op in self.compute:
            return "", slots, out_slots
        activations = [node.inputs[i] for i in slots if node.inputs[i] in self.live]
        if all(v in self.low_values for v in activations):
            return "", slots, out_slots
        return "follows fp32 inputs", (), ()


def qualified_op(node: ir.Node) -> str:
    """``Conv`` for ai.onnx ops, ``com.microsoft::Attention`` for the others (as Capabilities names them)."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _unfit_constant(node: ir.Node, slots: tuple[int, ...], precision: str) -> str:
    for i in slots:
        value = node.inputs[i]
        if value is not None and value.const_value is not None and not fits(value.const_value.numpy(), precision):
            return f"constant '{value.name}' does not fit {precision}"
    return ""


def fits(array: np.ndarray, precision: str) -> bool:
    """Whether ``array`` survives rounding to ``precision``: nothing overflows to infinity and
    the relative RMS error stays within rounding (a flushed epsilon or a clipped variance fails).
    Read in chunks: float64 copies of a whole 1 GB weight took 10 GB at once."""
    flat = np.asarray(array).reshape(-1)
    low_type = LOW_TYPES[precision].numpy()
    error2 = magnitude2 = 0.0
    for start in range(0, flat.size, _FIT_CHUNK):
        part = flat[start:start + _FIT_CHUNK]
        ref = part.astype(np.float64)
        with np.errstate(over="ignore"):
            low = part.astype(np.float32).astype(low_type).astype(np.float64)
        finite = np.isfinite(ref)
        if not np.array_equal(finite, np.isfinite(low)):
            return False
        if not finite.all():
            ref, low = ref[finite], low[finite]
        error2 += float(np.dot(low - ref, low - ref))
        magnitude2 += float(np.dot(ref, ref))
    return error2 <= FIT_TOLERANCE[precision] ** 2 * magnitude2


def _thresholded_probabilities(graph: ir.Graph) -> set[ir.Node]:
    """Sigmoid/Softmax nodes whose output reaches a graph output or a comparison through
    data movement only."""

    def thresholded(value: ir.Value) -> bool:
        return value.is_graph_output() or any(use.node.op_type in _COMPARISON_OPS for use in value.uses())

    return {node for node in graph if node.op_type in _PROBABILITY_OPS and reaches(node, _MOVEMENT_OPS, thresholded)}


def _param(formals, index: int) -> str | None:
    """The type string of formal parameter ``index`` (the last one repeats when variadic)."""
    if index < len(formals):
        return formals[index].typeStr
    if formals and int(formals[-1].option) == _VARIADIC:
        return formals[-1].typeStr
    return None


def _type_str(dtype: ir.DataType) -> str:
    return {ir.DataType.FLOAT16: "tensor(float16)", ir.DataType.BFLOAT16: "tensor(bfloat16)",
            ir.DataType.FLOAT: "tensor(float)"}[dtype]


@functools.cache
def _all_schemas() -> dict[tuple[str, str], list]:
    """ONNX Runtime's operator schemas (ai.onnx and its contrib domains) by (domain, op), oldest first."""
    # ONNX Runtime's Python API has no other way to list its operator schemas
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    table: dict[tuple[str, str], list] = {}
    for schema in ort_state.get_all_operator_schema():
        table.setdefault((schema.domain, schema.name), []).append(schema)
    for versions in table.values():
        versions.sort(key=lambda s: s.since_version)
    return table


def _schema(node: ir.Node, opsets: dict[str, int]):
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    version = node.version or opsets.get(domain, opsets.get("ai.onnx", 0) if domain == "" else 1)
    candidates = [s for s in _all_schemas().get((domain, node.op_type), []) if s.since_version <= version]
    return candidates[-1] if candidates else None


def _dtypes(model: ir.Model) -> dict[ir.Value, ir.DataType | None]:
    """Every value's element type: as recorded in the model, else bound through the schema
    (an output takes the type of the inputs sharing its type parameter; Cast its ``to``)."""
    opsets = dict(model.opset_imports)
    types: dict[ir.Value, ir.DataType | None] = {}
    for value in [*model.graph.inputs, *model.graph.initializers.values()]:
        types[value] = value.dtype
    for node in model.graph:
        for value in node.inputs:
            if value is not None and value not in types:
                types[value] = value.dtype
        schema = _schema(node, opsets)
        bound: dict[str, ir.DataType] = {}
        if schema is not None:
            for i, value in enumerate(node.inputs):
                param = _param(schema.inputs, i)
                if value is not None and param is not None and types.get(value) is not None:
                    bound.setdefault(param, types[value])
        for i, value in enumerate(node.outputs):
            dtype = value.dtype
            if dtype is None and node.op_type == "Cast" and "to" in node.attributes:
                dtype = ir.DataType(node.attributes["to"].as_int())
            if dtype is None and schema is not None:
                param = _param(schema.outputs, i)
                dtype = bound.get(param) if param is not None else None
                if dtype is None and param in _FIXED_TYPES:
                    dtype = _FIXED_TYPES[param]
            types[value] = dtype
    return types


_FIXED_TYPES = {"tensor(float)": ir.DataType.FLOAT, "tensor(int64)": ir.DataType.INT64, "tensor(bool)": ir.DataType.BOOL,
                "tensor(int32)": ir.DataType.INT32}
