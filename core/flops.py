"""Work and traffic of one kernel, estimated from the shapes it ran with.

Backends report each kernel's input and output tensors (shape, dtype) as they were at run
time; from these this module gives FLOPs (a multiply-accumulate counts 2), parameters,
bytes moved and the precision it computed in. The rules, by op type:

1. Conv-like (Conv, FusedConv, QLinearConv, ConvInteger, NCHWc Conv):
   MACs = |Y| * |W| / Cout, i.e. every output element reads Cin/group * kh * kw weights;
   a fused Sum input adds |Y|.
2. ConvTranspose: MACs = |X| * |W| / Cin.
3. MatMul-like (MatMul, Gemm, FusedMatMul, MatMulInteger, QLinearMatMul, MatMulNBits...):
   MACs = |Y| * K, with K the reduced dim of the first input (its second-to-last for Gemm
   with transA=1, which the shapes cannot tell: we take the last dim, exact for transA=0).
4. Attention (com.microsoft Attention, MultiHeadAttention, GroupQueryAttention, ai.onnx
   Attention): the QK^T and AV products, 2 * B * S * L * D MACs for B*S queries over L keys
   of total width D (independent of the head count), plus Attention's input projection.
5. Elementwise, activations, normalizations, reductions and pooling: a small per-element
   cost (1 for Add/Relu, about 4 for Sigmoid/Tanh, 8 for LayerNormalization...) times the
   larger of |inputs[0]| and |Y|. Data movement (Reshape, Transpose, Gather...) is 0.

These are estimates for a roofline view, not counts of instructions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TensorInfo", "kernel_bytes", "kernel_flops", "precision_of", "DTYPE_BYTES"]

# dtype spellings of ONNX Runtime's trace and OpenVINO's element types -> (short name, bytes)
_DTYPES: dict[str, tuple[str, float]] = {
    "float": ("fp32", 4), "float32": ("fp32", 4), "f32": ("fp32", 4),
    "float16": ("fp16", 2), "f16": ("fp16", 2),
    "bfloat16": ("bf16", 2), "bf16": ("bf16", 2),
    "double": ("fp64", 8), "float64": ("fp64", 8), "f64": ("fp64", 8),
    "int8": ("int8", 1), "i8": ("int8", 1), "uint8": ("uint8", 1), "u8": ("uint8", 1),
    "int4": ("int4", 0.5), "i4": ("int4", 0.5), "uint4": ("uint4", 0.5), "u4": ("uint4", 0.5),
    "float8e4m3fn": ("fp8", 1), "f8e4m3": ("fp8", 1), "float8e5m2": ("fp8", 1), "f8e5m2": ("fp8", 1),
    "int16": ("int16", 2), "i16": ("int16", 2), "uint16": ("uint16", 2), "u16": ("uint16", 2),
    "int32": ("int32", 4), "i32": ("int32", 4), "uint32": ("uint32", 4), "u32": ("uint32", 4),
    "int64": ("int64", 8), "i64": ("int64", 8), "uint64": ("uint64", 8), "u64": ("uint64", 8),
    "bool": ("bool", 1), "boolean": ("bool", 1),
}
DTYPE_BYTES = {k: v[1] for k, v in _DTYPES.items()}

_CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv", "Convolution", "GroupConvolution"}
_CONV_TRANSPOSE = {"ConvTranspose", "Deconvolution"}
_MATMUL = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
           "MatMulNBits", "MatMulBnb4", "QGemm", "FusedGemm", "FullyConnected", "TransposeMatMul"}
_ATTENTION = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "ScaledDotProductAttention", "SDPA"}
# Approximate FLOPs per element for ops whose cost scales with their tensor size.
_PER_ELEMENT: dict[str, float] = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Relu": 1, "LeakyRelu": 2, "PRelu": 2, "Clip": 1, "Max": 1, "Min": 1,
    "Abs": 1, "Neg": 1, "Sqrt": 1, "Pow": 1, "Where": 1, "Equal": 1, "Greater": 1, "Less": 1, "Not": 1, "And": 1,
    "Or": 1, "Sum": 1, "Mean": 1, "Eltwise": 1, "Exp": 4, "Log": 4, "Erf": 4, "Sigmoid": 4, "Tanh": 4, "HardSigmoid": 3,
    "HardSwish": 4, "Swish": 5, "QuickGelu": 5, "Gelu": 8, "BiasGelu": 9, "FastGelu": 8, "Softmax": 5, "LogSoftmax": 6,
    "BatchNormalization": 2, "InstanceNormalization": 5, "LayerNormalization": 8, "SimplifiedLayerNormalization": 6,
    "SkipLayerNormalization": 9, "SkipSimplifiedLayerNormalization": 7, "GroupNorm": 8, "MVN": 5, "NormalizeL2": 3,
    "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1, "Reduce": 1, "GlobalAveragePool": 1, "GlobalMaxPool": 1,
    "AveragePool": 1, "MaxPool": 1, "Pooling": 1, "Resize": 4, "Interpolate": 4, "QuantizeLinear": 2, "DequantizeLinear": 2,
    "DynamicQuantizeLinear": 4, "Cast": 0, "Convert": 0,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor a kernel read or wrote: its concrete shape and dtype (as the backend spelled it)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return int(math.ceil(self.size * DTYPE_BYTES.get(self.dtype.lower(), 4)))


def kernel_flops(op_type: str, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> int:
    """Estimated FLOPs of one execution of a kernel (see the module docstring for the rules)."""
    if not outputs:
        return 0
    y = outputs[0].size
    if op_type in _CONV:
        weight = _weight(op_type, inputs)
        if weight is None or len(weight.shape) < 2 or weight.shape[0] == 0:
            return 0
        macs = y * weight.size // weight.shape[0]
        fused_sum = y if op_type in ("Conv", "FusedConv") and len(inputs) >= 4 and inputs[3].shape == outputs[0].shape else 0
        return 2 * macs + fused_sum
    if op_type in _CONV_TRANSPOSE:
        if len(inputs) < 2 or not inputs[1].shape or inputs[1].shape[0] == 0:
            return 0
        return 2 * inputs[0].size * inputs[1].size // inputs[1].shape[0]
    if op_type in _MATMUL:
        return 2 * y * inputs[0].shape[-1] if inputs and inputs[0].shape else 0
    if op_type in _ATTENTION:
        return _attention_flops(op_type, inputs, outputs)
    per_element = _PER_ELEMENT.get(op_type, 0)
    biggest = max(y, inputs[0].size if inputs else 0)
    return int(per_element * biggest)


def kernel_bytes(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> int:
    """Bytes a kernel reads and writes, each tensor once: the roofline's memory traffic."""
    return sum(t.nbytes for t in inputs) + sum(t.nbytes for t in outputs)


def precision_of(op_type: str, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> str:
    """The precision a kernel computed in: its data input's dtype (int8 for a u8/s8 kernel),
    or its weight's when weights are narrower (weight-only int4/int8 MatMulNBits)."""
    names = [_DTYPES.get(t.dtype.lower(), (t.dtype.lower(), 0))[0] for t in inputs]
    if not names:
        return _DTYPES.get(outputs[0].dtype.lower(), (outputs[0].dtype.lower(), 0))[0] if outputs else "-"
    if op_type == "MatMulNBits":
        return "int4"
    first = names[0]
    if first in ("int8", "uint8"):
        return "int8"
    if op_type in _CONV | _MATMUL and len(names) > 1 and names[1] in ("int8", "uint8", "int4", "uint4"):
        return names[1].replace("uint", "int")
    return first


def _weight(op_type: str, inputs: list[TensorInfo]) -> TensorInfo | None:
    index = 3 if op_type == "QLinearConv" else 1
    return inputs[index] if len(inputs) > index else None


def _attention_flops(op_type: str, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> int:
    query = inputs[0].shape if inputs else ()
    out = outputs[0].shape
    if len(query) == 4:  # ai.onnx Attention / SDPA: [B, H, S, d] with keys [B, H, L, d]
        keys = inputs[1].shape if len(inputs) > 1 and len(inputs[1].shape) == 4 else query
        b, h, s, d = query
        return 2 * 2 * b * h * s * keys[2] * d
    if len(query) != 3 or len(out) != 3:
        return 0
    b, s, hidden_in = query
    width = out[2]
    if op_type == "Attention" and len(inputs) > 1 and len(inputs[1].shape) == 2:  # input projection [Din, 3*D]
        projection = 2 * b * s * hidden_in * inputs[1].shape[1]
        return projection + 2 * 2 * b * s * s * width
    keys = inputs[1].shape if len(inputs) > 1 and len(inputs[1].shape) == 3 else query
    return 2 * 2 * b * s * keys[1] * width
