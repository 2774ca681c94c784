"""Counting what a model holds: nodes, op types, parameters and bytes by dtype, opsets.

Used by ``inspect``, the per-pass node counts and the before/after summary. Nodes inside
If/Loop/Scan bodies and model-local functions are counted with the main graph.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx_ir as ir

__all__ = ["GraphStats", "all_nodes", "count_nodes", "graph_signature", "graph_stats"]


def all_nodes(model: ir.Model):
    """Every node of the main graph, its subgraphs and the model's functions."""
    yield from ir.traversal.RecursiveGraphIterator(model.graph)
    for function in model.functions.values():
        yield from ir.traversal.RecursiveGraphIterator(function)


def count_nodes(model: ir.Model) -> int:
    return sum(1 for _ in all_nodes(model))


def graph_signature(model: ir.Model) -> tuple:
    """A cheap fingerprint of the graph's structure, to tell whether a pass changed it."""
    return (
        tuple((n.op_type, tuple(v.name if v else "" for v in n.inputs), tuple(v.name for v in n.outputs)) for n in all_nodes(model)),
        tuple(sorted(model.graph.initializers)),
        tuple(sorted(model.opset_imports.items())),
    )


@dataclass
class GraphStats:
    """A model's size in the numbers a user compares before and after a pipeline."""

    nodes: int
    op_histogram: dict[str, int]
    params: int
    param_bytes: int
    params_by_dtype: dict[str, dict[str, int]] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)
    custom_domains: list[str] = field(default_factory=list)


_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}


def graph_stats(model: ir.Model) -> GraphStats:
    histogram: Counter[str] = Counter()
    for node in all_nodes(model):
        domain = "" if node.domain in ("", "ai.onnx") else f"{node.domain}::"
        histogram[f"{domain}{node.op_type}"] += 1
    by_dtype: dict[str, dict[str, int]] = {}
    for tensor in _weights(model):
        entry = by_dtype.setdefault(str(tensor.dtype.name).lower(), {"params": 0, "bytes": 0})
        entry["params"] += tensor.size
        entry["bytes"] += tensor.nbytes
    return GraphStats(
        nodes=sum(histogram.values()),
        op_histogram=dict(histogram.most_common()),
        params=sum(e["params"] for e in by_dtype.values()),
        param_bytes=sum(e["bytes"] for e in by_dtype.values()),
        params_by_dtype=by_dtype,
        opsets=dict(sorted(model.opset_imports.items())),
        custom_domains=sorted(d for d in model.opset_imports if d not in _STANDARD_DOMAINS),
    )


def _weights(model: ir.Model):
    """Tensors of the initializers and Constant nodes of every graph: the model's parameters."""
    seen: set[int] = set()
    graphs = [model.graph, *model.graph.subgraphs()]
    for graph in graphs:
        for value in graph.initializers.values():
            if value.const_value is not None and id(value) not in seen:
                seen.add(id(value))
                yield value.const_value
    for node in all_nodes(model):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in node.attributes:
            yield node.attributes["value"].as_tensor()
