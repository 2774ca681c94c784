"""ONNX Runtime's CPU execution provider: the default backend."""

from __future__ import annotations

import onnx_ir as ir

from onnxsmith.backend import Backend, Capabilities, register_backend
from onnxsmith.runtime import make_session

__all__ = ["OrtCpuBackend"]


@register_backend
class OrtCpuBackend(Backend):
    name = "cpu"
    description = "ONNX Runtime, CPUExecutionProvider"
    capabilities = Capabilities(
        precisions=("fp32", "int8"),
        quant_format="qdq",
        # Fused ops ONNX Runtime's CPU provider has kernels for (contrib ops included).
        fused_ops=("LayerNormalization", "SkipLayerNormalization", "Gelu", "FastGelu", "BiasGelu",
                   "Attention", "MultiHeadAttention", "FusedConv", "MatMulNBits"),
        notes=("fp16/bf16 kernels are slow or missing on CPU: these precisions save size, not time",),
    )

    def available(self) -> tuple[bool, str]:
        import onnxruntime as ort

        if "CPUExecutionProvider" not in ort.get_available_providers():
            return False, "this onnxruntime build has no CPUExecutionProvider"
        return True, ""

    def create_session(self, model: ir.Model, *, optimize: bool = True):
        return make_session(model, optimize=optimize, providers=("CPUExecutionProvider",))
