"""Remove channels for real: slice every weight and constant that follows them, fix shapes.

Given the units to remove, every tensor the analysis follows keeps the positions whose unit
stays, and each edit of the analysis is applied with those kept positions:

1. ``param``: the constant input is replaced by a new initializer sliced along the axis
   (a new one per node input, so a constant shared with another node is never changed
   under it; initializers and Constant nodes nothing reads any more are dropped);
2. ``group``: a depthwise Conv's ``group`` becomes its kept channel count;
3. ``split``: a Split's sizes become its outputs' kept counts (input or attribute, as the
   opset spells it);
4. ``dims``: one entry of a shape (Resize sizes, Reshape shape) becomes the kept count; the
   shape is a constant, or a Concat of one-element pieces (exporters build ``[batch, C]``
   that way), which is then cloned for this node with the new constant piece.

Finally the recorded shape of every followed tensor gets its new channel count.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.prune.channel_groups import ChannelAnalysis, Edit, const_array, shape_entries

__all__ = ["drop_unused_constants", "remove_units", "set_constant", "set_shape_entries"]


def remove_units(model: ir.Model, analysis: ChannelAnalysis, removed: set[int]) -> dict[str, list[int]]:
    """Rewrite ``model`` in place without the channels of ``removed``; returns kept positions per tensor."""
    kept = {name: analysis.kept(name, removed) for name in analysis.slots}
    if not removed:
        return kept
    graph = model.graph
    for edit in analysis.edits:
        _apply(graph, edit, kept, analysis)
    for name, slot in analysis.slots.items():
        _set_dim(slot.value, slot.axis, len(kept[name]))
    drop_unused_constants(graph)
    return kept


def _apply(graph: ir.Graph, edit: Edit, kept: dict[str, list[int]], analysis: ChannelAnalysis) -> None:
    node = edit.node
    positions = kept[edit.slot]
    if edit.kind == "param":
        array = const_array(node.inputs[edit.index])
        if array is None:
            raise ValueError(f"input {edit.index} of {node.op_type} '{node.name}' is no longer constant")
        if len(positions) == array.shape[edit.axis]:
            return
        set_constant(graph, node, edit.index, np.take(array, positions, axis=edit.axis))
    elif edit.kind == "group":
        node.attributes["group"] = ir.AttrInt64("group", len(positions))
    elif edit.kind == "split":
        sizes = np.asarray([len(kept[out.name]) for out in node.outputs], dtype=np.int64)
        if len(node.inputs) > 1 and node.inputs[1] is not None or _opset(graph, node) >= 13:
            node.attributes.pop("num_outputs", None)
            if len(node.inputs) < 2:
                node.resize_inputs(2)
            set_constant(graph, node, 1, sizes)
        else:
            node.attributes["split"] = ir.AttrInt64s("split", [int(s) for s in sizes])
    elif edit.kind == "dims":
        entries = shape_entries(node.inputs[edit.index])
        entries[edit.axis] = len(positions)
        set_shape_entries(graph, node, edit.index, entries)
    else:
        raise ValueError(f"unknown edit kind {edit.kind!r}")


def set_constant(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray) -> ir.Value:
    """Feed input ``index`` of ``node`` from a new initializer holding ``array``."""
    old = node.inputs[index]
    base = old.name if old is not None and old.name else f"{node.name}_input{index}"
    name = _unique(graph, f"{base}_pruned")
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.DataType.from_numpy(array.dtype)
    graph.register_initializer(value)
    node.replace_input_with(index, value)
    return value


def _unique(graph: ir.Graph, name: str) -> str:
    taken = graph.initializers
    if name not in taken:
        return name
    i = 1
    while f"{name}{i}" in taken:
        i += 1
    return f"{name}{i}"


def _set_dim(value: ir.Value, axis: int, size: int) -> None:
    if value.shape is None or axis >= value.shape.rank():
        return
    dims = list(value.shape.dims)
    dims[axis] = size
    value.shape = ir.Shape(dims)


def set_shape_entries(graph: ir.Graph, node: ir.Node, index: int, entries: list[int | None]) -> None:
    """Feed input ``index`` of ``node`` with the shape ``entries`` (see ``shape_entries``): a new
    constant, or a clone of its Concat whose changed constant pieces are replaced."""
    value = node.inputs[index]
    array = const_array(value)
    if array is not None:
        set_constant(graph, node, index, np.asarray(entries, dtype=array.dtype))
        return
    concat = value.producer()
    old = shape_entries(value)
    clone = ir.node("Concat", list(concat.inputs), attributes={"axis": 0}, name=f"{concat.name}_for_{node.name}")
    graph.insert_before(node, clone)
    node.replace_input_with(index, clone.outputs[0])
    for i, (before, after) in enumerate(zip(old, entries, strict=True)):
        if before != after:
            dtype = const_array(concat.inputs[i]).dtype
            set_constant(graph, clone, i, np.asarray([after], dtype=dtype))


def drop_unused_constants(graph: ir.Graph) -> None:
    """Remove the initializers and Constant nodes whose value nothing reads any more."""
    graph_inputs = {v.name for v in graph.inputs}
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output() and name not in graph_inputs:
            del graph.initializers[name]
    for node in list(graph):
        if node.op_type == "Constant" and not node.outputs[0].uses() and not node.outputs[0].is_graph_output():
            graph.remove(node, safe=True)


def _opset(graph: ir.Graph, node: ir.Node) -> int:
    if node.version is not None:
        return node.version
    return graph.opset_imports.get("", 13)
