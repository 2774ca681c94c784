"""Our own fusions into ONNX Runtime contrib ops (domain ``com.microsoft``).

Used only when the target backend says it has the fused kernel (``Capabilities.ops``).

1. ``Act(Conv(x, W, B))`` -> ``FusedConv(x, W, B, activation=Act)`` for Relu, LeakyRelu,
   Tanh, Sigmoid, HardSigmoid and Clip with constant bounds (MLAS's fused activations).
2. ``Mul(x, Sigmoid(x))`` (SiLU/Swish, everywhere in YOLOv8) -> ``QuickGelu(x, alpha=1)``,
   which ONNX Runtime computes as ``x * sigmoid(alpha * x)`` in one kernel.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter._basics import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

__all__ = ["conv_activation_rules", "silu_rules"]

MS_DOMAIN = "com.microsoft"


def _float32_conv(conv_out: ir.Value, result: MatchResult) -> MatchResult:
    conv = conv_out.producer()
    if conv_out.dtype is not None and conv_out.dtype != ir.DataType.FLOAT:
        return result.fail(f"FusedConv has CPU kernels for float32 only, not {conv_out.dtype}")
    if len(conv_out.uses()) != 1:
        return result.fail("the Conv output has other consumers")
    if conv.domain not in ("", "ai.onnx"):
        return result.fail("the Conv is not a standard ONNX Conv")
    return result


class _ConvActivation(RewriteRuleClassBase):
    activation: str = ""

    def check(self, context, x, conv_out, **_) -> MatchResult:
        return _float32_conv(conv_out, MatchResult())

    def _fused(self, op, conv_out, params: list[float] | None = None):
        conv = conv_out.producer()
        attrs = dict(conv.attributes.items())
        extra = {"activation_params": params} if params else {}
        return op.FusedConv(*conv.inputs, _domain=MS_DOMAIN, activation=self.activation, **attrs, **extra)


class ConvRelu(_ConvActivation):
    activation = "Relu"

    def pattern(self, op, x):
        return op.Relu(op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"]))

    def rewrite(self, op, x, conv_out):
        return self._fused(op, conv_out)


class ConvTanh(_ConvActivation):
    activation = "Tanh"

    def pattern(self, op, x):
        return op.Tanh(op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"]))

    def rewrite(self, op, x, conv_out):
        return self._fused(op, conv_out)


class ConvSigmoid(_ConvActivation):
    activation = "Sigmoid"

    def pattern(self, op, x):
        return op.Sigmoid(op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"]))

    def rewrite(self, op, x, conv_out):
        return self._fused(op, conv_out)


class ConvLeakyRelu(_ConvActivation):
    activation = "LeakyRelu"

    def pattern(self, op, x):
        return op.LeakyRelu(op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"]), _outputs=["act_out"])

    def rewrite(self, op, x, conv_out, act_out):
        alpha = act_out.producer().attributes.get("alpha")
        return self._fused(op, conv_out, [alpha.as_float() if alpha is not None else 0.01])


class ConvHardSigmoid(_ConvActivation):
    activation = "HardSigmoid"

    def pattern(self, op, x):
        return op.HardSigmoid(op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"]), _outputs=["act_out"])

    def rewrite(self, op, x, conv_out, act_out):
        attrs = act_out.producer().attributes
        alpha = attrs["alpha"].as_float() if "alpha" in attrs else 0.2
        beta = attrs["beta"].as_float() if "beta" in attrs else 0.5
        return self._fused(op, conv_out, [alpha, beta])


class ConvClip(_ConvActivation):
    activation = "Clip"

    def pattern(self, op, x):
        return op.Clip(op.Conv(x, _allow_other_inputs=True, _outputs=["conv_out"]), _allow_other_inputs=True, _outputs=["act_out"])

    def check(self, context, x, conv_out, act_out) -> MatchResult:
        result = super().check(context, x, conv_out)
        if result and self._bounds(act_out.producer()) is None:
            return result.fail("Clip bounds are not constant")
        return result

    @staticmethod
    def _bounds(clip: ir.Node) -> list[float] | None:
        if "min" in clip.attributes or "max" in clip.attributes:  # opset < 11
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

    def rewrite(self, op, x, conv_out, act_out):
        return self._fused(op, conv_out, self._bounds(act_out.producer()))


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


conv_activation_rules = [r.rule() for r in (ConvRelu, ConvTanh, ConvSigmoid, ConvLeakyRelu, ConvHardSigmoid, ConvClip)]
silu_rules = SiluToQuickGelu.rule().commute()  # Mul(x, Sigmoid(x)) and Mul(Sigmoid(x), x)
