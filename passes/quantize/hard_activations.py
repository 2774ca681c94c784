"""HardSwish and HardSigmoid between int8 tensors, rewritten into ops with integer kernels.

ONNX Runtime has no int8 HardSwish: ``DQ -> HardSwish -> Q`` runs dequantized, as a float
HardSigmoid and a float Mul between a DequantizeLinear and a QuantizeLinear: four passes
over float data. In the MobileNetV3-style models (PP-OCR's) that took more time than the
int8 convolutions between them.

HardSigmoid(x) = clip(alpha x + beta, 0, 1) is a QuantizeLinear's saturation: quantizing
x + beta/alpha to 255 steps of 1/(255 alpha) from zero clips it to [0, 1/alpha], and
reading those steps back at 1/255 gives the HardSigmoid. HardSwish(x) is x times
HardSigmoid(x) (alpha 1/6, beta 1/2). So

    DQ(x) -> HardSwish -> Q(y)   becomes   DQ(x), DQ(beta/alpha) -> Add -> Q(1/(255 alpha))
                                           -> DQ(1/255) -> Mul(DQ(x), .) -> Q(y)

which ONNX Runtime fuses into QLinearAdd and QLinearMul: integer kernels over uint8 data.
The one rounding step added is the HardSigmoid's, 1/255 of its [0, 1] range. Only uint8
activations are rewritten (what ONNX Runtime CPU's kernels take): with int8 ones its
QDQ S8-to-U8 conversion splits the units and Add and Mul would run in float.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.graph_names import GraphNames

__all__ = ["rewrite_hard_activations"]

_STEPS = 255


def rewrite_hard_activations(graph: ir.Graph) -> int:
    """Rewrite every HardSwish and HardSigmoid of ``graph`` whose input is a uint8
    DequantizeLinear and whose output only QuantizeLinear nodes read; returns how many."""
    names = GraphNames(graph)
    rewritten = 0
    for node in list(graph):
        if node.op_type not in ("HardSwish", "HardSigmoid") or node.domain not in ("", "ai.onnx"):
            continue
        source = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        output = node.outputs[0]
        readers = list(output.uses())
        if (source is None or source.op_type != "DequantizeLinear" or _reads(source) != ir.DataType.UINT8
                or output.is_graph_output() or not readers or any(use.node.op_type != "QuantizeLinear" for use in readers)):
            continue
        alpha = node.attributes.get_float("alpha", 0.2) if node.op_type == "HardSigmoid" else 1 / 6
        beta = node.attributes.get_float("beta", 0.5) if node.op_type == "HardSigmoid" else 0.5
        if alpha <= 0:
            continue
        _Rewrite(graph, names, node).write(alpha, beta)
        rewritten += 1
    return rewritten


def _reads(dequantize: ir.Node) -> ir.DataType | None:
    """The integer type a DequantizeLinear reads: its input's, else its zero point's (none: uint8)."""
    for value in (dequantize.inputs[0], dequantize.inputs[2] if len(dequantize.inputs) > 2 else None):
        if value is not None and value.dtype is not None:
            return value.dtype
    return ir.DataType.UINT8 if len(dequantize.inputs) < 3 or dequantize.inputs[2] is None else None


class _Rewrite:
    """The integer form of one HardSwish / HardSigmoid node, put in its place."""

    def __init__(self, graph: ir.Graph, names: GraphNames, node: ir.Node) -> None:
        self.graph, self.names, self.node = graph, names, node

    def write(self, alpha: float, beta: float) -> None:
        x = self.node.inputs[0]
        shifted = self._op("Add", [x, self._constant("shift", beta / alpha)]) if beta else x
        saturated = self._op("QuantizeLinear", [shifted, self._scalar("scale", 1 / (_STEPS * alpha)), self._zero_point()],
                             ir.DataType.UINT8)
        hard_sigmoid = self._op("DequantizeLinear", [saturated, self._scalar("unit_scale", 1 / _STEPS), self._zero_point()])
        result = self._op("Mul", [x, hard_sigmoid]) if self.node.op_type == "HardSwish" else hard_sigmoid
        old = self.node.outputs[0]
        for use in list(old.uses()):
            use.node.replace_input_with(use.idx, result)
        self.graph.remove(self.node, safe=True)
        # the result takes the activation's name: comparisons and the guard find tensors by name
        result.name, old.name = old.name, self.names.fresh(f"{old.name}_replaced")

    def _constant(self, what: str, value: float) -> ir.Value:
        """``value`` as uint8 255 (or 0, if negative) with zero point 0 (or 255), read through DQ."""
        step, zero_point = (_STEPS, 0) if value > 0 else (0, _STEPS)
        data = self._initializer(what, np.array(step, np.uint8))
        return self._op("DequantizeLinear", [data, self._scalar(f"{what}_scale", abs(value) / _STEPS),
                                             self._initializer(f"{what}_zero_point", np.array(zero_point, np.uint8))])

    def _zero_point(self) -> ir.Value:
        return self._initializer("zero_point", np.array(0, np.uint8))

    def _scalar(self, what: str, value: float) -> ir.Value:
        return self._initializer(what, np.array(value, np.float32))

    def _initializer(self, what: str, array: np.ndarray) -> ir.Value:
        name = self.names.fresh(f"{self.node.name}_{what}")
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.tensor(array, name=name))
        self.graph.register_initializer(value)
        return value

    def _op(self, op_type: str, inputs: list[ir.Value], dtype: ir.DataType = ir.DataType.FLOAT) -> ir.Value:
        node = ir.node(op_type, inputs, name=self.names.fresh(f"{self.node.name}_{op_type}"))
        output = node.outputs[0]
        output.name = self.names.fresh(f"{node.name}_output")
        output.type = ir.TensorType(dtype)
        output.shape = inputs[0].shape  # elementwise, or a scalar constant's DQ
        self.graph.insert_before(self.node, node)
        return output
