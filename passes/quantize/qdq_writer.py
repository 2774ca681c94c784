"""Writing int8 QDQ graphs ourselves, in the node units ONNX Runtime CPU fuses into integer kernels.

ONNX Runtime runs a QDQ model fast only where its QDQ selectors recognise a node unit and
fuse it into an integer kernel; anything else runs dequantized, in float, plus the cost of
the Q/DQ nodes. The units this writer produces (qdq_select.py says which tensors get them):

- ``DQ(x), DQ(W int8) [, DQ(b int32)] -> Conv -> Q``: QLinearConv (W per channel with zero
  points 0, b at scale x_scale * W_scale);
- ``DQ(x), DQ(W int8) -> MatMul`` with a float output: MatMulIntegerToFloat;
  ``DQ(x), DQ(W), DQ(b) -> Gemm`` [``-> Q``]: QGemm;
- ``DQ -> MaxPool/Resize/Reshape/Transpose/... -> Q`` with the same scale and zero point on
  both sides: the op runs on the int8 data and the pair is dropped;
- Relu and Clip removed, the producer's output Q clipping as they did.

These are the shapes ONNX Runtime's own ``QDQQuantizer`` writes, with the same numbers
(qdq_params.py), so on the models it handles the outputs are bit for bit the same
(tests/test_qdq_writer.py). We used it until it failed on real models, and we differ where
it does: a per-channel Gemm whose bias is [1, N] or a scalar (Keras' Dense) raises ``The
truth value of an array ... is ambiguous`` there and is quantized here; a layer whose bias
is not a constant, a missing range, a Gemm with alpha != 1, Split/Gather/Pad/normalisations
(which it has rules of its own for) stay float here, with the reason in
``QdqResult.skipped``; Gemm keeps its beta; a bias is fitted to the scale its input really
has. A MatMul weight of rank > 2 is per channel along its last axis (ONNX Runtime: axis 1).

Writing: one QuantizeLinear -> DequantizeLinear pair per activation, read by every reader of
the tensor (float ones included); a graph output keeps its name on the DequantizeLinear;
constants become integer initializers read through DequantizeLinear; float initializers
nothing reads any more are dropped. Only the main graph is quantized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxsmith.graph_names import GraphNames
from onnxsmith.layer_map import QDQ_RENAMED_SUFFIX
from onnxsmith.passes.quantize.calibration import TensorRange
from onnxsmith.passes.quantize.hard_activations import rewrite_hard_activations
from onnxsmith.passes.quantize.qdq_params import IntType, QuantParams, quantize, quantize_bias
from onnxsmith.passes.quantize.qdq_select import Bias, QdqOptions, Quantized, select_qdq
from onnxsmith.shape_inference import infer_shapes

__all__ = ["ACTIVATION_SCHEMES", "MIN_PER_CHANNEL_OPSET", "MIN_QDQ_OPSET", "QdqResult", "write_qdq"]

MIN_QDQ_OPSET = 10  # QuantizeLinear / DequantizeLinear
MIN_PER_CHANNEL_OPSET = 13  # DequantizeLinear's axis
_TYPES = {"int8": np.int8, "uint8": np.uint8}
# how activations are written: uint8 asymmetric (ONNX Runtime CPU's u8s8 kernels), int8 symmetric,
# or zero point 0 in the type the range calls for, uint8 where it starts at 0 (OpenVINO: a
# nonzero zero point leaves a Convert + Subtract on every activation, NNCF writes it this way)
ACTIVATION_SCHEMES = ("uint8", "int8", "symmetric")


@dataclass
class QdqResult:
    model: ir.Model
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why it stayed float


def write_qdq(
    model: ir.Model,
    ranges: dict[str, TensorRange],
    *,
    op_types: Sequence[str],
    exclude: Sequence[str],
    per_channel: bool,
    activations: str,
    reduce_range: bool = False,
    float_output_ops: Sequence[str] = (),
    weights: str = "int8",
    integer_hard_activations: bool = False,
) -> QdqResult:
    """A copy of ``model`` with int8 QDQ around the nodes of ``op_types`` (nodes named in
    ``exclude`` stay float), activations quantized from ``ranges`` as ``activations`` (one of
    ACTIVATION_SCHEMES), weights symmetric (``reduce_range``: 7 bits), per channel or not;
    outputs of ``float_output_ops`` stay float. ``integer_hard_activations``: HardSwish and
    HardSigmoid between int8 tensors in ops the backend has integer kernels for (hard_activations.py)."""
    if activations not in ACTIVATION_SCHEMES or weights not in _TYPES:
        raise ValueError(f"activations are one of {', '.join(ACTIVATION_SCHEMES)} and weights int8 or uint8, "
                         f"not {activations!r} and {weights!r}")
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    needed = MIN_PER_CHANNEL_OPSET if per_channel else MIN_QDQ_OPSET
    if opset < needed:
        raise ValueError(f"int8 QDQ{' per channel' if per_channel else ''} needs opset >= {needed}, the model has "
                         f"{opset}: convert it first (qdq.upgrade_for_per_channel)")
    options = QdqOptions(
        op_types=frozenset(op_types), exclude=frozenset(exclude), per_channel=per_channel,
        activations=IntType(np.uint8 if activations == "uint8" else np.int8, symmetric=activations != "uint8"),
        weights=IntType(_TYPES[weights], symmetric=True, reduce_range=reduce_range),
        float_output_ops=frozenset(float_output_ops), activations_by_sign=activations == "symmetric",
    )
    work = model.clone()
    infer_shapes(work, strict=False)  # which tensors are float
    selection = select_qdq(work.graph, ranges, options, opset)
    writer = _Writer(work.graph)
    renamed = set(selection.renamed)
    for value, tensor in selection.tensors.items():
        writer.write(value, tensor, activation_name=value in renamed)
    for bias in selection.biases:
        writer.write_bias(bias, selection.tensors[bias.input].params, selection.tensors[bias.weight].params)
    writer.drop_unread([*selection.removed, *selection.tensors, *(b.value for b in selection.biases)])
    if integer_hard_activations:
        rewrite_hard_activations(work.graph)
    common_passes.TopologicalSortPass()(work)
    return QdqResult(work, selection.skipped)


class _Writer:
    """Q/DQ nodes and their initializers, under ONNX Runtime's names (``x_QuantizeLinear``,
    ``W_quantized``, ``W_scale``, ...), made unique."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.names = GraphNames(graph)
        self.params: dict[ir.Value, tuple[ir.Value, ir.Value]] = {}  # tensor -> its scale and zero point

    def write(self, value: ir.Value, tensor: Quantized, *, activation_name: bool = False) -> None:
        """``value`` read through DequantizeLinear by all its readers (and as graph output). With
        ``activation_name`` (``value`` took the name of a Relu/Clip folded into its range), the
        DequantizeLinear output takes the name: it holds the clipped values the activation's
        output held, so a comparison by tensor name compares like with like."""
        readers = list(value.uses())
        scale, zero_point = self._scale_zero_point(tensor.source or value, tensor.params)
        name = value.name
        if tensor.constant:
            source = self._initializer(f"{name}_quantized", quantize(value.const_value.numpy(), tensor.params))
        else:
            source = self._node("QuantizeLinear", [value, scale, zero_point], name, _dtype(tensor.params),
                                value.shape)
        dequantized = self._node("DequantizeLinear", [source, scale, zero_point], name, ir.DataType.FLOAT, value.shape,
                                 axis=tensor.params.axis)
        for use in readers:
            use.node.replace_input_with(use.idx, dequantized)
        if (value.is_graph_output() or activation_name) and not tensor.constant:
            self._take_output_name(value, dequantized)

    def write_bias(self, bias: Bias, input_params: QuantParams, weight_params: QuantParams) -> None:
        """``bias`` as int32 at scale input scale x weight scale, for its node alone."""
        steps, scale = quantize_bias(bias.values, input_params.scale, weight_params.scale)
        name = bias.value.name
        per_channel = scale.size > 1
        data = self._initializer(f"{name}_quantized", steps)
        scale_value = self._initializer(f"{name}_quantized_scale", scale if per_channel else scale.reshape(()))
        zero_point = self._initializer(f"{name}_quantized_zero_point", np.zeros(scale.shape if per_channel else (), np.int32))
        dequantized = self._node("DequantizeLinear", [data, scale_value, zero_point], name, ir.DataType.FLOAT,
                                 ir.Shape(steps.shape), axis=0 if per_channel else None)
        bias.node.replace_input_with(2, dequantized)
        if "beta" in bias.node.attributes:
            bias.node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)  # beta x C is in the bias's values

    def drop_unread(self, values: list[ir.Value]) -> None:
        """Remove the initializers among ``values`` that nothing reads any more."""
        for value in values:
            if (value.is_initializer() and not value.uses() and not value.is_graph_output()
                    and not value.is_graph_input() and self.graph.initializers.get(value.name) is value):
                self.graph.initializers.pop(value.name)

    def _scale_zero_point(self, owner: ir.Value, params: QuantParams) -> tuple[ir.Value, ir.Value]:
        if owner not in self.params:
            self.params[owner] = (self._initializer(f"{owner.name}_scale", params.scale),
                                  self._initializer(f"{owner.name}_zero_point", params.zero_point))
        return self.params[owner]

    def _take_output_name(self, value: ir.Value, dequantized: ir.Value) -> None:
        """The DequantizeLinear output takes ``value``'s name (and its place among the graph outputs)."""
        name = value.name
        value.name = self.names.fresh(f"{name}{QDQ_RENAMED_SUFFIX}")
        for i, output in enumerate(self.graph.outputs):
            if output is value:
                self.graph.outputs[i] = dequantized
        dequantized.name = name

    def _node(self, op_type: str, inputs: list[ir.Value], base: str, dtype: ir.DataType, shape: ir.Shape | None,
              axis: int | None = None) -> ir.Value:
        node = ir.node(op_type, inputs, {"axis": axis} if axis is not None else None, name=self.names.fresh(f"{base}_{op_type}"))
        output = node.outputs[0]
        output.name = self.names.fresh(f"{base}_{op_type}_Output")
        output.type = ir.TensorType(dtype)
        output.shape = shape
        self.graph.append(node)
        return output

    def _initializer(self, base: str, array: np.ndarray) -> ir.Value:
        name = self.names.fresh(base)
        tensor = ir.tensor(np.asarray(array), name=name)
        value = ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
        self.graph.register_initializer(value)
        return value


def _dtype(params: QuantParams) -> ir.DataType:
    return ir.DataType.INT8 if params.zero_point.dtype == np.int8 else ir.DataType.UINT8
