"""Which nodes int8 static quantization touches, and which tensors need a calibrated range.

The default op set is the one that makes ONNX Runtime CPU faster without adding rounding
steps that buy no speed (measured on the real models: docs/benchmarks.md "## int8 plan",
from bench/int8_study.py, undoes one rule at a time):

1. Layers: Conv / ConvTranspose / MatMul / Gemm whose weight is a constant. Their weights
   become int8, their activation inputs are quantized; a MatMul of two activations
   (attention scores) stays float: rounding both operands, then the softmax, is where
   transformers lose accuracy, for little time.
2. A MatMul's or Gemm's output stays float: ONNX Runtime runs ``DQ -> MatMul`` as
   MatMulIntegerToFloat (int32 accumulation, float out), so rounding the output again would
   cost accuracy and save nothing. A Conv's output is quantized: QLinearConv needs it.
3. Follow ops reuse the int8 data of a quantized producer with the same scale, so they add no
   rounding: Relu and Clip fold into the Conv's output range; MaxPool, Resize and the
   reshaping ops run on the int8 data (ONNX Runtime drops their Q/DQ pair).
4. Output heads stay float: a layer whose output reaches a graph output through nothing but
   bias adds, reshapes, Concat/Split/Slice and Softmax/Sigmoid. Applications decide on those
   values (argmax per CTC step, a score threshold, a box from a DFL softmax), and a near-tie
   flips on rounding that costs nothing elsewhere; heads are a small share of the time.
5. Speed rule: a layer stays float when int8 would slow it down. The static rule here was
   measured on ONNX Runtime CPU, AVX2; by default int8.py then times every other planned
   layer on the target backend (layer_speed.py) and keeps float the ones no faster. MLAS's
   int8 depthwise convolutions run at about half the speed of its float NCHWc ones, and a
   layer with fewer than MIN_INTENSITY multiply-adds per activation value it reads or
   writes spends more on quantizing and dequantizing those values (and on layout changes)
   than int8 arithmetic saves: the 3-channel stems, squeeze-excite and small pointwise
   convolutions. These are also the layers int8 hurts most: leaving them float took
   PP-OCRv4 rec's held-out text agreement from 0.84 to 1.00, YOLOv8n's F1 from 0.91 to 0.98
   and det from 0.91x to 1.10x of fp32's speed.
6. Everything else (Add, Mul, Concat, Sigmoid, Softmax, SiLU...) stays float by default: each
   would round its inputs and outputs again (YOLOv8n lost its detections, MiniLM its
   embeddings, with them all quantized) for kernels that were not faster than the float ones
   on an AVX2 CPU. ``all_ops`` (``other_int8_ops``) adds the backend's other int8 ops as
   layers of their own: each is then timed on the target and guarded like a weighted layer,
   so the ones that are faster there and harmless to the metric run in int8.

``ops=[...]`` overrides the op set and quantizes what it lists as asked: rules 1 and 2 still
hold, rule 4 and the speed rule do not; other ops listed get quantized inputs and outputs, as
ONNX Runtime's quantizer does, and are layers the guard can keep float. Whatever it lists
the backend must run in int8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from onnxsmith.passes.quantize.output_heads import is_output_head
from onnxsmith.passes.quantize.qdq_select import OWN_RULES, SHARED_SCALE

__all__ = ["FOLLOW_OPS", "FLOAT_OUTPUT_OPS", "Int8Plan", "WEIGHTED_OPS", "default_op_types", "other_int8_ops", "plan_int8"]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
FOLLOW_OPS = ("Relu", "Clip", "MaxPool", "Resize", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice")
FLOAT_OUTPUT_OPS = ("MatMul", "Gemm")
MIN_INTENSITY = 32.0  # multiply-adds per activation value read or written below which int8 does not pay
_REMOVABLE = ("Relu", "Clip")  # the QDQ quantizer folds them into the producer's output range


@dataclass
class Int8Plan:
    op_types: list[str]
    layers: list[ir.Node]  # nodes to quantize that the guard and the timing judge one by one: weighted ones, and rule 6's
    float_layers: list[str] = field(default_factory=list)  # nodes of op_types kept float by rules 1, 4 and 5
    heads: list[str] = field(default_factory=list)  # of them, the output heads (rule 4)
    slow: dict[str, str] = field(default_factory=dict)  # of them, layers int8 would slow down: why
    tensors: list[str] = field(default_factory=list)  # float tensors that need a range
    float_output_ops: list[str] = field(default_factory=list)


def default_op_types(backend_ops: tuple[str, ...] | None) -> list[str]:
    """Weighted and follow ops that the backend runs in int8 (all of them without a backend)."""
    allowed = set(backend_ops) | set(_REMOVABLE) if backend_ops else None
    return [op for op in (*WEIGHTED_OPS, *FOLLOW_OPS) if allowed is None or op in allowed]


def other_int8_ops(backend_ops: tuple[str, ...]) -> list[str]:
    """The backend's int8 ops beyond the default set that the QDQ writer quantizes as ops of
    their own (inputs and outputs, rule 4 of qdq_select.py): Add, Mul, Concat, Sigmoid..."""
    default = {*WEIGHTED_OPS, *FOLLOW_OPS, *SHARED_SCALE, *OWN_RULES}
    return [op for op in backend_ops if op not in default]


def plan_int8(
    model: ir.Model, op_types: list[str], *, exclude: list[str] = (), heads: bool = True,
    min_intensity: float = MIN_INTENSITY,
) -> Int8Plan:
    """The plan for ``model`` over the nodes of ``op_types`` (rule 4 with ``heads``; the speed
    rule with ``min_intensity`` > 0)."""
    types = _float_types(model)
    plan = Int8Plan(op_types=list(op_types), layers=[], float_output_ops=list(FLOAT_OUTPUT_OPS))
    for node in model.graph:
        if node.op_type not in op_types or node.name in exclude:
            continue
        if node.op_type in WEIGHTED_OPS:
            if not _constant_weight(node):
                plan.float_layers.append(node.name)
                continue
            slow = _slow_in_int8(node, min_intensity) if min_intensity > 0 else None
            if slow:
                plan.float_layers.append(node.name)
                plan.slow[node.name] = slow
                continue
            if heads and is_output_head(node):
                plan.float_layers.append(node.name)
                plan.heads.append(node.name)
                continue
            plan.layers.append(node)
        elif node.op_type not in FOLLOW_OPS:  # rule 6's ops, asked for
            if heads and is_output_head(node):
                plan.float_layers.append(node.name)
                plan.heads.append(node.name)
                continue
            plan.layers.append(node)
        values = [*node.inputs, *node.outputs]
        if node.op_type in WEIGHTED_OPS and node.op_type in plan.float_output_ops:
            values = list(node.inputs)
        elif node.op_type in _REMOVABLE:
            values = list(node.outputs)  # the range a folded Relu/Clip gives its producer
        elif node.op_type in FOLLOW_OPS:
            values = []  # they take their input's scale
        for value in values:
            if value is None or value.const_value is not None or value.name in model.graph.initializers:
                continue
            if types.get(value.name) == onnx.TensorProto.FLOAT and value.name not in plan.tensors:
                plan.tensors.append(value.name)
    return plan


def _slow_in_int8(node: ir.Node, min_intensity: float) -> str | None:
    """Why int8 would make this layer slower than float, or None: a depthwise Conv (MLAS's
    int8 depthwise kernels run at half the speed of its float NCHWc ones), or too few
    multiply-adds per value read and written to pay for quantizing and dequantizing them."""
    weight = node.inputs[1].const_value
    if node.op_type in ("Conv", "ConvTranspose"):
        shape = list(weight.shape)
        if len(shape) < 3:
            return None
        group = node.attributes.get_int("group", 1)
        c_out = shape[0] if node.op_type == "Conv" else shape[1] * group
        c_in = shape[1] * group if node.op_type == "Conv" else shape[0]
        kernel = int(np.prod(shape[2:]))
        if group > 1 and shape[1] == 1:
            return "depthwise convolution: int8 kernels are slower than float ones here"
        stride = int(np.prod(node.attributes.get_ints("strides", [1] * (len(shape) - 2))))
        macs = c_out * (c_in // group) * kernel
        moved = c_in * stride + c_out if node.op_type == "Conv" else c_in + c_out * stride
    else:
        shape = list(weight.shape)
        if len(shape) != 2:
            return None
        k, n = shape if not (node.op_type == "Gemm" and node.attributes.get_int("transB", 0)) else shape[::-1]
        macs, moved = k * n, k + n
    intensity = macs / max(moved, 1)
    if intensity < min_intensity:
        return f"{intensity:.0f} multiply-adds per value moved (< {min_intensity:g}): quantizing costs more than int8 saves"
    return None


def _constant_weight(node: ir.Node) -> bool:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    return weight is not None and weight.const_value is not None


def _float_types(model: ir.Model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(ir.to_proto(model))
    return {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
