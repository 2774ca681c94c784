"""Tiny-graph helpers for the fuse rule tests: build a model, run one rule, compare outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxsmith.backend import Backend, Capabilities, get_backend
from onnxsmith.backends.onnxruntime_cpu import OrtCpuBackend
from onnxsmith.context import Context
from onnxsmith.pass_base import PassResult
from onnxsmith.registry import create_pass

RNG = np.random.default_rng(0)


def reseed(seed: int = 0) -> None:
    """Restart the random stream, so a test's numbers do not depend on which tests ran before."""
    global RNG
    RNG = np.random.default_rng(seed)


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make(nodes, inputs: dict[str, list], outputs: dict[str, list | None], initializers=(), opset: int = 17,
         input_types: dict[str, int] | None = None) -> onnx.ModelProto:
    """A model from nodes; inputs/outputs map names to shapes (float32 unless ``input_types``
    says otherwise). Nodes of the com.microsoft domain get its opset import."""
    dtypes = input_types or {}
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, dtypes.get(n, TensorProto.FLOAT), s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == "com.microsoft" for n in nodes):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type for v in [*inferred.value_info, *inferred.output]}
    for output in model.graph.output:  # outputs given without a shape take the inferred one
        if not output.type.tensor_type.HasField("shape") and types[output.name].tensor_type.HasField("shape"):
            output.type.CopyFrom(types[output.name])
    onnx.checker.check_model(model)
    return model


@dataclass
class Fused:
    result: PassResult
    ops: list[str]
    max_error: float

    @property
    def notes(self) -> str:
        return "\n".join(self.result.notes)


class CpuWithoutSlowOps(OrtCpuBackend):
    """ONNX Runtime CPU as if none of its fused kernels were slow: what ``fuse`` does for a
    backend whose SkipLayerNormalization is fast."""

    def declared_capabilities(self) -> Capabilities:
        return dataclasses.replace(super().declared_capabilities(), slow_ops=frozenset())


class CpuWithSlowOneChannelConvTranspose(OrtCpuBackend):
    """ONNX Runtime CPU as if its ConvTranspose of one output channel were slow, as OpenVINO's
    is: runs the rule that avoids it, and checks its outputs, on every machine."""

    def declared_capabilities(self) -> Capabilities:
        caps = super().declared_capabilities()
        return dataclasses.replace(caps, slow_ops=caps.slow_ops | {"ConvTranspose:one-output-channel"})


def run_fuse(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], backend: str | Backend | None = "cpu", **options) -> Fused:
    """Run ``fuse`` with ``options`` on a copy of ``proto``; compare outputs with the original."""
    model = ir.from_proto(proto)
    ctx = Context(backend=get_backend(backend) if isinstance(backend, str) else backend)
    result = create_pass("fuse", options).apply(model, ctx)
    rewritten = ir.to_proto(result.model)
    ops = [n.op_type for n in rewritten.graph.node]
    return Fused(result, ops, max_abs_difference(proto, rewritten, feeds))


def max_abs_difference(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ra = ort.InferenceSession(a.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    rb = ort.InferenceSession(b.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(ra, rb, strict=True))
