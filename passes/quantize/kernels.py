"""Did ONNX Runtime really run integer kernels, or dequantize and run the float op?

We let ONNX Runtime optimize the QDQ model for the provider (as it will at deployment) and
list the nodes of the graph it runs: its integer ops, and the float compute ops that are
layers whose weight we quantized (int8 weights dequantized for a float kernel, at every run
or folded into a float copy once). A layer left float on purpose may read a dequantized
activation; that is no fallback.

The runtime graph comes from the optimized model ONNX Runtime saves, or, for a big model
given a feed, from the trace of one profiled run of a session that reads our weights in
place: saving the graph of a 2 GB model took a session of its own copy and the graph's
(3.5x the model at int8's peak).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.runtime import make_session, save_runtime_graph
from onnxsmith.shared_weights import sharing_pays

__all__ = ["INTEGER_OPS", "integer_kernel_check", "reads_int8_weight"]

INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearWhere", "QLinearReduceMean", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "NhwcQLinearConv",
})
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul"})
_KERNEL_SUFFIX = "_kernel_time"


def integer_kernel_check(model: ir.Model, provider: str, feed: dict[str, np.ndarray] | None = None
                         ) -> tuple[dict[str, int], list[str]]:
    """(counts of integer kernels and of float fallbacks, names of the fallback layers)."""
    runtime_nodes = _traced_nodes(model, provider, feed) if feed is not None and sharing_pays(model) else _saved_nodes(model, provider)
    quantized = {node.name for node in model.graph if node.op_type in COMPUTE_OPS and reads_int8_weight(node)}
    integer = [name for name, op in runtime_nodes if op in INTEGER_OPS]
    fallback = [name for name, op in runtime_nodes if op in COMPUTE_OPS and name in quantized]
    return {"int8_kernels": len(integer), "float_fallbacks": len(fallback)}, fallback


def _saved_nodes(model: ir.Model, provider: str) -> list[tuple[str, str]]:
    """(name, op type) of each node of the graph ONNX Runtime saves after optimizing ``model``."""
    with tempfile.TemporaryDirectory(prefix="onnxsmith-kernels-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        save_runtime_graph(model, target, providers=[provider], level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        graph = onnx.load(str(target), load_external_data=False).graph
    return [(node.name, node.op_type) for node in graph.node]


def _traced_nodes(model: ir.Model, provider: str, feed: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(name, op type) of each kernel of one profiled run of ``model`` at the extended level,
    in a session that reads our weights in place (``make_session(lean=True)``)."""
    with tempfile.TemporaryDirectory(prefix="onnxsmith-kernels-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "trace")
        session = make_session(model, providers=[provider], session_options=options, lean=True)
        session.run(None, feed)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text(encoding="utf-8"))  # one run: about 1 KB per kernel
    return [(event["name"].removesuffix(_KERNEL_SUFFIX), event["args"].get("op_name", ""))
            for event in events if event.get("cat") == "Node" and event["name"].endswith(_KERNEL_SUFFIX)]


def reads_int8_weight(node: ir.Node) -> bool:
    """Whether the layer's weight (input 1) is int8 data read through DequantizeLinear; a layer
    kept in float may still read a dequantized activation on input 0, so that input is no sign."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    producer = weight.producer() if weight is not None else None
    return (producer is not None and producer.op_type == "DequantizeLinear"
            and producer.inputs[0] is not None and producer.inputs[0].const_value is not None)
