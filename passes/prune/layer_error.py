"""Each rewritten layer's own output error and work, measured on calibration data.

A copy of the original model gets, beside every layer, a shadow: the new version of that
layer (pruned weight, or the two low-rank factors) reading the very same input. Both
outputs are read through the measurement service (bounded chunks of tensors per session) and
per layer we accumulate ``||y_new - y||^2`` and ``||y||^2`` over every calibration feed:
the error is ``sqrt`` of their ratio, the relative output error of that layer alone,
upstream changes excluded. The output shapes seen give the layer's multiply-accumulates
(onnxsmith.flops rules), per feed on average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.flops import TensorInfo, kernel_flops
from onnxsmith.measure import Measurements
from onnxsmith.passes.prune.layers import constant_value

__all__ = ["LayerMeasure", "Shadow", "conv_macs", "copy_node", "matmul_macs", "measure_layers", "weight_shadow"]

# Builds, inside a copy of the model, the new version of the node it is given, reading the
# same inputs; returns the value that stands for the node's first output.
Shadow = Callable[[ir.Model, ir.Node], ir.Value]


@dataclass
class LayerMeasure:
    error: float  # relative output error of the layer on calibration data
    output_size: float  # elements of the layer's output per feed, on average


def measure_layers(
    measure: Measurements,
    model: ir.Model,
    shadows: dict[str, Shadow],
    feeds: list[dict[str, np.ndarray]],
) -> dict[str, LayerMeasure]:
    """Per node name of ``shadows``: its error against the original and its output size."""
    copy = model.clone()
    nodes = {node.name: node for node in copy.graph}
    pairs: dict[str, tuple[str, str]] = {}
    for name, shadow in shadows.items():
        node = nodes[name]
        pairs[name] = (node.outputs[0].name, shadow(copy, node).name)
    noise = dict.fromkeys(pairs, 0.0)
    signal = dict.fromkeys(pairs, 0.0)
    size = dict.fromkeys(pairs, 0)
    tensors = [n for pair in pairs.values() for n in pair]
    # a layer's two tensors sit next to each other in ``tensors``; a chunk boundary may still
    # split them, so each side is kept until its partner of the same feed arrives
    waiting: dict[tuple[int, str], np.ndarray] = {}
    partner = {t: (name, i) for name, pair in pairs.items() for i, t in enumerate(pair)}
    for f, arrays in measure.stream(copy, tensors, feeds):
        for tensor, array in arrays.items():
            name, side = partner[tensor]
            other = waiting.pop((f, pairs[name][1 - side]), None)
            if other is None:
                waiting[(f, tensor)] = array
                continue
            ref, new = (array, other) if side == 0 else (other, array)
            ref, new = ref.astype(np.float64), new.astype(np.float64)
            noise[name] += float(np.sum((new - ref) ** 2))
            signal[name] += float(np.sum(ref * ref))
            size[name] += ref.size
    return {name: LayerMeasure(float(np.sqrt(noise[name] / signal[name])) if signal[name] > 0 else float(noise[name] > 0),
                               size[name] / max(len(feeds), 1)) for name in pairs}


def weight_shadow(weight: np.ndarray) -> Shadow:
    """A shadow that is the node itself with ``weight`` as its second input."""

    def build(model: ir.Model, node: ir.Node) -> ir.Value:
        value = constant_value(model, weight, f"{node.inputs[1].name}.shadow")
        twin = copy_node(node, [node.inputs[0], value, *node.inputs[2:]], f"{node.name}.shadow")
        model.graph.append(twin)
        return twin.outputs[0]

    return build


def copy_node(node: ir.Node, inputs: list[ir.Value | None], name: str, *, output: str | None = None) -> ir.Node:
    """A node of ``node``'s op and attributes on other inputs, with one new output (named
    ``output``, default ``name``)."""
    attributes = [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
    twin = ir.Node(node.domain, node.op_type, inputs, attributes, num_outputs=1, name=name)
    twin.outputs[0].name = output or name
    return twin


def conv_macs(weight_shape: tuple[int, ...], output_size: float) -> int:
    """Multiply-accumulates of one Conv run with this weight and output size (per feed)."""
    out = TensorInfo((int(round(output_size)),), "float")
    return kernel_flops("Conv", [TensorInfo((1,), "float"), TensorInfo(tuple(weight_shape), "float")], [out]) // 2


def matmul_macs(reduction: int, output_size: float) -> int:
    """Multiply-accumulates of ``x @ W`` with ``reduction`` = rows of W and this output size."""
    out = TensorInfo((int(round(output_size)),), "float")
    return kernel_flops("MatMul", [TensorInfo((reduction,), "float")], [out]) // 2
