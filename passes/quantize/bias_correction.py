"""Bias correction: cancel the mean output shift that rounding the weights to int8 causes.

Rounding a layer's weights, W_q = W + dW, moves the mean of its output by dW . E[x]
(Nagel et al., "Data-Free Quantization", 2019). That shift is the same for every input,
so it does not average out downstream; it matters most for layers with few weights per
output channel (depthwise convolutions). We measure E[x] per input channel on the
calibration data (streamed), read dW from the quantized model's DequantizeLinear
weights, and subtract dW . E[x] from the float bias before the bias is quantized.

Supported: Conv (groups included; padding borders are ignored, as in the paper), Gemm
(alpha, transB) and MatMul followed by an Add of a constant bias.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.measure import Measurements
from onnxsmith.statistics import ChannelSums

__all__ = ["apply_bias_corrections", "bias_corrections"]


def bias_corrections(
    measure: Measurements, float_model: ir.Model, quantized: ir.Model, layers: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per layer name (of ``float_model``), the shift to subtract from its bias."""
    nodes = {n.name: n for n in float_model.graph if n.name in layers}
    quantized_weights = _dequantized_weights(quantized, nodes)
    eligible = {name: node for name, node in nodes.items() if name in quantized_weights and _bias_target(node) is not None}
    requests = {node.inputs[0].name: ChannelSums(1 if node.op_type == "Conv" else -1) for node in eligible.values()}
    means = {name: stats.mean for name, stats in measure.reduce(float_model, requests, feeds).items()}
    corrections = {}
    for name, node in eligible.items():
        weight = node.inputs[1].const_value.numpy().astype(np.float64)
        delta = quantized_weights[name].astype(np.float64) - weight
        shift = _output_shift(node, delta, means[node.inputs[0].name])
        if shift is not None and np.any(shift):
            corrections[name] = shift
    return corrections


def apply_bias_corrections(model: ir.Model, corrections: dict[str, np.ndarray]) -> ir.Model:
    """A copy of ``model`` whose named layers' biases are lowered by their correction."""
    copy = model.clone()  # tensors shared (never written in place); a proto round trip loses external data's folder
    for node in copy.graph:
        shift = corrections.get(node.name)
        if shift is None:
            continue
        target = _bias_target(node)
        if target is None:
            continue
        host, index = target
        if index >= len(host.inputs):
            host.resize_inputs(index + 1)
        old_value = host.inputs[index]
        old = old_value.const_value.numpy() if old_value is not None else np.zeros(shift.shape, np.float32)
        new = (old.astype(np.float64) - shift.reshape(old.shape)).astype(old.dtype)
        corrected = ir.Value(name=f"{node.name}_bias_corrected", const_value=ir.tensor(new))
        copy.graph.register_initializer(corrected)
        host.replace_input_with(index, corrected)
        if old_value is not None and old_value.is_initializer() and not old_value.uses() and not old_value.is_graph_output():
            copy.graph.initializers.pop(old_value.name)  # the float bias it replaced: ONNX Runtime warns about every one left
    return copy


def _bias_target(node: ir.Node) -> tuple[ir.Node, int] | None:
    """(node holding the bias, input index) for a layer whose bias we can correct, else None."""
    if len(node.inputs) < 2 or node.inputs[1] is None or node.inputs[1].const_value is None:
        return None
    if node.op_type in ("Conv", "Gemm"):
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            bias = node.inputs[2]
            if bias.const_value is None or len(bias.uses()) != 1 or bias.const_value.numpy().ndim != 1:
                return None
        return node, 2
    if node.op_type == "MatMul" and node.inputs[1].const_value.numpy().ndim == 2:
        users = list(node.outputs[0].uses())
        if len(users) != 1 or users[0].node.op_type != "Add":
            return None
        add = users[0].node
        other = 1 - users[0].idx
        bias = add.inputs[other]
        if bias is None or bias.const_value is None or len(bias.uses()) != 1:
            return None
        if bias.const_value.numpy().shape != (node.inputs[1].const_value.numpy().shape[1],):
            return None
        return add, other
    return None


def _output_shift(node: ir.Node, delta: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """dW . E[x]: the mean change of the layer's output per output channel."""
    if node.op_type == "Conv":
        out_channels, in_per_group = delta.shape[:2]
        groups = max(1, mean.size // in_per_group)
        per_out_group = out_channels // groups
        shift = np.empty(out_channels)
        for g in range(groups):
            x = mean[g * in_per_group : (g + 1) * in_per_group]
            rows = delta[g * per_out_group : (g + 1) * per_out_group]
            shift[g * per_out_group : (g + 1) * per_out_group] = np.tensordot(rows, x, axes=([1], [0])).reshape(rows.shape[0], -1).sum(axis=1)
        return shift
    if node.op_type == "Gemm":
        attrs = node.attributes
        if attrs.get_int("transA", 0):
            return None
        matrix = delta.T if attrs.get_int("transB", 0) else delta
        return attrs.get_float("alpha", 1.0) * (mean @ matrix)
    if node.op_type == "MatMul":
        return mean @ delta
    return None


def _dequantized_weights(quantized: ir.Model, nodes: dict[str, ir.Node]) -> dict[str, np.ndarray]:
    """The weights as the quantized model computes with them (DequantizeLinear of int8)."""
    weights = {}
    for node in quantized.graph:
        if node.name not in nodes or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        dq = node.inputs[1].producer()
        if dq is None or dq.op_type != "DequantizeLinear" or any(v is None or v.const_value is None for v in dq.inputs[:2]):
            continue
        q = dq.inputs[0].const_value.numpy().astype(np.float64)
        scale = dq.inputs[1].const_value.numpy().astype(np.float64)
        zero = dq.inputs[2].const_value.numpy().astype(np.float64) if len(dq.inputs) > 2 and dq.inputs[2] is not None else 0.0
        axis = dq.attributes.get_int("axis", 1)
        if np.ndim(scale) == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) else zero
        weights[node.name] = (q - zero) * scale
    return weights
