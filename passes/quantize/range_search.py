"""Activation ranges that minimise the error the *reader* of a tensor sees (calibration=mse).

A Conv's output is quantized before its activation runs (ONNX Runtime's QLinearConv writes
int8; SiLU, hardswish or GELU then run in float on the dequantized values). Large negative
pre-activations all map to about 0 through SiLU, so covering them wastes int8 levels:
YOLOv8n's first bottleneck reads [-27, 16], and clipping its low end at -5 halves the step
at no cost after SiLU (held-out detection F1 0.80 -> 0.92). So the clip range [lo, hi] of a
tensor is chosen to minimise, over its calibration histogram h (signed, bins c),

    E(lo, hi) = sum_{c < lo} h (f(lo) - f(c))^2 + sum_{c > hi} h (f(hi) - f(c))^2
              + (step^2 / 12) sum_{lo <= c <= hi} h f'(c)^2,        step = (hi - lo) / levels

where f is the float function between the tensor and the next quantized value: the
elementwise ops that read only it (reader_functions), or the identity. Rounding inside the
range is uniform noise scaled by f's slope; clipping costs the squared distance after f.
0 stays inside the range (int8 zero points must be exact); symmetric int8 uses lo = -hi.
With ``by_sign`` (zero point 0 in either type: OpenVINO's preference), the range is the
better of [0, hi] in uint8 and [-t, t] in int8: a tensor whose negative tail matters little
to its reader (a hardswish input) keeps all 256 levels for its positive side.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

from onnxsmith.runtime import make_session

__all__ = ["ELEMENTWISE", "mse_range", "read_value", "reader_functions"]

Function = Callable[[np.ndarray], np.ndarray]

ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Clip", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Erf",
    "Gelu", "QuickGelu", "Softplus", "Elu", "Selu", "Exp", "Sqrt", "Pow", "Max", "Min", "Neg", "Abs", "Identity",
})
_CANDIDATES = 256  # clip points tried on each side


def mse_range(hist: np.ndarray, low: float, high: float, f: Function | None, *, levels: int = 255,
              symmetric: bool = False, by_sign: bool = False) -> tuple[float, float]:
    """The [lo, hi] within [low, high] (``hist``: equal bins over it) minimising E; 0 inside.
    ``symmetric``: lo = -hi; ``by_sign``: lo = 0 (uint8) or lo = -hi (int8), whichever errs less."""
    bins = len(hist)
    width = (high - low) / bins
    if width <= 0 or hist.sum() == 0:
        return min(low, 0.0), max(high, 0.0)
    centers = low + (np.arange(bins) + 0.5) * width
    fx = f(centers) if f is not None else centers
    slope = np.gradient(fx, centers) if f is not None else np.ones(bins)
    prefix = np.concatenate([[0.0], np.cumsum(hist * slope**2)])

    def clipped(bounds: np.ndarray, below: bool) -> np.ndarray:
        """Clipping error for each bound: everything beyond it is read as f(bound)."""
        fb = f(bounds) if f is not None else bounds
        beyond = centers[None, :] < bounds[:, None] if below else centers[None, :] > bounds[:, None]
        return np.sum(np.where(beyond, hist[None, :] * (fx[None, :] - fb[:, None]) ** 2, 0.0), axis=1)

    def inside(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        first = np.clip(np.floor((lo - low) / width).astype(int), 0, bins)
        last = np.clip(np.ceil((hi - low) / width).astype(int), 0, bins)
        return np.maximum(prefix[last] - prefix[first], 0.0)

    if symmetric or by_sign:
        t = np.linspace(0.0, max(abs(low), abs(high)), _CANDIDATES + 1)[1:]
        errors = clipped(-t, True) + clipped(t, False) + inside(-t, t) * (2 * t / (levels - 1)) ** 2 / 12.0
        best = int(np.argmin(errors))
        if not by_sign or high <= 0:
            return -float(t[best]), float(t[best])
        highs = np.linspace(0.0, high, _CANDIDATES + 1)[1:]
        unsigned = clipped(np.zeros(1), True) + clipped(highs, False) + inside(np.zeros_like(highs), highs) * (highs / levels) ** 2 / 12.0
        top = int(np.argmin(unsigned))
        return (0.0, float(highs[top])) if unsigned[top] <= errors[best] else (-float(t[best]), float(t[best]))
    lows = np.linspace(low, 0.0, _CANDIDATES + 1) if low < 0 else np.array([0.0])
    highs = np.linspace(0.0, high, _CANDIDATES + 1)[1:] if high > 0 else np.array([0.0])
    below, above = clipped(lows, True), clipped(highs, False)
    step = (highs[None, :] - lows[:, None]) / levels
    total = below[:, None] + above[None, :] + inside(lows[:, None], highs[None, :]) * step**2 / 12.0
    i, j = np.unravel_index(int(np.argmin(total)), total.shape)
    return float(lows[i]), float(highs[j])


def reader_functions(model: ir.Model, tensors: list[str]) -> dict[str, Function]:
    """For each tensor whose readers are all elementwise ops of scalar constants that end in
    one value used elsewhere (SiLU ``x * Sigmoid(x)``, hardswish, GELU, QuickGelu...), that
    function of it, evaluated by ONNX Runtime on 1-D arrays; tensors without one are left out."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    opsets = [helper.make_opsetid(domain or "", version) for domain, version in model.opset_imports.items()]
    functions: dict[str, Function] = {}
    for name in tensors:
        value = values.get(name)
        if value is None:
            continue
        closure = _elementwise_closure(value)
        if closure is None:
            continue
        nodes, output = closure
        functions[name] = _compile(nodes, value, output, opsets)
    return functions


def read_value(value: ir.Value) -> ir.Value:
    """What the readers of ``value`` make of it: the one value its elementwise readers
    produce (SiLU's output for a Conv's output), or ``value`` itself."""
    closure = _elementwise_closure(value)
    return closure[1] if closure is not None else value


def _elementwise_closure(value: ir.Value) -> tuple[list[ir.Node], ir.Value] | None:
    """(nodes, the one value leaving them) of the elementwise readers of ``value``, or None."""
    if value.is_graph_output() or not value.uses():
        return None
    inside: set[ir.Value] = {value}
    nodes: list[ir.Node] = []
    pending = [use.node for use in value.uses()]
    waited = 0
    while pending and waited <= len(pending):
        node = pending.pop(0)
        if node in nodes:
            continue
        if node.op_type not in ELEMENTWISE or node.domain not in ("", "ai.onnx", "com.microsoft") or len(node.outputs) != 1:
            continue  # not ours: its inputs leave the closure
        if not all(v is None or v in inside or _scalar_constant(v) for v in node.inputs):
            pending.append(node)  # waits for an input the closure may still produce
            waited += 1
            continue
        waited = 0
        nodes.append(node)
        inside.add(node.outputs[0])
        if len(nodes) > 16:
            return None
        pending.extend(u.node for u in node.outputs[0].uses() if u.node not in nodes and u.node not in pending)
    if not nodes or any(u.node not in nodes for u in value.uses()):
        return None
    leaving = [n.outputs[0] for n in nodes
               if n.outputs[0].is_graph_output() or any(u.node not in nodes for u in n.outputs[0].uses())]
    return (nodes, leaving[0]) if len(leaving) == 1 else None


def _scalar_constant(value: ir.Value) -> bool:
    return value.const_value is not None and value.const_value.size == 1


def _compile(nodes: list[ir.Node], source: ir.Value, output: ir.Value, opsets) -> Function:
    """``nodes`` as a function of ``source`` on a 1-D float array."""
    protos, initializers = [], []
    for node in nodes:
        inputs = []
        for v in node.inputs:
            if v is None:
                inputs.append("")
            elif _scalar_constant(v):
                name = f"c{len(initializers)}"
                initializers.append(onnx.numpy_helper.from_array(v.const_value.numpy().reshape(()), name))
                inputs.append(name)
            else:
                inputs.append(v.name)
        proto = ir.serde.serialize_node(node)
        del proto.input[:]
        proto.input.extend(inputs)
        protos.append(proto)
    graph = helper.make_graph(protos, "reader", [helper.make_tensor_value_info(source.name, onnx.TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info(output.name, onnx.TensorProto.FLOAT, ["n"])], initializers)
    session = make_session(ir.from_proto(helper.make_model(graph, opset_imports=opsets, ir_version=8)), optimize=False)

    def function(x: np.ndarray) -> np.ndarray:
        return session.run(None, {source.name: np.asarray(x, np.float32).ravel()})[0].astype(np.float64)

    return function
