"""Tiny graphs for the structural cases of channel and head pruning, built with onnx.helper.

Every builder returns an ``onnx_ir.Model`` with one float input ``x`` and random (seeded)
weights; ``feeds(model, n)`` gives inputs whose channels are correlated (mixes of a few latent
images), as real activations are, so a least-squares refit has something to recover.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "attention", "branches", "concat", "depthwise", "feeds", "gemm_chain", "residual", "split_c2f", "squeeze_excite",
    "with_batchnorm", "reshape_head",
]

OPSET = 17


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, array: np.ndarray, base: str = "c") -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str] | str:
        name = self.name(op_type.lower())
        outs = [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs if outputs > 1 else outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True) -> str:
        w = self.const((self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32), "w")
        inputs = [x, w] + ([self.const((0.1 * self.rng.standard_normal(cout)).astype(np.float32), "b")] if bias else [])
        return self.op("Conv", inputs, pads=[k // 2] * 4, group=group)

    def gemm(self, x: str, cin: int, cout: int, trans_b: int) -> str:
        shape = (cout, cin) if trans_b else (cin, cout)
        w = self.const((self.rng.standard_normal(shape) / np.sqrt(cin)).astype(np.float32), "w")
        b = self.const((0.1 * self.rng.standard_normal(cout)).astype(np.float32), "b")
        return self.op("Gemm", [x, w, b], transB=trans_b)

    def model(self, x_shape: list, output: str) -> ir.Model:
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.inits,
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)
        proto = onnx.shape_inference.infer_shapes(proto)
        onnx.checker.check_model(proto)
        return ir.from_proto(proto)


def residual() -> ir.Model:
    """conv1 -> relu -> [conv_a -> relu -> conv_b] + relu(conv1) -> relu -> head conv (output).

    conv1's and conv_b's output channels are tied by the residual Add."""
    b = _Builder(1)
    c1 = b.op("Relu", [b.conv("x", 4, 16)])
    inner = b.conv(b.op("Relu", [b.conv(c1, 16, 12)]), 12, 16)
    s = b.op("Relu", [b.op("Add", [c1, inner])])
    return b.model([1, 4, 12, 12], b.conv(s, 16, 3, k=1))


def concat() -> ir.Model:
    """Two convs (8 and 6 channels) concatenated on channels, then read by one conv."""
    b = _Builder(2)
    a = b.op("Relu", [b.conv("x", 4, 8)])
    c = b.op("Relu", [b.conv("x", 4, 6)])
    return b.model([1, 4, 10, 10], b.conv(b.op("Concat", [a, c], axis=1), 14, 3))


def depthwise() -> ir.Model:
    """conv (12) -> depthwise 3x3 (group 12) -> relu -> conv: the depthwise channels follow."""
    b = _Builder(3)
    a = b.op("Relu", [b.conv("x", 4, 12, k=1)])
    d = b.op("Relu", [b.conv(a, 12, 12, group=12)])
    return b.model([1, 4, 10, 10], b.conv(d, 12, 3, k=1))


def with_batchnorm() -> ir.Model:
    """conv (no bias) -> BatchNormalization -> relu -> conv."""
    b = _Builder(4)
    y = b.conv("x", 4, 10, bias=False)
    scale = b.const((1 + 0.2 * b.rng.standard_normal(10)).astype(np.float32))
    shift = b.const((0.1 * b.rng.standard_normal(10)).astype(np.float32))
    mean = b.const((0.1 * b.rng.standard_normal(10)).astype(np.float32))
    var = b.const((1 + 0.3 * b.rng.random(10)).astype(np.float32))
    bn = b.op("BatchNormalization", [y, scale, shift, mean, var])
    return b.model([1, 4, 8, 8], b.conv(b.op("Relu", [bn]), 10, 3))


def gemm_chain() -> ir.Model:
    """Gemm (transB=1) -> relu -> Gemm (transB=0) -> relu -> MatMul + Add -> output."""
    b = _Builder(5)
    h1 = b.op("Relu", [b.gemm("x", 16, 24, trans_b=1)])
    h2 = b.op("Relu", [b.gemm(h1, 24, 20, trans_b=0)])
    w = b.const((b.rng.standard_normal((20, 5)) / np.sqrt(20)).astype(np.float32), "w")
    out = b.op("Add", [b.op("MatMul", [h2, w]), b.const(np.zeros(5, np.float32))])
    return b.model([4, 16], out)


def split_c2f() -> ir.Model:
    """YOLOv8's C2f: conv -> Split(8, 8) -> (a, b); b + bottleneck(b); Concat(a, b, m) -> conv."""
    b = _Builder(6)
    y = b.op("Relu", [b.conv("x", 4, 16, k=1)])
    a, c = b.op("Split", [y, b.const(np.array([8, 8], np.int64))], outputs=2, axis=1)
    m = b.op("Add", [c, b.op("Relu", [b.conv(b.op("Relu", [b.conv(c, 8, 6)]), 6, 8)])])
    return b.model([1, 4, 10, 10], b.conv(b.op("Concat", [a, c, m], axis=1), 24, 3, k=1))


def squeeze_excite() -> ir.Model:
    """x * sigmoid(conv(relu(conv(GlobalAveragePool(x))))): the excite conv is tied to x."""
    b = _Builder(7)
    x = b.op("Relu", [b.conv("x", 4, 12)])
    s = b.op("Sigmoid", [b.conv(b.op("Relu", [b.conv(b.op("GlobalAveragePool", [x]), 12, 4, k=1)]), 4, 12, k=1)])
    return b.model([1, 4, 8, 8], b.conv(b.op("Mul", [x, s]), 12, 3))


def reshape_head() -> ir.Model:
    """conv -> Reshape to [1, -1] (mixes channels and pixels) -> Gemm: the conv cannot be pruned."""
    b = _Builder(8)
    y = b.op("Relu", [b.conv("x", 3, 4)])
    flat = b.op("Reshape", [y, b.const(np.array([1, -1], np.int64))])
    return b.model([1, 3, 4, 4], b.gemm(flat, 64, 5, trans_b=1))


def branches() -> ir.Model:
    """One tensor read by two convs whose outputs are added: a residual tie across two layers."""
    b = _Builder(9)
    y = b.op("Relu", [b.conv("x", 4, 16)])
    z = b.op("Add", [b.conv(y, 16, 8), b.conv(y, 16, 8, k=1)])
    return b.model([1, 4, 8, 8], b.conv(b.op("Relu", [z]), 8, 2))


def attention(heads: int = 4, head_dim: int = 8, seq: int = 6, static: bool = True) -> ir.Model:
    """One self-attention block as torch exports it: x [1, seq, D] -> q/k/v MatMul + Add ->
    Reshape [1, seq, H, d] (``static``: H spelled out; else -1) -> Transpose -> scores (scaled),
    Softmax -> MatMul(p, v) -> Transpose -> Reshape [1, seq, H*d] -> output MatMul + Add."""
    b = _Builder(10)
    width, model_dim = heads * head_dim, 16
    split = np.array([1, seq, heads if static else -1, head_dim], np.int64)
    merge = np.array([1, seq, width if static else -1], np.int64)

    def project(x: str, cin: int, cout: int) -> str:
        w = b.const((b.rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype(np.float32), "w")
        return b.op("Add", [b.op("MatMul", [x, w]), b.const((0.1 * b.rng.standard_normal(cout)).astype(np.float32), "b")])

    def heads_of(x: str, perm: list[int]) -> str:
        return b.op("Transpose", [b.op("Reshape", [project("x", model_dim, width), b.const(split)])], perm=perm)

    q, k, v = heads_of("x", [0, 2, 1, 3]), heads_of("x", [0, 2, 3, 1]), heads_of("x", [0, 2, 1, 3])
    scores = b.op("Mul", [b.op("MatMul", [q, k]), b.const(np.array(1 / np.sqrt(head_dim), np.float32))])
    context = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [context], perm=[0, 2, 1, 3]), b.const(merge)])
    return b.model([1, seq, model_dim], project(merged, width, model_dim))


def feeds(model: ir.Model, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` inputs for ``x`` whose channels (axis 1, or the last axis of a 2-D/3-D input) are
    mixes of two latent signals plus a little noise."""
    rng = np.random.default_rng(seed)
    shape = [d if isinstance(d, int) else 1 for d in model.graph.inputs[0].shape]
    axis = 1 if len(shape) == 4 else len(shape) - 1
    channels = shape[axis]
    result = []
    for _ in range(n):
        latent_shape = list(shape)
        latent_shape[axis] = 2
        latent = rng.standard_normal(latent_shape).astype(np.float32)
        mix = rng.standard_normal((2, channels)).astype(np.float32)
        x = np.moveaxis(np.tensordot(np.moveaxis(latent, axis, -1), mix, axes=1), -1, axis)
        result.append({"x": (x + 0.1 * rng.standard_normal(shape)).astype(np.float32)})
    return result
