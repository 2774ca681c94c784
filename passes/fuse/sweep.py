"""Constant folding and dead-code/duplicate removal between fusion rounds, with no pattern
rules of its own (onnxscript's ``optimize`` would also apply its default rewrite rules,
which would ignore ``fuse{disable=...}``)."""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxscript.optimizer

__all__ = ["fold_and_sweep"]


def fold_and_sweep(model: ir.Model) -> None:
    """Fold constant subgraphs (shape arithmetic included), then drop what nothing uses."""
    common_passes.InlinePass()(model)
    onnxscript.optimizer.fold_constants(model)
    onnxscript.optimizer.remove_unused_nodes(model)
    common_passes.RemoveUnusedFunctionsPass()(model)
    common_passes.CommonSubexpressionEliminationPass()(model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common_passes.DeduplicateInitializersPass()(model)
    common_passes.RemoveUnusedOpsetsPass()(model)
