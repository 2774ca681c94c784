"""Channel rules for the ops between layers: what passes channels through, what ties them.

1. Pass-through (same channels out): unary activations, Identity/Cast/Dropout, pooling,
   Resize with scale 1 on the channels (constant sizes rewritten), Pad/Slice/Reduce* off the
   channel axis, Transpose (the axis moves), Squeeze/Unsqueeze of other axes, and
   Flatten/Reshape of [N, C, 1, 1] to [N, C].
2. Ties: binary elementwise ops join their operands channel by channel (residual Add, the
   Mul of squeeze-excitation); constant operands that broadcast over the channel axis are
   sliced. Concat on the channel axis puts each input at its offset (elsewhere it ties the
   inputs); Split on the channel axis gives each output its range, its sizes rewritten.
Anything a rule cannot follow freezes the channels it reads, with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.prune.channel_graph import Analyser, Edit, const_array, shape_entries

__all__ = ["RULES"]

_UNARY = {
    "Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign",
    "Clip", "Erf", "Gelu", "Identity", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Cast", "Dropout", "Floor",
    "Ceil", "Round", "Sin", "Cos", "Mish", "ThresholdedRelu", "QuickGelu", "FastGelu", "BiasGelu",
}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "PRelu"}
_POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "ReduceLogSum", "ReduceLogSumExp"}


def _unary(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    if node.op_type in ("BiasGelu", "FastGelu"):  # com.microsoft: an optional per-channel bias
        _binary(an, node)
        return
    for extra in node.inputs[1:]:  # Clip's bounds, Dropout's ratio: must be scalars
        if extra is not None and an.slot(extra) is not None:
            an.freeze_inputs(node, f"{node.op_type} '{node.name}' takes two followed tensors")
            return
        array = const_array(extra) if extra is not None else None
        if extra is not None and (array is None or array.size != 1) and node.op_type != "Dropout":
            an.freeze_inputs(node, f"{node.op_type} '{node.name}' has a per-element parameter")
            return
    an.pass_through(node, src)


def _pool(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    if src.axis != 1:
        an.freeze(node.inputs[0], f"{node.op_type} '{node.name}' pools over the channel axis")
        return
    an.pass_through(node, src)


def _reduce(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    rank = an.rank(node.inputs[0])
    axes = an.axes_input(node, 1, "axes") if an.opset >= 18 or node.op_type == "ReduceSum" else an.ints_attr(node, "axes")
    if rank is None or not axes:
        an.freeze(node.inputs[0], f"{node.op_type} '{node.name}' may reduce over the channels")
        return
    axes = [a + rank if a < 0 else a for a in axes]
    if src.axis in axes:
        an.freeze(node.inputs[0], f"{node.op_type} '{node.name}' reduces over the channels")
        return
    keep = an.int_attr(node, "keepdims", 1)
    an.pass_through(node, src, src.axis if keep else src.axis - sum(a < src.axis for a in axes))


def _op_Resize(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    scales = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    sizes_value = node.inputs[3] if len(node.inputs) > 3 else None
    if scales is not None and scales.size:
        if scales.size <= src.axis or scales[src.axis] != 1:
            an.freeze(node.inputs[0], f"Resize '{node.name}' scales the channel axis")
            return
    elif sizes_value is not None:
        if const_array(sizes_value) is None:
            an.freeze(node.inputs[0], f"Resize '{node.name}' has computed sizes")
            return
        an.edits.append(Edit("dims", node, node.outputs[0].name, 3, src.axis))
    else:
        an.freeze(node.inputs[0], f"Resize '{node.name}' has neither constant scales nor sizes")
        return
    an.pass_through(node, src)


def _op_Upsample(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    scales = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if scales is None or scales.size <= src.axis or scales[src.axis] != 1:
        an.freeze(node.inputs[0], f"Upsample '{node.name}' may scale the channel axis")
        return
    an.pass_through(node, src)


def _op_Pad(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    rank = an.rank(node.inputs[0])
    pads = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if pads is None and "pads" in node.attributes:
        pads = np.asarray(an.ints_attr(node, "pads"))
    axes = an.axes_input(node, 3, "axes") if len(node.inputs) > 3 else None
    if pads is None or rank is None:
        an.freeze(node.inputs[0], f"Pad '{node.name}' has computed pads")
        return
    axes = list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in axes]
    half = len(pads) // 2
    if src.axis in axes:
        i = axes.index(src.axis)
        if pads[i] != 0 or pads[i + half] != 0:
            an.freeze(node.inputs[0], f"Pad '{node.name}' pads the channel axis")
            return
    an.pass_through(node, src)


def _op_Slice(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    rank = an.rank(node.inputs[0])
    axes = an.axes_input(node, 3, "axes") if an.opset >= 10 else an.ints_attr(node, "axes")
    if rank is None or axes is None or any(const_array(v) is None for v in node.inputs[1:3]):
        an.freeze(node.inputs[0], f"Slice '{node.name}' may slice the channel axis")
        return
    if src.axis in [a + rank if a < 0 else a for a in axes]:
        an.freeze(node.inputs[0], f"Slice '{node.name}' slices the channel axis")
        return
    an.pass_through(node, src)


def _op_Transpose(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    perm = an.ints_attr(node, "perm")
    rank = an.rank(node.inputs[0])
    if perm is None:
        if rank is None:
            an.freeze(node.inputs[0], f"Transpose '{node.name}' of unknown rank")
            return
        perm = list(range(rank))[::-1]
    an.pass_through(node, src, perm.index(src.axis))


def _op_Squeeze(an: Analyser, node: ir.Node) -> None:
    _squeeze(an, node, squeeze=True)


def _op_Unsqueeze(an: Analyser, node: ir.Node) -> None:
    _squeeze(an, node, squeeze=False)


def _squeeze(an: Analyser, node: ir.Node, *, squeeze: bool) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    axes = an.axes_input(node, 1, "axes")
    rank = an.rank(node.inputs[0] if squeeze else node.outputs[0])
    if axes is None or rank is None:
        an.freeze(node.inputs[0], f"{node.op_type} '{node.name}' has unknown axes")
        return
    axes = sorted(a + rank if a < 0 else a for a in axes)
    if squeeze:
        if src.axis in axes:
            an.freeze(node.inputs[0], f"Squeeze '{node.name}' removes the channel axis")
            return
        axis = src.axis - sum(a < src.axis for a in axes)
    else:
        axis = src.axis
        for a in axes:
            if a <= axis:
                axis += 1
    an.pass_through(node, src, axis)


def _op_Flatten(an: Analyser, node: ir.Node) -> None:
    if an.slot(node.inputs[0]) is None:
        return
    if an.int_attr(node, "axis", 1) != 1 or not _trailing_ones(an, node.inputs[0]):
        an.freeze(node.inputs[0], f"Flatten '{node.name}' mixes the channel axis with others")
        return
    an.pass_through(node, an.slots[node.inputs[0].name], 1)


def _op_Reshape(an: Analyser, node: ir.Node) -> None:
    """Only [N, C, 1, 1...] -> [N, C] (a classifier's flatten) keeps the channels whole."""
    src = an.slot(node.inputs[0])
    if src is None:
        return
    entries = shape_entries(node.inputs[1])
    batch = an.dim(node.inputs[0], 0)
    if entries is None or len(entries) != 2 or not _trailing_ones(an, node.inputs[0]) or entries[0] not in (0, -1, None, batch) \
            or entries[1] is None:
        an.freeze(node.inputs[0], f"Reshape '{node.name}' mixes the channel axis with others")
        return
    if entries[1] != -1:
        if entries[1] != len(src.ids):
            an.freeze(node.inputs[0], f"Reshape '{node.name}' changes the channel count")
            return
        an.edits.append(Edit("dims", node, node.outputs[0].name, 1, 1))
    an.pass_through(node, src, 1)


def _trailing_ones(an: Analyser, value: ir.Value) -> bool:
    """The channels are axis 1 and every later dim is a static 1."""
    slot, rank = an.slot(value), an.rank(value)
    return slot is not None and rank is not None and slot.axis == 1 and all(an.dim(value, i) == 1 for i in range(2, rank))


def _binary(an: Analyser, node: ir.Node) -> None:
    inputs = [v for v in node.inputs if v is not None]
    followed = [(i, an.slot(v)) for i, v in enumerate(node.inputs) if v is not None and an.slot(v) is not None]
    if not followed:
        return
    out = node.outputs[0]
    out_rank = an.rank(out) or max((an.rank(v) or 0) for v in inputs)
    # the channel axis counted from the end, which broadcasting aligns
    from_end = {an.rank(node.inputs[i]) - s.axis if an.rank(node.inputs[i]) is not None else None for i, s in followed}
    sizes = {len(s.ids) for _, s in followed}
    if None in from_end or len(from_end) != 1 or len(sizes) != 1:
        an.freeze_inputs(node, f"{node.op_type} '{node.name}' combines channels on different axes or counts")
        return
    back = from_end.pop()
    channels = sizes.pop()
    first = followed[0][1]
    for _, s in followed[1:]:
        an.union(first.ids, s.ids)
    for i, value in enumerate(node.inputs):
        if value is None or an.slot(value) is not None:
            continue
        rank = an.rank(value)
        array = const_array(value)
        if array is not None:
            axis = array.ndim - back
            if axis >= 0 and array.shape[axis] == channels and channels > 1:
                an.edits.append(Edit("param", node, out.name, i, axis))
            elif axis >= 0 and array.shape[axis] != 1:
                an.freeze_inputs(node, f"{node.op_type} '{node.name}' has a constant of another size on the channel axis")
                return
            continue
        dim = an.dim(value, rank - back) if rank is not None and rank - back >= 0 else (1 if rank is not None else None)
        if dim != 1:
            an.freeze_inputs(node, f"{node.op_type} '{node.name}' combines them with '{value.name}', whose channels are not followed")
            return
    an.track(out, out_rank - back, first.ids)


def _op_Concat(an: Analyser, node: ir.Node) -> None:
    followed = [an.slot(v) for v in node.inputs]
    if not any(followed):
        return
    first = next(s for s in followed if s is not None)
    rank = an.rank(node.outputs[0]) or an.rank(node.inputs[0])
    if rank is None:
        an.freeze_inputs(node, f"Concat '{node.name}' of unknown rank")
        return
    axis = an.int_attr(node, "axis", 0)
    axis = axis + rank if axis < 0 else axis
    if any(s is not None and s.axis != first.axis for s in followed):
        an.freeze_inputs(node, f"Concat '{node.name}' joins tensors with channels on different axes")
        return
    if axis != first.axis:  # concatenated elsewhere: every input keeps the same channels
        if any(s is None or len(s.ids) != len(first.ids) for s in followed):
            an.freeze_inputs(node, f"Concat '{node.name}' joins followed and other tensors")
            return
        for s in followed[1:]:
            an.union(first.ids, s.ids)
        an.track(node.outputs[0], first.axis, first.ids)
        return
    ids: list[int] = []
    frozen_parts: list[int] = []
    for value, s in zip(node.inputs, followed, strict=True):
        if s is not None:
            ids.extend(s.ids)
            continue
        size = an.dim(value, axis)
        if size is None:
            an.freeze_inputs(node, f"Concat '{node.name}' has an input of unknown channel count")
            return
        part = an.fresh(size)
        frozen_parts.extend(part)
        ids.extend(part)
    an.track(node.outputs[0], axis, ids)
    for e in frozen_parts:
        an.frozen_elements[e] = f"Concat '{node.name}' also joins channels the analysis does not follow"


def _op_Split(an: Analyser, node: ir.Node) -> None:
    src = an.slot(node.inputs[0])
    if src is None:
        return
    rank = an.rank(node.inputs[0])
    axis = an.int_attr(node, "axis", 0)
    axis = axis + rank if axis < 0 and rank is not None else axis
    if axis != src.axis:
        an.pass_through(node, src, outputs=len(node.outputs))
        return
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        sizes = const_array(node.inputs[1])
    elif "split" in node.attributes:
        sizes = np.asarray(an.ints_attr(node, "split"))
    else:
        n = len(node.outputs)
        sizes = np.full(n, len(src.ids) // n) if len(src.ids) % n == 0 else None
    if sizes is None or int(np.sum(sizes)) != len(src.ids):
        an.freeze(node.inputs[0], f"Split '{node.name}' has sizes the analysis cannot read")
        return
    offset = 0
    for out, size in zip(node.outputs, sizes, strict=True):
        an.track(out, axis, src.ids[offset : offset + int(size)])
        offset += int(size)
    an.edits.append(Edit("split", node, node.inputs[0].name))


RULES = {
    **dict.fromkeys(_UNARY, _unary),
    **dict.fromkeys(_BINARY, _binary),
    **dict.fromkeys(_POOL, _pool),
    **dict.fromkeys(_REDUCE, _reduce),
    "Resize": _op_Resize,
    "Upsample": _op_Upsample,
    "Pad": _op_Pad,
    "Slice": _op_Slice,
    "Transpose": _op_Transpose,
    "Squeeze": _op_Squeeze,
    "Unsqueeze": _op_Unsqueeze,
    "Flatten": _op_Flatten,
    "Reshape": _op_Reshape,
    "Concat": _op_Concat,
    "Split": _op_Split,
}
