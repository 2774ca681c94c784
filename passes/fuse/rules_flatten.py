"""Token streams computed on their 2-D view, [tokens, features], where that is faster.

Three rules, each exact (the same arithmetic on the same numbers, only the views change;
Gemm adds the bias before the products are summed instead of after, a float rounding
difference):

1. ``LayerNormalization(Add(x, r))`` with x, r of one 3-D shape [B, S, D] (a transformer's
   residual) -> ``Reshape(LayerNormalization(Add(Reshape(x, [-1, D]), Reshape(r, [-1, D]))),
   Shape(r))``. For backends whose SkipLayerNormalization is slow: ONNX Runtime's CPU
   kernel for it is a scalar loop, 3-6x slower than Add + LayerNormalization (measured on
   ORT 1.31 at MiniLM's 128x384), and ONNX Runtime's own optimizer turns every 3-D
   Add + LayerNormalization into one; on the 2-D view it does not (it fuses 3-D Adds only).
2. ``Reshape(Add(MatMul(h, W), b), [-1, N])`` -> ``Gemm(Reshape(h, [-1, K]), W, b)`` for a
   2-D W [K, N] and a bias over the last axis: flatten before the MatMul instead of after,
   so that the bias rides in the Gemm (onnxscript's MatMul+Add rule needs a 2-D input).
3. ``Reshape(Reshape(x, s1), s2)`` -> ``Reshape(x, s2)`` even where the inner Reshape has
   other consumers (they keep it), for constant s2 that copies no dim of the intermediate
   (onnxscript's rule needs the inner Reshape to have no other use). With rule 4 of
   rules_neutral (Reshape to the same shape), a 2-D stream reshaped to 3-D for an
   attention op and back to 2-D for the next residual then reads the 2-D value directly.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase

__all__ = ["flattened_linear_rules", "reshape_of_reshape_rule", "residual_layernorm_2d_rule"]

FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def _const_ints(value: ir.Value | None) -> list[int] | None:
    if value is None or value.const_value is None:
        return None
    return [int(v) for v in value.const_value.numpy().ravel()]


def _same_dims(a: ir.Shape, b: ir.Shape) -> bool:
    """Provably equal shapes: same rank, each dim the same int or the same named symbol."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, int) or isinstance(y, int):
            if x != y:
                return False
        elif x.value is None or x.value != y.value:
            return False
    return True


class ResidualLayerNorm2D(RewriteRuleClassBase):
    """Rule 1 of the module docstring."""

    def pattern(self, op, x, r):
        total = op.Add(x, r, _outputs=["total"])
        return op.LayerNormalization(total, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["normed"])

    def check(self, context, x, r, total, normed) -> MatchResult:
        result = MatchResult()
        if x.shape is None or r.shape is None or len(x.shape) != 3:
            return result.fail("the Add inputs are not 3-D tensors of known rank")
        if not _same_dims(x.shape, r.shape):
            return result.fail(f"the Add broadcasts ({x.shape} + {r.shape}); only same-shape residuals are rewritten")
        if not isinstance(x.shape[-1], int):
            return result.fail("the feature dim is not static")
        if x.dtype not in FLOATS:
            return result.fail(f"input type {x.dtype} is not a float type")
        axis = normed.producer().attributes.get_int("axis", -1)
        if axis not in (-1, 2):
            return result.fail(f"LayerNormalization normalizes from axis {axis}, not over the last axis alone")
        return result

    def rewrite(self, op, x, r, total, normed):
        norm = normed.producer()
        flat = op.initializer(ir.tensor(np.array([-1, x.shape[-1]], np.int64)), name=f"{norm.name}_2d_shape")
        summed = op.Add(_typed(op.Reshape(x, flat), x), _typed(op.Reshape(r, flat), x))
        attrs = {k: v for k, v in norm.attributes.items() if k != "axis"}
        y = op.LayerNormalization(_typed(summed, x), *norm.inputs[1:], axis=-1, **attrs)
        # The 3-D shape comes from the operand read elsewhere too (the residual stream), so
        # that the sublayer output keeps a single use and rule 2 can still take it.
        anchor = x if len(x.uses()) > len(r.uses()) else r
        return op.Reshape(_typed(y, x), op.Shape(anchor))


def _typed(value: ir.Value, like: ir.Value, last: int | None = None) -> ir.Value:
    """``value`` with the 2-D view's type and shape [?, D] set, so that later rules (a Reshape
    to the same shape, MatMul+Add into Gemm) can see them before shape inference runs."""
    value.dtype = like.dtype
    value.shape = ir.Shape([None, like.shape[-1] if last is None else last])
    return value


class FlattenedLinear(RewriteRuleClassBase):
    """Rule 2 of the module docstring."""

    def pattern(self, op, h, w, b, shape):
        return op.Reshape(op.Add(op.MatMul(h, w, _outputs=["product"]), b), shape)

    def check(self, context, h, w, b, shape, product) -> MatchResult:
        result = MatchResult()
        target = _const_ints(shape)
        if w.shape is None or len(w.shape) != 2 or not all(isinstance(d, int) for d in w.shape):
            return result.fail("the MatMul weight is not a 2-D matrix of known shape")
        k, n = w.shape
        if target != [-1, n]:
            return result.fail(f"the Reshape target {target} is not [-1, {n}]")
        if h.shape is None or len(h.shape) < 2 or h.shape[-1] != k:
            return result.fail(f"the MatMul input is not [..., {k}]")
        if h.dtype not in FLOATS:
            return result.fail(f"input type {h.dtype} is not a float type")
        if b.const_value is None:
            return result.fail("the bias is not constant")
        bias = b.const_value.shape
        if any(d != 1 for d in list(bias)[:-1]) or (len(bias) and bias[-1] not in (1, n)):
            return result.fail(f"the bias {list(bias)} does not broadcast over the last axis alone")
        return result

    def rewrite(self, op, h, w, b, shape, product):
        flat = op.initializer(ir.tensor(np.array([-1, w.shape[0]], np.int64)), name=f"{product.name}_2d_shape")
        vector = b.const_value.numpy().reshape(-1)
        bias = op.initializer(ir.tensor(vector), name=f"{b.name}_1d")
        return _typed(op.Gemm(_typed(op.Reshape(h, flat), h), w, bias), h, last=w.shape[1])


class ReshapeOfReshape(RewriteRuleClassBase):
    """Rule 3 of the module docstring."""

    def __init__(self) -> None:
        super().__init__(remove_nodes=False)  # the inner Reshape stays for its other consumers

    def pattern(self, op, x, s1, s2):
        return op.Reshape(op.Reshape(x, s1, _allow_other_attributes=True), s2, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, s1, s2, out) -> MatchResult:
        result = MatchResult()
        target = _const_ints(s2)
        if target is None:
            return result.fail("the outer Reshape's target is not constant")
        allowzero = out.producer().attributes.get_int("allowzero", 0)
        if 0 in target and not allowzero:
            return result.fail("the outer Reshape copies a dim (0) of the intermediate shape")
        return result

    def rewrite(self, op, x, s1, s2, out):
        allowzero = out.producer().attributes.get_int("allowzero", 0)
        return op.Reshape(x, s2, allowzero=allowzero) if allowzero else op.Reshape(x, s2)


residual_layernorm_2d_rule = ResidualLayerNorm2D.rule()
flattened_linear_rules = FlattenedLinear.rule().commute()
reshape_of_reshape_rule = ReshapeOfReshape.rule()
