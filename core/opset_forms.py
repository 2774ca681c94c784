"""Operator forms that match the model's opset.

ONNX opset 13 moved ``axes`` of Unsqueeze/Squeeze/ReduceSum and ``split`` of Split from an
attribute to an input, and opset 18 did the same for the other Reduce ops. Rewriters that
build nodes in the newer form (onnxscript's optimizer folds SequenceConstruct +
ConcatFromSequence into Unsqueeze + Concat that way) leave an opset-11 or -12 model with
nodes its opset does not define; some also set attributes a later opset added (Reshape's
``allowzero``, opset 14). ``legalize_opset_forms`` moves a constant operand back into the
attribute the model's opset expects and drops an added attribute whose value changes nothing
(``allowzero=1`` with a constant shape free of zeros): it changes no value.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from onnxsmith.graph_stats import all_nodes

__all__ = ["legalize_opset_forms"]

# op -> (the first default-domain opset with the operand as an input, the attribute's name before it)
OPERAND_BECAME_INPUT: dict[str, tuple[int, str]] = {
    **{op: (13, "axes") for op in ("Unsqueeze", "Squeeze", "ReduceSum")},
    "Split": (13, "split"),
    **{op: (18, "axes") for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                                    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
}


def _allowzero_has_no_effect(node: ir.Node) -> bool:
    """Reshape's ``allowzero=1`` differs from the old meaning only where the shape holds a 0."""
    if node.attributes["allowzero"].value == 0:
        return True
    shape = ir.convenience.get_const_tensor(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    return shape is not None and not (shape.numpy() == 0).any()


# (op, attribute) -> (the first default-domain opset that defines it, whether a node's value of
# it means what the older op does anyway: then it is dropped before that opset)
ATTRIBUTE_ADDED: dict[tuple[str, str], tuple[int, Callable[[ir.Node], bool]]] = {
    ("Reshape", "allowzero"): (14, _allowzero_has_no_effect),
}


def legalize_opset_forms(model: ir.Model) -> list[str]:
    """Rewrite, in place, nodes that pass a constant ``axes``/``split`` as an input where the
    model's opset wants an attribute, and drop attributes newer than the opset whose value
    changes nothing. Returns the names of the nodes it could not put in the opset's form (a
    non-constant operand, an added attribute set to something else)."""
    opset = model.opset_imports.get("", None)
    if opset is None or opset >= max(version for version, _ in OPERAND_BECAME_INPUT.values()):
        return []
    stuck = []
    for node in all_nodes(model):
        for (op, name), (since, no_effect) in ATTRIBUTE_ADDED.items():
            if node.domain == "" and node.op_type == op and opset < since and name in node.attributes:
                if no_effect(node):
                    del node.attributes[name]
                else:
                    stuck.append(node.name or node.op_type)
        rule = OPERAND_BECAME_INPUT.get(node.op_type) if node.domain == "" else None
        if rule is None or opset >= rule[0] or len(node.inputs) < 2:
            continue
        operand = node.inputs[1]
        if operand is None:  # an omitted optional input: nothing to move
            node.resize_inputs(1)
            continue
        tensor = ir.convenience.get_const_tensor(operand)
        if tensor is None:
            stuck.append(node.name or node.op_type)
            continue
        node.attributes[rule[1]] = ir.AttrInt64s(rule[1], [int(v) for v in tensor.numpy().ravel()])
        node.resize_inputs(1)
        producer = operand.producer()
        if producer is not None and producer.op_type == "Constant" and not operand.uses() and producer.graph is not None:
            producer.graph.remove(producer, safe=True)
    return stuck
