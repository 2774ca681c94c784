"""Undo float-only fusions before int8, so the layers inside them can be quantized.

``fuse`` (run first in the default recipe) turns ``Act(Conv(x))`` into ONNX Runtime's
``FusedConv``, a float32 kernel: a QDQ quantizer does not know it, so every fused
convolution stayed float (PP-OCRv4 det: 21 of 62). Before int8 we split it back, exactly:

1. ``FusedConv(x, W, B, activation=A, activation_params=P)`` -> ``A(Conv(x, W, B))`` with A's
   parameters from P (LeakyRelu alpha; HardSigmoid alpha, beta; Clip min, max as inputs).

In QDQ, Relu and Clip after a Conv fold into its output range and ONNX Runtime's QLinearConv
runs the pair; a layer the guard keeps in float is fused again by ONNX Runtime's own
optimizer when the session loads, so nothing is lost.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["unfuse_for_int8"]

_ACTIVATIONS = {"Relu", "LeakyRelu", "Tanh", "Sigmoid", "HardSigmoid", "Clip"}


def unfuse_for_int8(model: ir.Model) -> int:
    """Split every FusedConv of ``model``'s main graph in place; returns how many."""
    count = 0
    for node in list(model.graph):
        if node.op_type != "FusedConv" or node.domain != "com.microsoft" or len(node.inputs) > 3:
            continue
        activation = node.attributes["activation"].as_string() if "activation" in node.attributes else None
        if activation not in _ACTIVATIONS:
            continue
        params = list(node.attributes["activation_params"].as_floats()) if "activation_params" in node.attributes else []
        conv_attributes = [a for name, a in node.attributes.items() if name not in ("activation", "activation_params")]
        conv = ir.Node("", "Conv", inputs=list(node.inputs), attributes=conv_attributes, name=node.name)
        conv_out = conv.outputs[0]
        conv_out.name = f"{node.outputs[0].name}_conv"
        conv_out.dtype, conv_out.shape = node.outputs[0].dtype, node.outputs[0].shape
        act = _activation(activation, params, conv_out, f"{node.name}_{activation.lower()}", model)
        model.graph.insert_before(node, [conv, act])
        name = node.outputs[0].name
        act.outputs[0].dtype, act.outputs[0].shape = node.outputs[0].dtype, node.outputs[0].shape
        node.outputs[0].replace_all_uses_with(act.outputs[0], replace_graph_outputs=True)
        model.graph.remove(node, safe=True)
        act.outputs[0].name = name  # the tensor keeps its name: calibration and reports speak of it
        count += 1
    return count


def _activation(activation: str, params: list[float], x: ir.Value, name: str, model: ir.Model) -> ir.Node:
    if activation == "LeakyRelu":
        return ir.Node("", activation, [x], attributes=[ir.AttrFloat32("alpha", params[0] if params else 0.01)], name=name)
    if activation == "HardSigmoid":
        alpha, beta = (params + [0.2, 0.5][len(params):])[:2]
        return ir.Node("", activation, [x], attributes=[ir.AttrFloat32("alpha", alpha), ir.AttrFloat32("beta", beta)], name=name)
    if activation == "Clip":
        low, high = (params + [float("-inf"), float("inf")][len(params):])[:2]
        bounds = []
        for suffix, bound in (("min", low), ("max", high)):
            value = ir.Value(name=f"{name}_{suffix}", const_value=ir.tensor(np.array(bound, dtype=np.float32)))
            model.graph.register_initializer(value)
            bounds.append(value)
        return ir.Node("", activation, [x, *bounds], name=name)
    return ir.Node("", activation, [x], name=name)
