"""Our own rewrite rules on standard ONNX ops, for cases onnxscript's rule sets do not cover.

Each rule is exact (the replacement computes the same values):

1. ``Squeeze(Unsqueeze(x, a), a)`` -> ``x``, and ``Unsqueeze(Squeeze(x, a), a)`` -> ``x``
   (onnxscript only merges Unsqueeze pairs).
2. ``Pad(x, pads=0...)`` -> ``x`` (a Pad of zeros, left by exporters of "same" padding).
3. ``Reshape(x, s)`` -> ``x`` when ``s`` provably is x's shape (static dims equal; 0 or
   one -1 where the dim is symbolic).
4. ``Mul(Conv|Gemm(x, W, B), s)`` -> ``Conv|Gemm(x, W*s, B*s)`` and ``Add(..., c)`` ->
   ``Conv|Gemm(x, W, B+c)`` for per-channel (or scalar) constants s, c (onnxscript's
   conv-affine rules need a scalar Mul and a scalar Add together, and a Conv bias).
5. ``Where(c, [k], x)`` -> ``Where(c, k, x)``: a one-element constant branch as a scalar
   (what onnxscript's attention patterns expect).
6. ``ConvTranspose(x, W, B)`` with kernel = stride and no padding, one output channel ->
   ``DepthToSpace(Conv1x1(x, W', B'))``: each input pixel writes its own k x k block, so the
   block is k*k output channels of a 1x1 convolution, put in place by DepthToSpace (CRD).
   For backends whose blocked layouts pad one output channel to a full SIMD block
   (``avoids``: OpenVINO's ``ConvTranspose:one-output-channel``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase

__all__ = ["conv_affine_rules", "conv_transpose_depth_to_space_rule", "gemm_affine_rules", "pad_zero_rule",
           "reshape_same_shape_rule", "squeeze_unsqueeze_rules", "where_scalar_rules"]


def _axes(node: ir.Node) -> list[int] | None:
    """Constant axes of a Squeeze/Unsqueeze (input since opset 13, attribute before)."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        tensor = node.inputs[1].const_value
        return None if tensor is None else sorted(int(a) for a in tensor.numpy().ravel())
    attr = node.attributes.get("axes")
    return None if attr is None else sorted(attr.as_ints())


def _normalized(axes: list[int] | None, rank: int | None) -> list[int] | None:
    if axes is None:
        return None
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [a + rank if a < 0 else a for a in axes]
    return sorted(axes)


class SqueezePair(RewriteRuleClassBase):
    """``Squeeze(Unsqueeze(x, a), a)`` or ``Unsqueeze(Squeeze(x, a), a)`` -> ``x``.

    The dims one inserts the other removes; Squeeze only removes size-1 dims, so
    Unsqueeze puts back exactly what was there.
    """

    def __init__(self, inner_op: str, outer_op: str) -> None:
        super().__init__(name=f"{outer_op}Of{inner_op}")
        self.inner_op, self.outer_op = inner_op, outer_op

    def pattern(self, op, x):
        inner = getattr(op, self.inner_op)(x, _allow_other_inputs=True, _outputs=["inner_out"])
        return getattr(op, self.outer_op)(inner, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, inner_out, out) -> MatchResult:
        result = MatchResult()
        wide = inner_out if self.inner_op == "Unsqueeze" else x  # the axes index the wider tensor
        rank = wide.shape.rank() if wide.shape is not None else None
        inner, outer = _normalized(_axes(inner_out.producer()), rank), _normalized(_axes(out.producer()), rank)
        if inner is None or outer is None:
            return result.fail("Squeeze/Unsqueeze axes are not constant (or negative with unknown rank)")
        if inner != outer:
            return result.fail(f"axes differ: {self.inner_op} {inner}, {self.outer_op} {outer}")
        return result

    def rewrite(self, op, x, inner_out, out):
        return op.Identity(x)


class PadOfZeros(RewriteRuleClassBase):
    """``Pad(x, pads)`` with every pad 0 -> ``x``."""

    def pattern(self, op, x):
        return op.Pad(x, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, out) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            pads = node.inputs[1].const_value
            if pads is None:
                return result.fail("pads are not constant")
            values = pads.numpy()
        elif "pads" in node.attributes:  # opset < 11
            values = np.asarray(node.attributes["pads"].as_ints())
        else:
            return result.fail("Pad has no pads")
        if np.any(values != 0):
            return result.fail("pads are not all zero")
        return result

    def rewrite(self, op, x, out):
        return op.Identity(x)


class ReshapeToSameShape(RewriteRuleClassBase):
    """``Reshape(x, s)`` -> ``x`` when ``s`` provably is x's shape: the same rank, and every
    entry the same static dim, a 0 that copies it, or one -1 (then the only dim left to
    infer, whatever its size)."""

    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, shape, out) -> MatchResult:
        result = MatchResult()
        if x.shape is None:
            return result.fail("input rank is unknown")
        if shape.const_value is None:
            return result.fail("target shape is not constant")
        target = [int(d) for d in shape.const_value.numpy().ravel()]
        current = list(x.shape)
        allowzero = out.producer().attributes.get_int("allowzero", 0)
        if len(target) != len(current):
            return result.fail(f"reshape changes the rank {len(current)} -> {len(target)}")
        inferred = 0
        for dim, t in zip(current, target, strict=True):
            if t == 0 and not allowzero:
                continue
            if t == -1:
                inferred += 1
            elif not (isinstance(dim, int) and dim == t):
                return result.fail(f"reshape changes the shape {x.shape} -> {target}")
        if inferred > 1:
            return result.fail(f"target {target} has more than one -1")
        return result

    def rewrite(self, op, x, shape, out):
        return op.Identity(x)


class WhereScalarOperand(RewriteRuleClassBase):
    """``Where(c, k, x)`` -> ``Where(c, scalar k, x)`` (either branch) for a one-element
    constant ``k`` of rank at most another input's: broadcasting gives the same values. Exporters
    write the 0.0 of attention's NaN guard, ``Where(IsNaN(softmax), [0.0], softmax)``, as a
    shape-[1] tensor, which onnxscript's SDPA pattern refuses ("is not a scalar"): a
    TorchScript MiniLM fused no attention block for it."""

    def __init__(self, branch: int) -> None:
        super().__init__(name=f"WhereScalarOperand{branch}")
        self.branch = branch

    def pattern(self, op, cond, a, b):
        return op.Where(cond, a, b, _outputs=["out"])

    def check(self, context, cond, a, b, out) -> MatchResult:
        result = MatchResult()
        operand = (a, b)[self.branch - 1]
        tensor = operand.const_value
        if tensor is None or tensor.size != 1 or len(tensor.shape) == 0:
            return result.fail("the operand is not a one-element constant of rank 1 or more")
        others = [v.shape for v in (cond, (b, a)[self.branch - 1])]
        if any(shape is None for shape in others) or max(len(shape) for shape in others) < len(tensor.shape):
            return result.fail("the other inputs' ranks are unknown or below the operand's (it sets the output's rank)")
        return result

    def rewrite(self, op, cond, a, b, out):
        operand = (a, b)[self.branch - 1]
        scalar = op.Constant(value=ir.tensor(operand.const_value.numpy().reshape(())))
        return op.Where(cond, scalar, b) if self.branch == 1 else op.Where(cond, a, scalar)


class _ChannelAffine(RewriteRuleClassBase):
    """``Mul``/``Add`` of a per-channel constant after a Conv or Gemm with constant weights.

    The channel is axis 1 of the output for both (Conv: N,C,...; Gemm: M,N). With s and c
    per channel: ``(W*x + B) * s = (W*s) * x + B*s`` and ``(W*x + B) + c = W*x + (B+c)``.
    """

    producer_op = ""
    combine = ""

    def pattern(self, op, x, constant):
        inner = getattr(op, self.producer_op)(x, _allow_other_inputs=True, _outputs=["inner_out"])
        return getattr(op, self.combine)(inner, constant)

    def _channels(self, node: ir.Node) -> int:
        weight = node.inputs[1].const_value
        if node.op_type == "Conv":
            return weight.shape[0]
        trans_b = node.attributes.get("transB")
        return weight.shape[0] if trans_b is not None and trans_b.as_int() else weight.shape[1]

    def _per_channel(self, node: ir.Node, constant: ir.Value) -> np.ndarray | None:
        """The operand as a vector over channels (length C or 1), or None if it is not one."""
        value = constant.const_value.numpy()
        rank = len(node.inputs[1].const_value.shape) if node.op_type == "Conv" else 2
        if value.ndim > rank:
            return None
        full = value.reshape((1,) * (rank - value.ndim) + value.shape)
        if any(d != 1 for i, d in enumerate(full.shape) if i != 1) or full.shape[1] not in (1, self._channels(node)):
            return None
        return full.reshape(-1)

    def check(self, context, x, inner_out, constant) -> MatchResult:
        result = MatchResult()
        node = inner_out.producer()
        if len(inner_out.uses()) != 1:
            return result.fail(f"the {node.op_type} output has other consumers")
        for value in node.inputs[1:]:
            if value is None:
                continue
            if value.const_value is None or value.is_graph_input():
                return result.fail(f"{value.name} is not a constant initializer")
            if len(value.uses()) != 1:
                return result.fail(f"{value.name} is shared with another node")
        if constant.const_value is None:
            return result.fail(f"the {self.combine} operand is not constant")
        if self._per_channel(node, constant) is None:
            return result.fail(f"operand of shape {constant.const_value.shape} is not a per-channel constant")
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and bias.const_value.size not in (1, self._channels(node)):
            return result.fail("the bias is not per channel (a full matrix)")
        return result

    def rewrite(self, op, x, inner_out, constant):
        node = inner_out.producer()
        channels = self._channels(node)
        vector = np.broadcast_to(self._per_channel(node, constant), (channels,))
        attrs = dict(node.attributes.items())
        weight = node.inputs[1]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        b = None if bias is None else np.broadcast_to(bias.const_value.numpy().reshape(-1), (channels,))
        if node.op_type == "Gemm" and "beta" in attrs and b is not None:
            b = b * attrs.pop("beta").as_float()
        w = weight.const_value.numpy()
        if self.combine == "Mul":
            on_rows = node.op_type == "Conv" or ("transB" in attrs and attrs["transB"].as_int())
            w = w * (vector.reshape((-1,) + (1,) * (w.ndim - 1)) if on_rows else vector[None, :])
            b = None if b is None else b * vector
        else:
            b = vector if b is None else b + vector
        inputs = [x, op.initializer(ir.tensor(np.ascontiguousarray(w, dtype=w.dtype)), name=weight.name + "_affine")]
        if b is not None:
            dtype = w.dtype
            inputs.append(op.initializer(ir.tensor(np.ascontiguousarray(b, dtype=dtype)), name=weight.name + "_affine_bias"))
        return getattr(op, node.op_type)(*inputs, **attrs)


class ConvMul(_ChannelAffine):
    producer_op, combine = "Conv", "Mul"


class ConvAdd(_ChannelAffine):
    producer_op, combine = "Conv", "Add"


class GemmMul(_ChannelAffine):
    producer_op, combine = "Gemm", "Mul"


class GemmAdd(_ChannelAffine):
    producer_op, combine = "Gemm", "Add"


class ConvTransposeAsDepthToSpace(RewriteRuleClassBase):
    """Rule 6 of the module docstring. With k = kernel = stride and no padding, output pixel
    (k*i + a, k*j + b) of channel o reads input pixel (i, j) alone, with weight W[:, o, a, b]:
    a 1x1 convolution whose output channel o*k*k + a*k + b is that block entry, which
    DepthToSpace in CRD mode moves to its place."""

    def pattern(self, op, x, w):
        return op.ConvTranspose(x, w, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, w, out) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        weight = w.const_value
        if weight is None or len(weight.shape) != 4:
            return result.fail("the weight is not a constant of rank 4 (a 2-D ConvTranspose)")
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and bias.const_value is None:
            return result.fail("the bias is not a constant")
        attributes = node.attributes
        kernel, strides = list(weight.shape[2:]), list(attributes.get_ints("strides", [1, 1]))
        if kernel[0] != kernel[1] or strides != kernel:
            return result.fail(f"kernel {kernel} and strides {strides} are not one square block")
        if attributes.get_int("group", 1) != 1 or weight.shape[1] != 1:
            return result.fail(f"{weight.shape[1]} output channels in {attributes.get_int('group', 1)} group(s); only one is slow")
        if any(attributes.get_ints("pads", [0] * 4)) or any(attributes.get_ints("output_padding", [0, 0])):
            return result.fail("padded or output-padded")
        if list(attributes.get_ints("dilations", [1, 1])) != [1, 1] or "output_shape" in attributes:
            return result.fail("dilated, or an explicit output_shape")
        if attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return result.fail("auto_pad SAME pads the output")
        return result

    def rewrite(self, op, x, w, out):
        node = out.producer()
        weight = w.const_value.numpy()
        c_in, c_out, k, _ = weight.shape
        as_1x1 = np.ascontiguousarray(weight.transpose(1, 2, 3, 0).reshape(c_out * k * k, c_in, 1, 1))
        inputs = [x, op.initializer(ir.tensor(as_1x1), name=w.name + "_1x1")]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None:
            repeated = np.repeat(bias.const_value.numpy().reshape(-1), k * k)
            inputs.append(op.initializer(ir.tensor(np.ascontiguousarray(repeated)), name=bias.name + "_1x1"))
        return op.DepthToSpace(op.Conv(*inputs, kernel_shape=[1, 1]), blocksize=k, mode="CRD")


squeeze_unsqueeze_rules = [SqueezePair.rule("Unsqueeze", "Squeeze"), SqueezePair.rule("Squeeze", "Unsqueeze")]
pad_zero_rule = PadOfZeros.rule()
reshape_same_shape_rule = ReshapeToSameShape.rule()
where_scalar_rules = [WhereScalarOperand.rule(1), WhereScalarOperand.rule(2)]
conv_affine_rules = [*ConvMul.rule().commute(), *ConvAdd.rule().commute()]
gemm_affine_rules = [*GemmMul.rule().commute(), *GemmAdd.rule().commute()]
conv_transpose_depth_to_space_rule = ConvTransposeAsDepthToSpace.rule()
