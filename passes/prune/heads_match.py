"""Recognise multi-head attention blocks in an exported transformer (the unfused form).

The shape matched, from each Softmax (as torch exports BERT-style self-attention, e.g. the
MiniLM of tests/realmodels.py)::

    q = MatMul(x, Wq) [+ bq] -> Reshape [.., S, H, d] -> Transpose   (scalar Mul/Div allowed)
    k = MatMul(x, Wk) [+ bk] -> Reshape/Transpose ... (to K^T)
    v = MatMul(x, Wv) [+ bv] -> Reshape -> Transpose
    p = Softmax(MatMul(q, k) [* s] [+ mask])  (then optionally Where(IsNaN(p), 0, p))
    y = MatMul(Transpose/Reshape(MatMul(p, v)), Wo) [+ bo]

Between a projection and the head-split tensors only layout ops (Transpose, Reshape,
Squeeze/Unsqueeze, Cast, Identity) and multiplications by a scalar constant are allowed, and
no tensor on those paths may be read outside the block. The head size d comes from a static
last dim on the value path (its shapes, or its Reshape's constant), H = width / d.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from onnxsmith.passes.prune.channel_groups import const_array

__all__ = ["AttentionBlock", "Projection", "find_attention"]

_LAYOUT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Identity"}


@dataclass
class Projection:
    """``MatMul(x, W)`` with a constant W [in, out], and the Add of a constant bias after it."""

    matmul: ir.Node
    add: ir.Node | None = None
    bias_index: int | None = None

    @property
    def output(self) -> ir.Value:
        return (self.add or self.matmul).outputs[0]


@dataclass
class AttentionBlock:
    softmax: ir.Node
    q: Projection
    k: Projection
    v: Projection
    out: Projection  # the output projection; its weight rows are the heads' slices
    heads: int
    head_dim: int
    reshapes: list[ir.Node] = field(default_factory=list)  # on the paths between the projections
    inner: list[ir.Value] = field(default_factory=list)  # every tensor between the projections

    @property
    def name(self) -> str:
        return self.out.matmul.name


def find_attention(model: ir.Model) -> tuple[list[AttentionBlock], list[str]]:
    """Every attention block recognised in the main graph, and why other Softmaxes were not."""
    blocks, notes = [], []
    for node in model.graph:
        if node.op_type != "Softmax":
            continue
        try:
            blocks.append(_match(node))
        except _NoMatch as e:
            notes.append(f"Softmax '{node.name}' is not a recognised attention block: {e}")
    return blocks, notes


class _NoMatch(Exception):
    pass


def _match(softmax: ir.Node) -> AttentionBlock:
    path = _Path()
    scores = path.back_through(softmax.inputs[0], allow_add=True)
    if scores is None or scores.op_type != "MatMul" or _weight(scores) is not None:
        raise _NoMatch("its input is not a product of two computed tensors")
    q = path.projection(scores.inputs[0], "query")
    k = path.projection(scores.inputs[1], "key")
    context = path.forward_to_matmul(softmax.outputs[0])
    v = path.projection(context.inputs[1], "value")
    out = path.forward_to_projection(context.outputs[0])
    width = _weight(v.matmul).shape[1]
    for name, proj in (("query", q), ("key", k)):
        if _weight(proj.matmul).shape[1] != width:
            raise _NoMatch(f"the {name} projection is {_weight(proj.matmul).shape[1]} wide, the value one {width}")
    if _weight(out.matmul).shape[0] != width:
        raise _NoMatch(f"the output projection reads {_weight(out.matmul).shape[0]} features, not {width}")
    if len({id(q.matmul), id(k.matmul), id(v.matmul)}) != 3:
        raise _NoMatch("query, key and value share a projection")
    head_dim = _head_dim(context, path.reshapes)
    if head_dim is None or width % head_dim:
        raise _NoMatch("the head size is not static")
    block = AttentionBlock(softmax, q, k, v, out, width // head_dim, head_dim, path.reshapes, path.values)
    _check_private(block)
    return block


class _Path:
    """Walks through layout and scalar ops, remembering the Reshapes and tensors it passed."""

    def __init__(self) -> None:
        self.reshapes: list[ir.Node] = []
        self.values: list[ir.Value] = []

    def back_through(self, value: ir.Value | None, *, allow_add: bool = False) -> ir.Node | None:
        """The first producer up from ``value`` that is not layout, scalar scaling (or a mask Add)."""
        while value is not None:
            node = value.producer()
            if node is None:
                return None
            self.values.append(value)
            if node.op_type in _LAYOUT:
                if node.op_type == "Reshape":
                    self.reshapes.append(node)
                value = node.inputs[0]
            elif node.op_type in ("Mul", "Div") and _scalar_operand(node) is not None:
                value = node.inputs[1 - _scalar_operand(node)]
            elif allow_add and node.op_type == "Add":
                value = next((v for v in node.inputs if _leads_to_matmul(v)), None)
            else:
                return node
        return None

    def projection(self, value: ir.Value, what: str) -> Projection:
        node = self.back_through(value)
        if node is None:
            raise _NoMatch(f"no {what} projection found")
        if node.op_type == "Add":
            index = next((i for i, v in enumerate(node.inputs) if const_array(v) is not None), None)
            if index is None:
                raise _NoMatch(f"the {what} path adds two computed tensors")
            matmul = node.inputs[1 - index].producer()
            if matmul is None or matmul.op_type != "MatMul" or _weight(matmul) is None:
                raise _NoMatch(f"the {what} bias does not follow a MatMul with a constant weight")
            if const_array(node.inputs[index]).size != _weight(matmul).shape[1]:
                raise _NoMatch(f"the {what} bias is not one value per output feature")
            self.values.append(matmul.outputs[0])
            return Projection(matmul, node, index)
        if node.op_type == "MatMul" and _weight(node) is not None:
            return Projection(node)
        raise _NoMatch(f"the {what} path starts at {node.op_type} '{node.name}', not a projection")

    def forward_to_matmul(self, value: ir.Value) -> ir.Node:
        """From the Softmax to MatMul(p, v), through Where(IsNaN(p), 0, p), Cast, Identity, Dropout."""
        for _ in range(8):
            self.values.append(value)
            users = [u.node for u in value.uses() if u.node.op_type != "IsNaN"]
            if len(users) != 1:
                raise _NoMatch("the attention probabilities are read more than once")
            node = users[0]
            if node.op_type == "MatMul" and node.inputs[0] is value and _weight(node) is None:
                return node
            if node.op_type not in ("Where", "Cast", "Identity", "Dropout"):
                raise _NoMatch(f"the probabilities go to {node.op_type} '{node.name}'")
            value = node.outputs[0]
        raise _NoMatch("no MatMul with the values after the Softmax")

    def forward_to_projection(self, value: ir.Value) -> Projection:
        """From MatMul(p, v) through Transpose/Reshape to the output projection."""
        for _ in range(8):
            self.values.append(value)
            users = [u.node for u in value.uses()]
            if len(users) != 1 or value.is_graph_output():
                raise _NoMatch("the attention context is read more than once")
            node = users[0]
            if node.op_type == "MatMul" and node.inputs[0] is value and _weight(node) is not None:
                uses = node.outputs[0].uses()
                if len(uses) == 1 and uses[0].node.op_type == "Add":
                    add = uses[0].node
                    index = 1 - uses[0].idx
                    if const_array(add.inputs[index]) is not None:
                        return Projection(node, add, index)
                return Projection(node)
            if node.op_type not in _LAYOUT:
                raise _NoMatch(f"the attention context goes to {node.op_type} '{node.name}'")
            if node.op_type == "Reshape":
                self.reshapes.append(node)
            value = node.outputs[0]
        raise _NoMatch("no output projection after the attention context")


def _head_dim(context: ir.Node, reshapes: list[ir.Node]) -> int | None:
    for value in (context.inputs[1], context.outputs[0]):
        if value.shape is not None and value.shape.rank() and isinstance(value.shape[-1], int):
            return int(value.shape[-1])
    for node in reshapes:
        shape = const_array(node.inputs[1])
        if shape is not None and shape.size == 4 and int(shape[-1]) > 0:
            return int(shape[-1])
    return None


def _check_private(block: AttentionBlock) -> None:
    """No tensor between the projections may be read by a node outside the block's paths."""
    inside = {id(v) for v in block.inner}
    for value in block.inner:
        for use in value.uses():
            node = use.node
            outputs_inside = any(id(o) in inside for o in node.outputs)
            if not outputs_inside and node is not block.out.matmul and node.op_type not in ("IsNaN", "Shape"):
                raise _NoMatch(f"'{value.name}' is also read by {node.op_type} '{node.name}'")


def _weight(node: ir.Node):
    array = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return array if array is not None and array.ndim == 2 else None


def _scalar_operand(node: ir.Node) -> int | None:
    for i, value in enumerate(node.inputs[:2]):
        array = const_array(value)
        if array is not None and array.size == 1:
            return i
    return None


def _leads_to_matmul(value: ir.Value | None) -> bool:
    while value is not None and value.producer() is not None:
        node = value.producer()
        if node.op_type == "MatMul":
            return _weight(node) is None
        if node.op_type in _LAYOUT or node.op_type in ("Mul", "Div") and _scalar_operand(node) is not None:
            value = node.inputs[0] if node.op_type in _LAYOUT else node.inputs[1 - _scalar_operand(node)]
            continue
        return False
    return False
