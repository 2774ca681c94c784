"""Guards on onnxscript's constant folder for inputs it mishandles (onnxscript 0.x).

Its partial evaluator for SplitToSequence assumes the ``split`` input is a constant: with a
computed or graph-input ``split`` it raises (``'NoneType' object has no attribute 'ndim'``)
or builds ``Split(x, split)``, a form opsets before 13 do not define. Both end a cleanup or
fuse on a valid model. ``install`` wraps that evaluator so it leaves such nodes alone;
cleanup and fuse call it before folding. Idempotent.
"""

from __future__ import annotations

import functools

import onnx_ir as ir
from onnxscript.optimizer import _constant_folding

__all__ = ["install"]

_GUARDED = "_onnxsmith_guarded"


def install() -> None:
    for evaluator in _constant_folding.registry.op_evaluators.get(("", "SplitToSequence"), []):
        if not getattr(evaluator.function, _GUARDED, False):
            evaluator.function = _only_with_constant_split(evaluator.function)


def _only_with_constant_split(function):
    @functools.wraps(function)
    def guarded(node: ir.Node, op, state):
        split = node.inputs[1] if len(node.inputs) > 1 else None
        if split is not None and ir.convenience.get_const_tensor(split) is None:
            return None
        return function(node, op, state)

    setattr(guarded, _GUARDED, True)
    return guarded
