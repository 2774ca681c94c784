"""Fresh names for what a rewrite adds to a graph: unique among its nodes, values and initializers."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["GraphNames"]


class GraphNames:
    """The names ``graph`` uses (of its nodes, values, inputs and initializers), and fresh ones
    it does not: ``base``, else ``base_1``, ``base_2``, ...; each one handed out is taken."""

    def __init__(self, graph: ir.Graph) -> None:
        self.taken = {v.name for n in graph for v in [*n.inputs, *n.outputs] if v is not None}
        self.taken |= {v.name for v in graph.inputs} | set(graph.initializers) | {n.name for n in graph}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name
