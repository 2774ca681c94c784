"""Output heads: layers whose results reach a graph output through data movement only.

Both integer modes keep such a layer in float: its outputs are the logits or boxes the
application decides on, where a quantization step shows up directly in the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import onnx_ir as ir

__all__ = ["is_output_head", "reaches"]

# Ops between a head layer and the graph output that do not mix its values with others'
# beyond a bias or a normalisation: a classifier or box head ends in these.
HEAD_PATH = frozenset({"Add", "Sub", "Mul", "Div", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                       "Softmax", "LogSoftmax", "Sigmoid", "Concat", "Slice", "Split"})


def is_output_head(node: ir.Node) -> bool:
    """Whether ``node``'s output reaches a graph output through :data:`HEAD_PATH` ops only."""
    return reaches(node, HEAD_PATH, ir.Value.is_graph_output)


def reaches(node: ir.Node, through: Collection[str], target: Callable[[ir.Value], bool]) -> bool:
    """Whether a value ``target`` accepts lies downstream of ``node``'s outputs, along ``through`` ops only."""
    frontier, seen = list(node.outputs), set()
    while frontier:
        value = frontier.pop()
        if value in seen:
            continue
        seen.add(value)
        if target(value):
            return True
        frontier.extend(out for use in value.uses() if use.node.op_type in through for out in use.node.outputs)
    return False
