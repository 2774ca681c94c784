"""ONNX Runtime's CPU execution provider: the default backend."""

from __future__ import annotations

from onnxsmith.backend import Capabilities, register_backend
from onnxsmith.backends.ort_base import OrtBackend

__all__ = ["OrtCpuBackend"]


@register_backend
class OrtCpuBackend(OrtBackend):
    name = "cpu"
    description = "ONNX Runtime, CPUExecutionProvider"
    provider = "CPUExecutionProvider"

    def declared_capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "int8"),
            quant_format="qdq",
            # ONNX Runtime's CPU QDQ fusions (QLinearConv, QLinearMatMul/MatMulIntegerToFloat,
            # QGemm, QLinearAdd/Mul/Concat/Pool/Sigmoid/LeakyRelu/Softmax) and the data
            # movement ops its QDQ propagation passes through.
            int8_ops=("Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
                      "Resize", "Sigmoid", "LeakyRelu", "Softmax", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                      "Split", "Gather", "Pad", "Slice", "Flatten"),
            int8_activations="uint8",  # u8s8: what MLAS's VNNI/AVX2 integer GEMMs are fastest with
            notes=("fp16/bf16 kernels are slow or missing on CPU: these precisions save size, not time",),
        )

