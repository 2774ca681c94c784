"""The weighted layers prune and lowrank work on, and one matrix view of their weights.

A layer is a MatMul, Gemm, Conv or com.microsoft FusedConv whose weight is a constant:
an initializer, a Constant node, or a Transpose of either (unoptimized exports transpose
Linear weights at run time). Every weight is seen as a matrix ``[outputs, reduction]``:

1. MatMul ``y = x @ W``, W [k, n]: the matrix is W^T [n, k] (row = output feature).
2. Gemm ``y = alpha * x @ op(B) + beta * C`` with transA=0: B^T when transB=0, B when transB=1.
3. Conv (and FusedConv), W [o, c/g, kh, kw]: W transposed to [o, kh, kw, c/g] then flattened,
   so the input channel runs fastest along a row. Groups of consecutive columns are then
   input channels at one kernel position, the axis sparse kernels group N:M along (NHWC).

``feature_index`` maps each column to the input feature it multiplies: the last axis of a
MatMul/Gemm input, the channel (axis 1) of a Conv input, per group for grouped Conv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

__all__ = ["SUPPORTED_OPS", "WeightedLayer", "constant_value", "drop_if_unused", "find_layers", "set_weight"]

SUPPORTED_OPS = ("MatMul", "Gemm", "Conv", "FusedConv")
_CONV_LIKE = ("Conv", "FusedConv")


@dataclass(eq=False)
class WeightedLayer:
    node: ir.Node
    weight: np.ndarray  # as the node consumes it (after a Transpose producer, if any)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def is_conv(self) -> bool:
        return self.node.op_type in _CONV_LIKE

    @property
    def input_name(self) -> str:
        return self.node.inputs[0].name

    @property
    def channel_axis(self) -> int:
        """The axis of the layer's input that holds its features (1 for Conv, last otherwise)."""
        return 1 if self.is_conv else -1

    @property
    def groups(self) -> int:
        attr = self.node.attributes.get("group")
        return int(attr.value) if attr is not None and self.is_conv else 1

    def bias_size(self) -> int:
        index = 2
        if len(self.node.inputs) > index and self.node.inputs[index] is not None:
            value = self.node.inputs[index]
            if value.const_value is not None:
                return int(np.prod(value.const_value.shape))
        return 0

    def matrix(self) -> np.ndarray:
        """The weight as ``[outputs, reduction]`` (see the module docstring)."""
        w = self.weight
        if self.is_conv:
            return np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)
        if self.op_type == "Gemm" and _attr(self.node, "transB", 0):
            return w
        return w.T

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Inverse of ``matrix()``: the weight in the layout the node consumes."""
        w = self.weight
        if self.is_conv:
            kernel = w.shape[2:]
            shaped = matrix.reshape(w.shape[0], *kernel, w.shape[1])
            return np.ascontiguousarray(np.moveaxis(shaped, -1, 1)).astype(w.dtype)
        if self.op_type == "Gemm" and _attr(self.node, "transB", 0):
            return np.ascontiguousarray(matrix).astype(w.dtype)
        return np.ascontiguousarray(matrix.T).astype(w.dtype)

    def feature_index(self) -> np.ndarray:
        """``[outputs, reduction]`` ints: the input feature each matrix entry multiplies."""
        rows, cols = self.matrix().shape
        if not self.is_conv:
            return np.broadcast_to(np.arange(cols), (rows, cols))
        per_group = self.weight.shape[1]
        local = np.arange(cols) % per_group  # channel runs fastest along a row
        group = np.arange(rows) // max(rows // self.groups, 1)
        return group[:, None] * per_group + local[None, :]


def find_layers(model: ir.Model, ops: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[list[WeightedLayer], list[str]]:
    """The layers of ``model``'s main graph with a constant float32 weight, and why other
    nodes of ``ops`` were skipped. Unnamed or duplicate-named nodes are given unique names
    first: records, shadows and ``exclude`` find layers by name."""
    layers: list[WeightedLayer] = []
    skipped: list[str] = []
    variable: list[str] = []  # products of two activations, such as attention scores
    _name_nodes(model)
    for node in model.graph:
        if node.op_type not in ops or node.domain not in ("", "com.microsoft"):
            continue
        if node.name in exclude:
            skipped.append(f"{node.name}: excluded")
            continue
        why = _unsupported(node)
        weight = None if why else _constant(node.inputs[1])
        if why:
            skipped.append(f"{node.name}: {why}")
            continue
        if weight is None:
            variable.append(node.name)
            continue
        if weight.dtype != np.float32 or (node.op_type in ("MatMul", "Gemm") and weight.ndim != 2) or (node.op_type in _CONV_LIKE and weight.ndim < 3):
            skipped.append(f"{node.name}: weight of shape {list(weight.shape)} and dtype {weight.dtype} is not a float32 matrix or kernel")
            continue
        layers.append(WeightedLayer(node, weight))
    if variable:
        more = f" and {len(variable) - 3} more" if len(variable) > 3 else ""
        skipped.append(f"{len(variable)} nodes whose second input is not a constant (e.g. attention products): "
                       f"{', '.join(variable[:3])}{more}")
    return layers, skipped


def set_weight(model: ir.Model, layer: WeightedLayer, weight: np.ndarray, suffix: str) -> None:
    """Make ``layer`` use ``weight``: in place when the initializer feeds this node only,
    otherwise as a new initializer ``<initializer>.<suffix>`` (a tied or transposed weight)."""
    value = layer.node.inputs[1]
    tensor = ir.tensor(weight, name=value.name)
    layer.weight = weight
    if value.is_initializer() and len(value.uses()) == 1 and not value.is_graph_output():
        value.const_value = tensor
        value.shape = ir.Shape(weight.shape)
        return
    layer.node.replace_input_with(1, constant_value(model, weight, f"{value.name}.{suffix}"))
    drop_if_unused(model, value)


def drop_if_unused(model: ir.Model, value: ir.Value) -> None:
    """Remove ``value`` once nothing reads it: its initializer, or its producer (a Constant or
    Transpose of a weight), and then whatever that producer read."""
    if value.uses() or value.is_graph_output() or value.is_graph_input():
        return
    if value.is_initializer():
        model.graph.initializers.pop(value.name)
        return
    producer = value.producer()
    if producer is not None and producer.graph is model.graph and producer.op_type in ("Constant", "Transpose"):
        inputs = [v for v in producer.inputs if v is not None]
        model.graph.remove(producer, safe=True)
        for source in inputs:
            drop_if_unused(model, source)


def constant_value(model: ir.Model, array: np.ndarray, name: str) -> ir.Value:
    """A new float initializer of the main graph, its name made unique."""
    taken = set(model.graph.initializers)
    unique, i = name, 1
    while unique in taken:
        unique, i = f"{name}.{i}", i + 1
    value = ir.Value(name=unique, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                     const_value=ir.tensor(array, name=unique))
    model.graph.register_initializer(value)
    return value


def _name_nodes(model: ir.Model) -> None:
    """Give unnamed or duplicate-named nodes unique names: records and shadows find layers by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)


def _unsupported(node: ir.Node) -> str:
    if len(node.inputs) < 2 or node.inputs[1] is None or node.inputs[0] is None:
        return "it has no weight input"
    if node.op_type == "Gemm" and _attr(node, "transA", 0):
        return "Gemm with transA=1 is not supported"
    return ""


def _attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def _constant(value: ir.Value) -> np.ndarray | None:
    """The array behind ``value`` when it is constant: an initializer, a Constant node, or
    a Transpose of one of those."""
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is None:
        return None
    if producer.op_type == "Constant" and producer.domain == "" and "value" in producer.attributes:
        return producer.attributes["value"].value.numpy()
    if producer.op_type == "Transpose" and producer.domain == "" and producer.inputs[0] is not None:
        source = _constant(producer.inputs[0])
        if source is None:
            return None
        perm = producer.attributes.get("perm")
        return np.transpose(source, tuple(perm.value) if perm is not None else None)
    return None
