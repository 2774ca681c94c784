"""The MatMul floor of a model: its matrix products alone, with the shapes one feed gives them.

A model made of nothing but the original's MatMul and Gemm nodes (weights kept, activations
replaced by random inputs of the shapes they take on ``feed``) costs what those products
cost; no rewrite that keeps every product can run faster than it. bench/fuse_bench.py times
it beside the original to say how much of the original's time an exact fusion can win back
at most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

__all__ = ["matmul_floor"]

PRODUCTS = ("MatMul", "Gemm")


def matmul_floor(model_path: Path, feed: dict[str, np.ndarray], out: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray], int]:
    """Write the floor model of ``model_path`` to ``out``; return it, its feed and its node count."""
    model = onnx.load(str(model_path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    products = [n for n in graph.node if n.op_type in PRODUCTS and n.domain in ("", "ai.onnx")]
    shapes = _activation_shapes(model, feed, {v for n in products for v in n.input[:2] if v and v not in initializers})
    rng = np.random.default_rng(seed)
    inputs, nodes, outputs, weights, floor_feed = [], [], [], {}, {}
    for i, node in enumerate(products):
        operands = []
        for j, name in enumerate(node.input[:2]):
            if name in initializers:
                weights[name] = initializers[name]
                operands.append(name)
            else:
                fed = f"p{i}_in{j}"
                floor_feed[fed] = rng.standard_normal(shapes[name]).astype(np.float32)
                inputs.append(helper.make_tensor_value_info(fed, onnx.TensorProto.FLOAT, list(shapes[name])))
                operands.append(fed)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if node.op_type == "Gemm" else {}
        nodes.append(helper.make_node(node.op_type, operands, [f"p{i}_out"], **attrs))
        outputs.append(helper.make_tensor_value_info(f"p{i}_out", onnx.TensorProto.FLOAT, None))
    floor = helper.make_graph(nodes, "matmul_floor", inputs, outputs, initializer=list(weights.values()))
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    onnx.save(helper.make_model(floor, opset_imports=opsets, ir_version=model.ir_version), str(out))
    return out, floor_feed, len(nodes)


def _activation_shapes(model: onnx.ModelProto, feed: dict[str, np.ndarray], names: set[str]) -> dict[str, tuple[int, ...]]:
    """The shapes the values ``names`` take when the model runs on ``feed``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in sorted(names - known))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = sorted(names)
    return {n: tuple(v.shape) for n, v in zip(wanted, session.run(wanted, feed), strict=True)}

