"""Channel dependency analysis on onnx-ir: which channel slices must be removed together.

Like torch-pruning's DepGraph, but on the exported graph. Every channel of every tensor the
analysis follows is an *element*; ops tie elements together (union-find), and an equivalence
class of elements is a *unit*: one channel that is removed from every tensor it lives in at
once. Units living in the same set of tensors form a *group* (a layer's output channels,
with everything tied to them); a group is what allocation prunes and reports on.

Rules, for the main graph in topological order:

1. Sources: Conv / com.microsoft FusedConv / ConvTranspose (group 1), Gemm, and MatMul with a
   constant 2-D weight give their output fresh channels; the weight's output slice and the
   bias follow them. FusedConv's summed input Z is tied to its output.
2. Consumers: a followed input of those layers slices the weight's input axis (Conv axis 1,
   ConvTranspose axis 0, MatMul rows, Gemm by transB). Grouped (non-depthwise) convolutions
   freeze their input.
3. Pass-through (same channels out): unary activations, Identity/Cast/Dropout,
   BatchNormalization/InstanceNormalization (parameters sliced), pooling, Resize with scale 1
   on channels (constant sizes rewritten), Pad/Slice/Reduce* off the channel axis, Transpose
   (the axis moves), Squeeze/Unsqueeze of other axes, Flatten/Reshape of [N, C, 1, 1] to
   [N, C], LayerNormalization over other axes, and depthwise Conv (weight, bias and group
   follow).
4. Ties: binary elementwise ops join their operands channel by channel (residual Add, the
   Mul of squeeze-excitation); constant operands that broadcast over the channel axis are
   sliced. Concat on the channel axis puts each input at its offset (elsewhere it ties the
   inputs); Split on the channel axis gives each output its range and the sizes are rewritten.
5. Anything else that reads a followed tensor (Reshape, Shape, Gather, Softmax or
   normalization over channels, a subgraph, a model output...) freezes its channels: a unit
   with a frozen element cannot be pruned, and its group says why.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxsmith.passes.prune import channel_layer_rules, channel_tensor_rules
from onnxsmith.passes.prune.channel_graph import (
    Analyser,
    ChannelAnalysis,
    Edit,
    Group,
    Slot,
    WeightLayer,
    const_array,
    shape_entries,
)
from onnxsmith.shape_inference import infer_shapes

__all__ = ["ChannelAnalysis", "Edit", "Group", "Slot", "WeightLayer", "analyse_channels", "const_array", "shape_entries"]

RULES = {**channel_tensor_rules.RULES, **channel_layer_rules.RULES}
MICROSOFT = {"FusedConv", "QuickGelu", "FastGelu", "BiasGelu"}  # com.microsoft ops the rules know


def analyse_channels(model: ir.Model) -> ChannelAnalysis:
    """Follow every layer's output channels through the main graph (see the module docstring).

    The rules need tensor ranks: when some tensors have no shape recorded, onnx's shape
    inference fills them in first (in place; it only adds information).
    """
    if any(v.shape is None for node in model.graph for v in node.outputs):
        infer_shapes(model, strict=False)
    an = Analyser(model)
    graph = model.graph
    for node in graph:
        an.handled.add(id(node))
        known = node.domain in ("", "ai.onnx") or node.domain == "com.microsoft" and node.op_type in MICROSOFT
        rule = RULES.get(node.op_type) if known else None
        if rule is None:
            an.freeze_inputs(node, f"consumed by {node.op_type} '{node.name}', which the analysis does not follow")
        else:
            rule(an, node)
    for value in graph.outputs:
        an.freeze(value, f"'{value.name}' is a model output")
    for name, slot in list(an.slots.items()):
        if any(id(use.node) not in an.handled for use in slot.value.uses()):
            an.freeze(slot.value, f"'{name}' is read inside a subgraph or function")
    return an.result()
