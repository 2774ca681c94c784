"""Did ONNX Runtime really run integer kernels, or dequantize and run the float op?

We let ONNX Runtime optimize the QDQ model for the provider (as it will at deployment),
save the optimized graph, and count its integer ops against the float compute ops whose
weight still comes out of a DequantizeLinear: int8 weights dequantized at every run, for a
float kernel. (A layer left float on purpose may read a dequantized activation; that is
no fallback.)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.runtime import save_runtime_graph

__all__ = ["INTEGER_OPS", "integer_kernel_check"]

INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearWhere", "QLinearReduceMean", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "NhwcQLinearConv",
})
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul"})


def integer_kernel_check(model: ir.Model, provider: str) -> tuple[dict[str, int], list[str]]:
    """(counts of integer kernels and of float fallbacks, names of the fallback nodes)."""
    with tempfile.TemporaryDirectory(prefix="onnxsmith-kernels-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        save_runtime_graph(model, target, providers=[provider], level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        graph = onnx.load(str(target), load_external_data=False).graph
    produced_by_dq = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    integer = [n for n in graph.node if n.op_type in INTEGER_OPS]
    fallback = [n.name for n in graph.node if n.op_type in COMPUTE_OPS and len(n.input) > 1 and n.input[1] in produced_by_dq]
    return {"int8_kernels": len(integer), "float_fallbacks": len(fallback)}, fallback
