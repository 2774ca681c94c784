"""ONNX Runtime's CPU execution provider: the default backend."""

from __future__ import annotations

import functools

import onnx_ir as ir

from onnxsmith.backend import Backend, Capabilities, register_backend
from onnxsmith.runtime import make_session

__all__ = ["OrtCpuBackend"]


@register_backend
class OrtCpuBackend(Backend):
    name = "cpu"
    description = "ONNX Runtime, CPUExecutionProvider"
    provider = "CPUExecutionProvider"  # type: ignore[assignment]

    @functools.cached_property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "int8"),
            quant_format="qdq",
            ops=kernel_ops(self.provider),
            notes=("fp16/bf16 kernels are slow or missing on CPU: these precisions save size, not time",),
        )

    def available(self) -> tuple[bool, str]:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            return False, "this onnxruntime build has no CPUExecutionProvider"
        return True, ""

    def create_session(self, model: ir.Model, *, optimize: bool = True):
        return make_session(model, optimize=optimize, providers=(self.provider,))


def kernel_ops(provider: str) -> frozenset[str]:
    """Every op type ONNX Runtime has a kernel for on ``provider``, asked of its registry."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return frozenset(k.op_name for k in ort_state.get_all_opkernel_def() if k.provider == provider)
