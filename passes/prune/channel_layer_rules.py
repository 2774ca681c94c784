"""Channel rules for the layers with weights: where channels start, end, or pass through.

1. Conv / com.microsoft FusedConv / ConvTranspose (group 1), Gemm, and MatMul with a constant
   2-D weight give their output fresh channels; the weight's output slice and the bias follow
   them; FusedConv's summed input Z is tied to its output.
2. A followed input of those layers slices the weight's input axis (Conv axis 1,
   ConvTranspose axis 0, MatMul rows, Gemm by transB); grouped (non-depthwise)
   convolutions freeze their input and output.
3. A depthwise Conv passes its input's channels through (weight, bias and group follow);
   BatchNormalization and InstanceNormalization too (their parameters sliced);
   LayerNormalization only over axes after the channels.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.prune.channel_graph import Analyser, Edit, Slot, WeightLayer, const_array

__all__ = ["RULES"]


def _op_Conv(an: Analyser, node: ir.Node) -> None:
    _conv(an, node, "conv")


def _op_FusedConv(an: Analyser, node: ir.Node) -> None:
    _conv(an, node, "conv")


def _op_ConvTranspose(an: Analyser, node: ir.Node) -> None:
    _conv(an, node, "convtranspose")


def _conv(an: Analyser, node: ir.Node, kind: str) -> None:
    x, w = node.inputs[0], node.inputs[1]
    weight = const_array(w)
    src = an.slot(x)
    out = node.outputs[0]
    group = an.int_attr(node, "group", 1)
    if weight is None or weight.ndim < 3:
        an.freeze_inputs(node, f"{node.op_type} '{node.name}' has no constant weight")
        return
    if kind == "conv" and group > 1 and weight.shape[1] == 1 and weight.shape[0] == group:
        _depthwise(an, node, src, weight)
        return
    out_axis, in_axis = (0, 1) if kind == "conv" else (1, 0)
    layer = WeightLayer(node, kind, 1, out_axis, in_axis)
    an.layers.append(layer)
    if src is not None:
        if group != 1:
            an.freeze(x, f"input of grouped {node.op_type} '{node.name}' (group {group})")
        elif src.axis != 1:
            an.freeze(x, f"{node.op_type} '{node.name}' reads channels on axis {src.axis}")
        else:
            layer.in_slot = x.name
            an.edits.append(Edit("param", node, x.name, 1, in_axis))
    out_channels = weight.shape[out_axis] * (group if kind == "convtranspose" else 1)
    an.track(out, 1, an.fresh(out_channels))
    layer.out_slot = out.name
    if group != 1:
        an.freeze(out, f"output of grouped {node.op_type} '{node.name}' (group {group})")
        return
    an.edits.append(Edit("param", node, out.name, 1, out_axis))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        an.edits.append(Edit("param", node, out.name, 2, 0))
    if len(node.inputs) > 3 and node.inputs[3] is not None:  # FusedConv's Z, summed into the output
        z = an.slot(node.inputs[3])
        if z is None or z.axis != 1 or len(z.ids) != out_channels:
            an.freeze(out, f"FusedConv '{node.name}' adds a tensor whose channels are not followed")
            an.freeze(node.inputs[3], f"FusedConv '{node.name}' adds it to its output")
        else:
            an.union(z.ids, an.slots[out.name].ids)


def _depthwise(an: Analyser, node: ir.Node, src: Slot | None, weight: np.ndarray) -> None:
    out = node.outputs[0]
    layer = WeightLayer(node, "conv", 1, 0, 1, depthwise=True)
    an.layers.append(layer)
    if src is None or src.axis != 1 or len(src.ids) != weight.shape[0]:
        an.freeze(node.inputs[0], f"depthwise Conv '{node.name}' input channels are not followed")
        return
    an.track(out, 1, src.ids)
    layer.in_slot, layer.out_slot = node.inputs[0].name, out.name
    an.edits.append(Edit("param", node, out.name, 1, 0))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        an.edits.append(Edit("param", node, out.name, 2, 0))
    an.edits.append(Edit("group", node, out.name))


def _op_Gemm(an: Analyser, node: ir.Node) -> None:
    weight = const_array(node.inputs[1])
    if weight is None or weight.ndim != 2 or an.int_attr(node, "transA", 0):
        an.freeze_inputs(node, f"Gemm '{node.name}' has no constant weight (or transposes A)")
        return
    trans_b = an.int_attr(node, "transB", 0)
    out_axis, in_axis = (0, 1) if trans_b else (1, 0)
    _linear(an, node, "gemm", weight, out_axis, in_axis, 1)
    c = node.inputs[2] if len(node.inputs) > 2 else None
    bias = const_array(c)
    out = node.outputs[0]
    if c is not None and out.name in an.slots:
        if bias is None:
            an.freeze(out, f"Gemm '{node.name}' has a bias that is not constant")
        elif bias.ndim >= 1 and bias.shape[-1] == weight.shape[out_axis] and weight.shape[out_axis] > 1:
            an.edits.append(Edit("param", node, out.name, 2, bias.ndim - 1))


def _op_MatMul(an: Analyser, node: ir.Node) -> None:
    weight = const_array(node.inputs[1])
    if weight is None or weight.ndim != 2:
        an.freeze_inputs(node, f"MatMul '{node.name}' multiplies two computed tensors")
        return
    _linear(an, node, "matmul", weight, 1, 0, 1)


def _linear(an: Analyser, node: ir.Node, kind: str, weight: np.ndarray, out_axis: int, in_axis: int, w_index: int) -> None:
    a, out = node.inputs[0], node.outputs[0]
    layer = WeightLayer(node, kind, w_index, out_axis, in_axis)
    an.layers.append(layer)
    src = an.slot(a)
    if src is not None:
        rank = an.rank(a)
        if rank is None or src.axis != rank - 1:
            an.freeze(a, f"{node.op_type} '{node.name}' does not reduce over the channel axis")
        else:
            layer.in_slot = a.name
            an.edits.append(Edit("param", node, a.name, w_index, in_axis))
    rank_out = an.rank(out) or an.rank(a)
    if rank_out is None:
        return
    an.track(out, rank_out - 1, an.fresh(weight.shape[out_axis]))
    layer.out_slot = out.name
    an.edits.append(Edit("param", node, out.name, w_index, out_axis))


def _op_BatchNormalization(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    if src.axis != 1:
        an.freeze(node.inputs[0], f"BatchNormalization '{node.name}' normalizes axis 1, not the channels")
        return
    for i in range(1, min(5, len(node.inputs))):
        if const_array(node.inputs[i]) is None:
            an.freeze(node.inputs[0], f"BatchNormalization '{node.name}' has computed parameters")
            return
    an.edits.extend(Edit("param", node, node.outputs[0].name, i, 0) for i in range(1, min(5, len(node.inputs))))
    an.pass_through(node, src)


def _op_InstanceNormalization(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    if src.axis != 1 or const_array(node.inputs[1]) is None or const_array(node.inputs[2]) is None:
        an.freeze(node.inputs[0], f"InstanceNormalization '{node.name}' cannot follow these channels")
        return
    an.edits.extend(Edit("param", node, node.outputs[0].name, i, 0) for i in (1, 2))
    an.pass_through(node, src)


def _op_LayerNormalization(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    rank = an.rank(node.inputs[0])
    axis = an.int_attr(node, "axis", -1)
    if rank is None:
        an.freeze(node.inputs[0], f"LayerNormalization '{node.name}' input rank unknown")
        return
    if (axis + rank if axis < 0 else axis) <= src.axis:
        an.freeze(node.inputs[0], f"LayerNormalization '{node.name}' normalizes over the channels")
        return
    an.pass_through(node, src)


RULES = {
    "Conv": _op_Conv,
    "FusedConv": _op_FusedConv,
    "ConvTranspose": _op_ConvTranspose,
    "Gemm": _op_Gemm,
    "MatMul": _op_MatMul,
    "BatchNormalization": _op_BatchNormalization,
    "InstanceNormalization": _op_InstanceNormalization,
    "LayerNormalization": _op_LayerNormalization,
}
