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

_BLOCK_VALUES = 1 << 22  # weight values per block of the shift's float64 arithmetic (32 MB)


def bias_corrections(
    measure: Measurements, float_model: ir.Model, quantized: ir.Model, layers: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per layer name (of ``float_model``), the shift to subtract from its bias."""
    nodes = {n.name: n for n in float_model.graph if n.name in layers}
    dequantizers = _weight_dequantizers(quantized, nodes)
    eligible = {name: node for name, node in nodes.items() if name in dequantizers and _bias_target(node) is not None}
    requests = {node.inputs[0].name: ChannelSums(1 if node.op_type == "Conv" else -1) for node in eligible.values()}
    means = {name: stats.mean for name, stats in measure.reduce(float_model, requests, feeds).items()}
    corrections = {}
    for name, node in eligible.items():
        shift = _output_shift(node, dequantizers[name], means[node.inputs[0].name])
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


def _output_shift(node: ir.Node, dequantize: ir.Node, mean: np.ndarray) -> np.ndarray | None:
    """dW . E[x]: the mean change of the layer's output per output channel, dW read from the
    quantized model's DequantizeLinear ``dequantize``. In float64, a block of the weight's
    first axis at a time: a 1 GB weight whole took 9 GB of float64 copies at once."""
    attrs = node.attributes
    if node.op_type == "Gemm" and attrs.get_int("transA", 0):
        return None
    weight = node.inputs[1].const_value.numpy()
    if weight.size == 0:
        return None
    rows_out = node.op_type == "Conv" or (node.op_type == "Gemm" and attrs.get_int("transB", 0))  # axis 0: output channels
    shift = np.zeros(weight.shape[0] if rows_out else weight.shape[1])
    step = max(1, _BLOCK_VALUES // (weight.size // weight.shape[0]))  # rows per block
    for start in range(0, weight.shape[0], step):
        rows = slice(start, min(weight.shape[0], start + step))
        delta = _dequantized_rows(dequantize, rows, weight.ndim) - weight[rows].astype(np.float64)
        if node.op_type == "Conv":
            shift[rows] = _conv_shift(delta, mean, rows, weight.shape)
        elif rows_out:  # Gemm with transB: delta is [N, K]
            shift[rows] = delta @ mean
        else:  # MatMul, Gemm: delta is [K, N]
            shift += mean[rows] @ delta
    return shift * attrs.get_float("alpha", 1.0) if node.op_type == "Gemm" else shift


def _conv_shift(delta: np.ndarray, mean: np.ndarray, rows: slice, shape: tuple[int, ...]) -> np.ndarray:
    """The shift of output channels ``rows`` of a (grouped) Conv: each reads its group's input means."""
    out_channels, in_per_group = shape[:2]
    groups = max(1, mean.size // in_per_group)
    group_of_row = np.arange(rows.start, rows.stop) // (out_channels // groups)
    inputs = mean.reshape(groups, in_per_group)[group_of_row]  # [rows, in_per_group]
    return np.einsum("oik,oi->o", delta.reshape(delta.shape[0], in_per_group, -1), inputs)


def _weight_dequantizers(quantized: ir.Model, nodes: dict[str, ir.Node]) -> dict[str, ir.Node]:
    """Per layer of ``nodes``, the DequantizeLinear of int8 constants its weight is read through in ``quantized``."""
    found = {}
    for node in quantized.graph:
        if node.name not in nodes or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        dq = node.inputs[1].producer()
        if dq is None or dq.op_type != "DequantizeLinear" or any(v is None or v.const_value is None for v in dq.inputs[:2]):
            continue
        found[node.name] = dq
    return found


def _dequantized_rows(dq: ir.Node, rows: slice, rank: int) -> np.ndarray:
    """Rows ``rows`` (first axis) of the weight as the quantized model computes with it, in float64."""
    q = dq.inputs[0].const_value.numpy()[rows].astype(np.float64)
    scale = dq.inputs[1].const_value.numpy().astype(np.float64)
    zero = dq.inputs[2].const_value.numpy().astype(np.float64) if len(dq.inputs) > 2 and dq.inputs[2] is not None else 0.0
    if np.ndim(scale) == 1 and scale.size > 1:
        axis = dq.attributes.get_int("axis", 1) % rank
        shape = [1] * rank
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zero = np.reshape(zero, shape) if np.ndim(zero) else zero
        if axis == 0:
            scale = scale[rows]
            zero = zero[rows] if np.ndim(zero) else zero
    q -= zero
    q *= scale
    return q
