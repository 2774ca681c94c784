"""Our own fusions into ONNX Runtime contrib ops (domain ``com.microsoft``).

Used only when the target backend says it has the fused kernel (``Capabilities.ops``).

1. ``Act(Conv(x, W, B))`` -> ``FusedConv(x, W, B, activation=Act)`` for Relu, LeakyRelu,
   Tanh, Sigmoid, HardSigmoid and Clip with constant bounds (MLAS's fused activations).
2. ``Mul(x, Sigmoid(x))`` (SiLU/Swish, everywhere in YOLOv8) -> ``QuickGelu(x, alpha=1)``,
   which ONNX Runtime computes as ``x * sigmoid(alpha * x)`` in one kernel.
3. ``Attention(..., qkv_hidden_sizes=[d, d, d])`` -> ``Attention(...)``: onnxscript's
   attention fusion always writes the sizes; equal ones are the op's default, and ONNX
   Runtime's quantizer skips Attention nodes that carry the attribute.
4. ``Softmax(x, axis=a)`` over an axis that is not the last (opset 13 and later) ->
   ``Transpose(Softmax(Transpose(x, a to the end), axis=-1), back)``: standard ops, the same
   numbers, for backends whose Softmax kernel is slow off the last axis (``slow_ops``
   "Softmax:inner-axis"). ONNX Runtime's CPU kernel moves the axis itself, more slowly
   than its Transpose op: YOLOv8's box head (softmax over 16 bins of [1, 16, 4, 2100])
   takes 1.50 ms, the rewrite 0.35 ms (ORT 1.32, 2-core AVX-512 EPYC), bitwise equal. The
   "transpose" rule then merges the new Transpose with one before it.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase

__all__ = ["conv_activation_rules", "drop_equal_qkv_sizes", "silu_rules", "softmax_last_axis_rules"]

MS_DOMAIN = "com.microsoft"


class ConvActivation(RewriteRuleClassBase):
    """``Act(Conv(x, ...))`` -> ``FusedConv(x, ..., activation=Act, activation_params=...)``."""

    def __init__(self, activation: str) -> None:
        super().__init__(name=f"Conv{activation}")
        self.activation = activation

    def pattern(self, op, x):
        conv = op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"])
        return getattr(op, self.activation)(conv, _allow_other_inputs=True, _outputs=["act_out"])

    def check(self, context, x, conv_out, act_out) -> MatchResult:
        result = MatchResult()
        if conv_out.dtype is not None and conv_out.dtype != ir.DataType.FLOAT:
            return result.fail(f"FusedConv has CPU kernels for float32 only, not {conv_out.dtype}")
        if conv_out.producer().domain not in ("", "ai.onnx"):
            return result.fail("the Conv is not a standard ONNX Conv")
        if self.activation == "Clip" and _clip_bounds(act_out.producer()) is None:
            return result.fail("Clip bounds are not constant")
        return result

    def rewrite(self, op, x, conv_out, act_out):
        conv, act = conv_out.producer(), act_out.producer()
        params = _activation_params(act)
        extra = {"activation_params": params} if params else {}
        return op.FusedConv(*conv.inputs, _domain=MS_DOMAIN, activation=self.activation, **dict(conv.attributes.items()), **extra)


def _activation_params(node: ir.Node) -> list[float] | None:
    """MLAS's parameters for the activations that take any (ONNX defaults where unset)."""
    attrs = node.attributes
    if node.op_type == "LeakyRelu":
        return [attrs["alpha"].as_float() if "alpha" in attrs else 0.01]
    if node.op_type == "HardSigmoid":
        return [attrs["alpha"].as_float() if "alpha" in attrs else 0.2, attrs["beta"].as_float() if "beta" in attrs else 0.5]
    if node.op_type == "Clip":
        return _clip_bounds(node)
    return None


def _clip_bounds(clip: ir.Node) -> list[float] | None:
    """[min, max] of a Clip (attributes before opset 11, inputs since), None if not constant."""
    if "min" in clip.attributes or "max" in clip.attributes:
        low = clip.attributes["min"].as_float() if "min" in clip.attributes else float("-inf")
        high = clip.attributes["max"].as_float() if "max" in clip.attributes else float("inf")
        return [low, high]
    bounds = [float("-inf"), float("inf")]
    for i, value in enumerate(clip.inputs[1:3]):
        if value is None or value.name == "":
            continue
        if value.const_value is None:
            return None
        bounds[i] = float(value.const_value.numpy())
    return bounds


class SiluToQuickGelu(RewriteRuleClassBase):
    def pattern(self, op, x):
        return op.Mul(x, op.Sigmoid(x, _outputs=["sig"]))

    def check(self, context, x, sig) -> MatchResult:
        result = MatchResult()
        if x.dtype is not None and x.dtype != ir.DataType.FLOAT:
            return result.fail(f"QuickGelu has CPU kernels for float32 only, not {x.dtype}")
        if len(sig.uses()) != 1:
            return result.fail("the Sigmoid output has other consumers")
        return result

    def rewrite(self, op, x, sig):
        return op.QuickGelu(x, _domain=MS_DOMAIN, alpha=1.0)


class SoftmaxToLastAxis(RewriteRuleClassBase):
    """Rule 4 of the module docstring (Softmax and LogSoftmax: one kernel in ONNX Runtime)."""

    def __init__(self, op_type: str) -> None:
        super().__init__(name=f"{op_type}ToLastAxis")
        self.op_type = op_type

    def pattern(self, op, x):
        return getattr(op, self.op_type)(x, _allow_other_attributes=True, _outputs=["y"])

    def check(self, context, x, y) -> MatchResult:
        result = MatchResult()
        node = y.producer()
        opsets = context.model.opset_imports
        if opsets.get("", opsets.get("ai.onnx", 0)) < 13:
            return result.fail("before opset 13 Softmax normalizes over the flattened trailing axes, already contiguous")
        axis = node.attributes["axis"].as_int() if "axis" in node.attributes else -1
        if axis == -1 or (x.shape is not None and axis == len(x.shape) - 1):
            return result.fail("already over the last axis")
        if x.shape is None:
            return result.fail("the input's rank is unknown")
        return result

    def rewrite(self, op, x, y):
        rank = len(x.shape)
        axis = y.producer().attributes["axis"].as_int() % rank
        to_end = [*(i for i in range(rank) if i != axis), axis]
        back = [to_end.index(i) for i in range(rank)]
        moved = op.Transpose(x, perm=to_end)
        return op.Transpose(getattr(op, self.op_type)(moved, axis=-1), perm=back)


conv_activation_rules = [ConvActivation.rule(act) for act in ("Relu", "LeakyRelu", "Tanh", "Sigmoid", "HardSigmoid", "Clip")]
silu_rules = SiluToQuickGelu.rule().commute()  # Mul(x, Sigmoid(x)) and Mul(Sigmoid(x), x)
softmax_last_axis_rules = [SoftmaxToLastAxis.rule(op_type) for op_type in ("Softmax", "LogSoftmax")]


def drop_equal_qkv_sizes(model: ir.Model) -> int:
    """Rule 3 of the module docstring, on every graph of ``model``; returns how many it changed."""
    changed = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type != "Attention" or node.domain != MS_DOMAIN or "qkv_hidden_sizes" not in node.attributes:
            continue
        sizes = node.attributes["qkv_hidden_sizes"].as_ints()
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        packed = weight is not None and weight.shape is not None and len(weight.shape) == 2 and weight.shape[1] == sum(sizes)
        if len(set(sizes)) == 1 and packed:
            del node.attributes["qkv_hidden_sizes"]
            changed += 1
    return changed
