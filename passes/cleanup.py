"""``cleanup``: exact simplification: constant folding, no-op and dead-code removal.

Runs onnxscript's optimizer, which (in a loop until nothing changes):
1. inlines model-local functions (``inline=true``);
2. folds nodes whose inputs are all constant, shape computations included;
3. removes no-ops: Identity, Dropout in inference, Cast to the same type, Expand/Reshape
   to the same shape, single-input Concat, ... (onnxscript's default rewrite rules);
4. removes nodes, functions and opset imports nothing uses, deduplicates initializers and
   eliminates common subexpressions.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import onnx_ir as ir
import onnxscript.optimizer

from onnxsmith import folding_guards
from onnxsmith.context import Context
from onnxsmith.graph_stats import all_nodes, graph_signature
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.registry import register_pass

__all__ = ["CleanupPass"]


@register_pass
@dataclasses.dataclass(frozen=True)
class CleanupPass(Pass):
    name = "cleanup"
    summary = "Fold constants, remove identities, no-ops and dead code (exact)."

    iterations: int = dataclasses.field(default=2, metadata={"doc": "optimizer sweeps (stops early when nothing changes)"})
    inline: bool = dataclasses.field(default=True, metadata={"doc": "inline model-local functions first"})
    fold_limit: int = dataclasses.field(default=1 << 20, metadata={"doc": "largest constant (elements) a fold may create"})

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError("iterations must be at least 1")
        if self.fold_limit < 0:
            raise ValueError("fold_limit must be non-negative")

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        before = graph_signature(model)
        ops_before = Counter(n.op_type for n in all_nodes(model))
        passthrough = {v.name for v in model.graph.outputs if v.is_graph_input()}
        folding_guards.install()
        onnxscript.optimizer.optimize_ir(
            model,
            num_iterations=self.iterations,
            inline=self.inline,
            output_size_limit=self.fold_limit,
        )
        _restore_passthrough_outputs(model, passthrough)
        ops_after = Counter(n.op_type for n in all_nodes(model))
        removed = ops_before - ops_after
        counts = {f"removed_{op}": n for op, n in sorted(removed.items())}
        counts["nodes_removed"] = sum(ops_before.values()) - sum(ops_after.values())
        return PassResult(model, modified=graph_signature(model) != before, counts=counts)


def _restore_passthrough_outputs(model: ir.Model, names: set[str]) -> None:
    """Undo onnx_ir's OutputFixPass for graph outputs that are graph inputs (a graph with no
    nodes, output = input): it renames the input ``x`` to ``x_orig`` behind an Identity, which
    changes the model's interface. The input gets its name back and is the output again."""
    graph = model.graph
    for index, output in enumerate(list(graph.outputs)):
        node = output.producer()
        if output.name not in names or node is None or node.op_type != "Identity" or not node.inputs[0].is_graph_input():
            continue
        source = node.inputs[0]
        graph.outputs[index] = source
        graph.remove(node, safe=False)
        source.name = output.name
