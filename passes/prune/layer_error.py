"""Each rewritten layer's own output error and work, measured on calibration data.

A copy of the original model gets, beside every layer, a shadow: the new version of that
layer (pruned weight, or the two low-rank factors) reading the very same input. Both
outputs become graph outputs (``chunk`` layers per session, so memory stays bounded) and
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
from onnxsmith.passes.prune.layers import constant_value
from onnxsmith.runtime import make_session, with_outputs

__all__ = ["LayerMeasure", "Shadow", "conv_macs", "copy_node", "matmul_macs", "measure_layers", "weight_shadow"]

# Builds, inside a copy of the model, the new version of the node it is given, reading the
# same inputs; returns the value that stands for the node's first output.
Shadow = Callable[[ir.Model, ir.Node], ir.Value]


@dataclass
class LayerMeasure:
    error: float  # relative output error of the layer on calibration data
    output_size: float  # elements of the layer's output per feed, on average


def measure_layers(
    model: ir.Model,
    shadows: dict[str, Shadow],
    feeds: list[dict[str, np.ndarray]],
    *,
    chunk: int = 24,
) -> dict[str, LayerMeasure]:
    """Per node name of ``shadows``: its error against the original and its output size."""
    copy = ir.from_proto(ir.to_proto(model))
    nodes = {node.name: node for node in copy.graph}
    pairs: dict[str, tuple[str, str]] = {}
    for name, shadow in shadows.items():
        node = nodes[name]
        pairs[name] = (node.outputs[0].name, shadow(copy, node).name)
    result: dict[str, LayerMeasure] = {}
    names = list(pairs)
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        outputs = [n for name in part for n in pairs[name]]
        session = make_session(with_outputs(copy, outputs), optimize=False)
        noise = dict.fromkeys(part, 0.0)
        signal = dict.fromkeys(part, 0.0)
        size = dict.fromkeys(part, 0)
        for feed in feeds:
            got = dict(zip(outputs, session.run(outputs, feed), strict=True))
            for name in part:
                ref = got[pairs[name][0]].astype(np.float64)
                new = got[pairs[name][1]].astype(np.float64)
                noise[name] += float(np.sum((new - ref) ** 2))
                signal[name] += float(np.sum(ref * ref))
                size[name] += ref.size
        for name in part:
            error = float(np.sqrt(noise[name] / signal[name])) if signal[name] > 0 else float(noise[name] > 0)
            result[name] = LayerMeasure(error, size[name] / max(len(feeds), 1))
    return result


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
