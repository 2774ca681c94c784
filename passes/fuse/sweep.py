"""Constant folding and dead-code/duplicate removal between fusion rounds, with no pattern
rules of its own (onnxscript's ``optimize`` would also apply its default rewrite rules,
which would ignore ``fuse{disable=...}``)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxscript.optimizer

from onnxsmith import folding_guards

__all__ = ["fold_and_sweep", "fold_initializer_concats"]


def fold_and_sweep(model: ir.Model) -> None:
    """Fold constant subgraphs (shape arithmetic included), then drop what nothing uses."""
    folding_guards.install()
    common_passes.InlinePass()(model)
    onnxscript.optimizer.fold_constants(model)
    onnxscript.optimizer.remove_unused_nodes(model)
    common_passes.RemoveUnusedFunctionsPass()(model)
    common_passes.CommonSubexpressionEliminationPass()(model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common_passes.DeduplicateInitializersPass()(model)
    common_passes.RemoveUnusedOpsetsPass()(model)


def fold_initializer_concats(model: ir.Model) -> int:
    """``Concat`` of initializers that nothing else reads -> one initializer.

    Size-neutral, so safe at any size; onnxscript's folder keeps results above 512x512
    elements as a Concat (the packed QKV weight of a fused Attention), which hides the
    weight from ONNX Runtime's quantizer and from our checks of its shape.
    """
    folded = 0
    for node in list(model.graph):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        inputs = list(node.inputs)
        if any(v is None or v.const_value is None or not v.is_initializer() or len(v.uses()) != 1 for v in inputs):
            continue
        axis = node.attributes.get_int("axis", 0)
        data = np.concatenate([v.const_value.numpy() for v in inputs], axis=axis)
        out = node.outputs[0]
        value = ir.Value(name=out.name + "_folded", shape=ir.Shape(data.shape), type=ir.TensorType(inputs[0].dtype),
                         const_value=ir.tensor(data))
        model.graph.register_initializer(value)
        out.replace_all_uses_with(value, replace_graph_outputs=True)
        model.graph.remove(node, safe=True)
        for v in inputs:
            if not v.uses() and v.name in model.graph.initializers:
                model.graph.initializers.pop(v.name)
        folded += 1
    return folded
