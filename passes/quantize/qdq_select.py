"""Which tensors of a graph get Q/DQ, node by node, by the rules of ONNX Runtime's QDQ quantizer.

Nodes are visited in graph order; a node is selected when its type is in ``op_types`` and
its name is not excluded. Every tensor gets at most one Q/DQ pair, computed once: a second
reader shares it. The rules, per kind of node (ONNX Runtime's operators/*.py):

1. Weighted (Conv, ConvTranspose, MatMul, Gemm): the activation input and, unless the op
   type is in ``float_output_ops``, the output are quantized from their calibrated ranges;
   the weight becomes int8 data, per channel along the output channels (Conv axis 0,
   ConvTranspose axis 1, Gemm axis 0 with transB and 1 without, MatMul its last axis); the
   bias becomes int32 with scale = input scale x weight scale (qdq_params.py, rule 5).
2. Relu and Clip after a quantized tensor: with asymmetric activations (or zero point 0
   and a range that starts at 0: uint8 by sign), when that tensor has no other reader, the
   producer writes the activation's output itself and the activation goes; the Q/DQ on that
   output, quantized from its range (0 at the bottom), clips as Relu/Clip did. Otherwise the
   activation stays, between two Q/DQ pairs, and its input takes its output's range.
3. Shared scale (MaxPool, Resize, Reshape, Transpose, Squeeze, Unsqueeze, Flatten, Slice,
   AveragePool, TopK) after a quantized tensor: the output reuses the input's scale and zero
   point, so ONNX Runtime runs the op on the int8 data with nothing to requantize.
4. Any other op (``ops=[...]``): every float input and output, from its range; a constant
   input from its own values, in the activation type; Softmax's output over [0, 1].

A node that cannot be written so stays float, whole, with the reason (``skipped``), where
ONNX Runtime's quantizer raises or writes a unit its runtime cannot fuse: a weight or bias
that is not a constant, a bias that is not one float per output channel, a bias that would
overflow int32, an input without a calibrated range, a weight layout it does not know, a
Gemm with alpha != 1 (not fused into QGemm: it would run dequantized, slower than float).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.quantize.calibration import TensorRange
from onnxsmith.passes.quantize.qdq_params import IntType, QuantParams, fit_weight_scale, quantize_bias, range_params, weight_params

__all__ = ["Bias", "QdqOptions", "QdqSelection", "Quantized", "select_qdq"]

WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
REMOVABLE = ("Relu", "Clip")
SHARED_SCALE = {"MaxPool": 12, "Resize": 11, "Reshape": 1, "Transpose": 1, "Squeeze": 1, "Unsqueeze": 1, "Flatten": 1,
                "Slice": 1, "AveragePool": 1, "TopK": 1}  # op -> the opset from which ONNX Runtime shares its scale
# ops ONNX Runtime's quantizer has a rule of its own for, that this writer does not write
OWN_RULES = ("Split", "Gather", "GatherElements", "Where", "Pad", "InstanceNormalization", "LayerNormalization",
             "BatchNormalization")


@dataclass(frozen=True)
class QdqOptions:
    op_types: frozenset[str]
    exclude: frozenset[str]
    per_channel: bool
    activations: IntType
    weights: IntType
    float_output_ops: frozenset[str] = frozenset()
    # zero point 0 in the type the range calls for: uint8 where it starts at 0, else symmetric int8
    activations_by_sign: bool = False

    def activation_type(self, low: float) -> IntType:
        """The integer type of an activation (or a generic op's constant) whose range starts at ``low``."""
        if not self.activations_by_sign:
            return self.activations
        return IntType(np.uint8, symmetric=False) if low >= 0 else IntType(np.int8, symmetric=True)


@dataclass(frozen=True)
class Quantized:
    """A tensor to write: a constant as integer data read through DequantizeLinear, or an
    activation through QuantizeLinear -> DequantizeLinear with the scale of ``source``."""

    params: QuantParams
    constant: bool = False
    source: ir.Value | None = None  # the tensor whose scale and zero point it shares, if not its own


@dataclass(frozen=True)
class Bias:
    node: ir.Node
    value: ir.Value  # the float bias the node reads
    values: np.ndarray  # what the node adds (Gemm: beta x C), float32, one per output channel
    input: ir.Value
    weight: ir.Value


@dataclass
class QdqSelection:
    tensors: dict[ir.Value, Quantized] = field(default_factory=dict)
    biases: list[Bias] = field(default_factory=list)
    removed: list[ir.Value] = field(default_factory=list)  # inputs of removed activations (Clip bounds)
    # tensors that took the name of the Relu/Clip removed after them (rule 2): their DequantizeLinear,
    # which clips as the activation did, carries that name in the written model
    renamed: list[ir.Value] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why it stays float


def select_qdq(graph: ir.Graph, ranges: dict[str, TensorRange], options: QdqOptions, opset: int) -> QdqSelection:
    """What to quantize in ``graph`` (its main graph only); removes the Relu/Clip nodes of rule 2."""
    return _Selector(graph, ranges, options, opset).run()


class _Selector:
    def __init__(self, graph: ir.Graph, ranges: dict[str, TensorRange], options: QdqOptions, opset: int) -> None:
        self.graph = graph
        self.ranges = dict(ranges)
        self.options = options
        self.opset = opset
        self.selection = QdqSelection()

    def run(self) -> QdqSelection:
        self._adjust_ranges()
        for node in list(self.graph):
            if node.graph is None or not self._selected(node):
                continue  # a Relu/Clip removed by rule 2, or not asked for
            problem = self._visit(node)
            if problem:
                self.selection.skipped[node.name] = problem
        return self.selection

    def _selected(self, node: ir.Node) -> bool:
        return node.op_type in self.options.op_types and node.name not in self.options.exclude

    def _adjust_ranges(self) -> None:
        """Rule 2's input range and rule 4's Softmax range, before any node is visited."""
        for node in self.graph:
            if not self._selected(node) or not node.outputs:
                continue
            out = node.outputs[0].name
            if node.op_type == "Softmax":
                self.ranges[out] = TensorRange(0.0, 1.0)
            elif node.op_type in REMOVABLE and self._sole_input_ranged(node):
                self.ranges[node.inputs[0].name] = self.ranges[out]

    def _sole_input_ranged(self, node: ir.Node) -> bool:
        """Whether ``node`` is the only reader of its input, and both have a range."""
        x = node.inputs[0]
        return x is not None and len(x.uses()) == 1 and x.name in self.ranges and node.outputs[0].name in self.ranges

    def _visit(self, node: ir.Node) -> str | None:
        if node.domain not in ("", "ai.onnx"):
            return f"{node.domain}::{node.op_type} is not the ONNX op"
        if node.op_type in WEIGHTED:
            return self._weighted(node)
        if node.op_type in REMOVABLE:
            return self._removable(node)
        if node.op_type in SHARED_SCALE:
            self._shared_scale(node)
            return None
        if node.op_type in OWN_RULES:
            return f"{node.op_type} is not written by the QDQ writer (ONNX Runtime's quantizer has a rule of its own for it)"
        return self._generic(node)

    # --- rule 1 --------------------------------------------------------------------------

    def _weighted(self, node: ir.Node) -> str | None:
        x, w = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        layout = self._weight_layout(node, w)
        if isinstance(layout, str):
            return layout
        axis, channels = layout
        output = node.outputs[0] if self._quantized_output(node) else None
        problem = self._activation_problem(x, "input") or (output is not None and self._activation_problem(output, "output"))
        if problem:
            return problem
        weight = self.selection.tensors.get(w)
        params = weight.params if weight is not None else weight_params(w.const_value.numpy(), self.options.weights, axis)
        if params.axis != axis:
            return f"its weight {w.name} is shared with a layer that quantizes it along another axis"
        written_bias = None
        if bias is not None:
            found = self._bias(node, bias, x, w, channels, params)
            if isinstance(found, str):
                return found
            written_bias, params = found
        self._quantize_activation(x)
        self.selection.tensors[w] = Quantized(params, constant=True)
        if output is not None:
            self._quantize_activation(output)
        if written_bias is not None:
            self.selection.biases.append(written_bias)
        return None

    def _weight_layout(self, node: ir.Node, w: ir.Value | None) -> tuple[int | None, int] | str:
        """(per-channel axis or None, output channels) of a weighted node, or why it cannot be quantized."""
        if w is None:
            return "it has no weight"
        if not _constant(w):
            return f"its weight {w.name} is not a constant"
        array = w.const_value.numpy()
        if array.dtype != np.float32:
            return f"its weight {w.name} is {array.dtype}, not float32"
        shape, op = array.shape, node.op_type
        if op in ("Conv", "ConvTranspose") and len(shape) < 3:
            return f"its weight {w.name} has shape {list(shape)}: not a convolution kernel"
        if (op == "Gemm" and len(shape) != 2) or (op == "MatMul" and len(shape) < 2):
            return f"its weight {w.name} has shape {list(shape)}: not a matrix"
        if op == "Gemm" and node.attributes.get_float("alpha", 1.0) != 1.0:
            return "Gemm with alpha != 1: ONNX Runtime does not fuse it into QGemm, it would run dequantized"
        if op == "Conv":
            axis, channels = 0, shape[0]
        elif op == "ConvTranspose":
            axis, channels = 1, shape[1] * node.attributes.get_int("group", 1)
        elif op == "Gemm":
            axis = 0 if node.attributes.get_int("transB", 0) else 1
            channels = shape[axis]
        else:
            axis, channels = len(shape) - 1, shape[-1]
        return (axis if self.options.per_channel else None), channels

    def _bias(self, node: ir.Node, bias: ir.Value, x: ir.Value, w: ir.Value, channels: int,
              params: QuantParams) -> tuple[Bias, QuantParams] | str:
        """The bias to write and the weight's scales fitted to it, or why the layer stays float."""
        if not _constant(bias):
            return f"its bias {bias.name} is not a constant"
        values = bias.const_value.numpy()
        if values.dtype != np.float32:
            return f"its bias {bias.name} is {values.dtype}, not float32"
        per_column = node.op_type == "Gemm" and values.shape in ((), (1, channels))  # Gemm broadcasts C over rows
        if values.shape != (channels,) and not per_column:
            return f"its bias {bias.name} has shape {list(values.shape)}, not [{channels}] (one per output channel)"
        values = np.broadcast_to(values.reshape(-1), (channels,)).astype(np.float32)
        if node.op_type == "Gemm":
            values = values * np.float32(node.attributes.get_float("beta", 1.0))  # the writer sets beta to 1
        if params.axis is not None and params.scale.size != channels:
            return (f"its per-channel weight scales ({params.scale.size}, along axis {params.axis}) do not match its "
                    f"{channels} bias values (grouped ConvTranspose)")
        # the scale x is written with, shared or its own (ONNX Runtime fits the weight to x's own
        # range even where x shares another tensor's scale, and then clips the bias)
        input_scale = self._params(x).scale
        fitted = fit_weight_scale(values, input_scale, params)
        if quantize_bias(values, input_scale, fitted.scale) is None:
            return f"its bias {bias.name} does not fit int32 at scale input scale x weight scale"
        return Bias(node, bias, values, x, w), fitted

    # --- rules 2 and 3 -------------------------------------------------------------------

    def _removable(self, node: ir.Node) -> str | None:
        x, y = node.inputs[0], node.outputs[0]
        if not self._follows_quantized(x):
            return None
        clips_at_bottom = not self.options.activations.symmetric or (
            self.options.activations_by_sign and y.name in self.ranges and self.ranges[y.name].low >= 0)
        if clips_at_bottom and self._can_remove(x, y):
            self._remove(node)
            del self.selection.tensors[x]
            if self._quantized_output(node):
                self._quantize_activation(x)  # now under the activation's output name, with its range
            return None
        if not self._quantized_output(node):
            return None
        problem = self._activation_problem(y, "output")
        if problem:
            return problem
        self._quantize_activation(y)
        return None

    def _can_remove(self, x: ir.Value, y: ir.Value) -> bool:
        return (y.name in self.ranges and len(x.uses()) == 1 and x.producer() is not None
                and not x.is_graph_output() and not x.is_graph_input())

    def _remove(self, node: ir.Node) -> None:
        """Rule 2: ``node``'s input takes the place and the name of its output."""
        x, y, bounds = node.inputs[0], node.outputs[0], [v for v in node.inputs[1:] if v is not None]
        name = y.name
        y.replace_all_uses_with(x, replace_graph_outputs=True)
        self.graph.remove(node, safe=True)
        y.name = f"{name}_removed"
        x.name = name
        self.selection.removed.extend(bounds)
        self.selection.renamed.append(x)

    def _shared_scale(self, node: ir.Node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if self.opset < SHARED_SCALE[node.op_type] or not self._follows_quantized(x) or not self._quantized_output(node):
            return
        if y.dtype == ir.DataType.FLOAT:
            source = self.selection.tensors[x].source or x
            self.selection.tensors[y] = Quantized(self.selection.tensors[x].params, source=source)

    # --- rule 4 --------------------------------------------------------------------------

    def _generic(self, node: ir.Node) -> str | None:
        inputs = [v for v in node.inputs if v is not None]
        outputs = list(node.outputs) if self._quantized_output(node) else []
        typeless = next((v for v in [*inputs, *outputs] if v.dtype is None), None)
        if typeless is not None:
            return f"the type of {typeless.name} is unknown"
        floats = [v for v in [*inputs, *outputs] if v.dtype == ir.DataType.FLOAT]
        roles = ["input" if v in inputs else "output" for v in floats]
        problem = next((p for v, role in zip(floats, roles, strict=True)
                        if not _constant(v) and (p := self._activation_problem(v, role))), None)
        if problem:
            return problem
        # constants in the activation type, from their own values, as ONNX Runtime does (reduced range included)
        for value in floats:
            if not _constant(value):
                self._quantize_activation(value)
            elif value not in self.selection.tensors:
                data = value.const_value.numpy()
                own = self.options.activation_type(float(data.min()) if data.size else 0.0)
                kind = IntType(own.dtype, own.symmetric, self.options.weights.reduce_range)
                self.selection.tensors[value] = Quantized(weight_params(data, kind, None), constant=True)
        return None

    # --- tensors -------------------------------------------------------------------------

    def _quantized_output(self, node: ir.Node) -> bool:
        return node.op_type not in self.options.float_output_ops

    def _follows_quantized(self, x: ir.Value | None) -> bool:
        """Whether ``x`` is an activation an earlier node quantized (rules 2 and 3 follow it)."""
        return x is not None and x in self.selection.tensors and not self.selection.tensors[x].constant

    def _activation_problem(self, value: ir.Value | None, role: str) -> str | None:
        if value is None:
            return f"it has no {role}"
        if _constant(value):
            return f"its {role} {value.name} is a constant"
        if value in self.selection.tensors:
            return None
        if value.dtype != ir.DataType.FLOAT:
            return f"its {role} {value.name} is {value.dtype or 'of unknown type'}, not float32"
        if value.name not in self.ranges:
            return f"no calibrated range for its {role} {value.name}"
        return None

    def _quantize_activation(self, value: ir.Value) -> None:
        if value not in self.selection.tensors:
            self.selection.tensors[value] = Quantized(self._params(value))

    def _params(self, value: ir.Value) -> QuantParams:
        if value in self.selection.tensors:
            return self.selection.tensors[value].params
        found = self.ranges[value.name]
        return range_params(found.low, found.high, self.options.activation_type(found.low))


def _constant(value: ir.Value) -> bool:
    """An initializer the user cannot feed (ONNX Runtime quantizes only those as weights)."""
    return value.is_initializer() and value.const_value is not None and not value.is_graph_input()
