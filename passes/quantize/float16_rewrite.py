"""fp16/bf16: rewrite a graph to a precision plan, with one Cast per boundary.

1. Outputs of low nodes (at their low slots) take the low type.
2. A float32 initializer a low node reads is stored in the low type; one that only fp32
   nodes read is stored low too when it is a weight (``min_elements`` or more) that fits,
   read through one Cast back to fp32 (ONNX Runtime folds that Cast when it loads the
   model: the file shrinks, the kernels stay fp32). Initializers an excluded node reads
   stay fp32; a low copy is made for the low readers, if any.
3. A low node's input that is still fp32 is read through one Cast to the low type, shared
   by every low reader of that value; a low value read by fp32 nodes, likewise, through
   one Cast up.
4. Graph inputs and outputs keep float32: a Cast at the boundary, and a graph output keeps
   its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxsmith.graph_names import GraphNames
from onnxsmith.passes.quantize.float16_plan import Plan, fits

__all__ = ["RewriteStats", "apply_plan"]


@dataclass
class RewriteStats:
    casts: int = 0
    weights_low: int = 0  # initializers stored in the low type
    bytes_before: int = 0  # of those initializers, as float32
    bytes_after: int = 0
    weights_kept: list[str] = field(default_factory=list)  # weights left fp32 because they do not fit
    weight_readers: set[str] = field(default_factory=set)  # nodes reading a low-stored weight


def apply_plan(model: ir.Model, plan: Plan, *, min_elements: int = 16, exclude: frozenset[str] = frozenset()) -> RewriteStats:
    """Rewrite ``model`` (in place) to ``plan``; returns what was converted. Weights of fewer
    than ``min_elements`` read by fp32 nodes only stay fp32 (no size to gain); nodes named in
    ``exclude`` read fp32 weights."""
    rewriter = _Rewriter(model, plan, exclude)
    rewriter.outputs_low()
    rewriter.initializers(min_elements)
    rewriter.cast_low_inputs()
    rewriter.cast_fp32_readers()
    common_passes.TopologicalSortPass()(model)
    return rewriter.stats


class _Rewriter:
    def __init__(self, model: ir.Model, plan: Plan, exclude: frozenset[str]) -> None:
        self.graph = model.graph
        self.plan = plan
        self.low = plan.low_type
        self.exclude = exclude
        self.stats = RewriteStats()
        self.low_values: set[ir.Value] = set()
        self.down: dict[ir.Value, ir.Value] = {}
        self.up: dict[ir.Value, ir.Value] = {}
        self.names = GraphNames(self.graph)
        self.casts: set[ir.Node] = set()

    def outputs_low(self) -> None:
        for node, node_plan in self.plan.nodes.items():
            if node_plan.low:
                for i in node_plan.outputs:
                    # a new type, not ``.dtype = low``: that sets the dtype inside the value's type
                    # object, which Model.clone() (onnx-ir 1.1) shares with the model it copied
                    node.outputs[i].type = ir.TensorType(self.low)
                    self.low_values.add(node.outputs[i])

    def initializers(self, min_elements: int) -> None:
        for value in list(self.graph.initializers.values()):
            if value.dtype != ir.DataType.FLOAT or value.const_value is None or value.is_graph_input() or value.is_graph_output():
                continue
            uses = list(value.uses())
            if not uses or any(use.node.graph is not self.graph for use in uses):
                continue  # read inside a subgraph: left alone
            low_uses = [u for u in uses if self._low_slot(u.node, u.idx)]
            kept = any(u.node.name in self.exclude for u in uses)
            array = value.const_value.numpy()
            if kept:
                if low_uses:
                    copy = self._initializer(f"{value.name}_{self.plan.precision}", array)
                    for use in low_uses:
                        use.node.replace_input_with(use.idx, copy)
                continue
            if not low_uses and (array.size < min_elements or not fits(array, self.plan.precision)):
                if array.size >= min_elements:
                    self.stats.weights_kept.append(value.name)
                continue
            value.const_value = ir.tensor(array.astype(self.low.numpy()), name=value.name)
            value.type = ir.TensorType(self.low)  # a new type: see outputs_low
            self.low_values.add(value)
            self.stats.weights_low += 1
            self.stats.bytes_before += array.size * 4
            self.stats.bytes_after += int(array.size * self.low.itemsize)
            self.stats.weight_readers.update(u.node.name for u in uses)

    def cast_low_inputs(self) -> None:
        for node, node_plan in list(self.plan.nodes.items()):
            if not node_plan.low:
                continue
            for i in node_plan.inputs:
                value = node.inputs[i]
                if value is not None and value not in self.low_values:
                    node.replace_input_with(i, self._cast(value, self.low, self.down))

    def cast_fp32_readers(self) -> None:
        for value in list(self.low_values):
            for use in list(value.uses()):
                if use.node in self.casts or self._low_slot(use.node, use.idx):
                    continue
                use.node.replace_input_with(use.idx, self._cast(value, ir.DataType.FLOAT, self.up))
            for index, output in enumerate(self.graph.outputs):
                if output is value:
                    self._float_output(index, value)

    def _float_output(self, index: int, value: ir.Value) -> None:
        """Graph output ``index`` becomes a float32 Cast of ``value``, under its name."""
        name = value.name
        value.name = self.names.fresh(f"{name}_{self.plan.precision}")
        cast = self._cast_node(value, ir.DataType.FLOAT)
        cast.outputs[0].name = name
        self.names.taken.add(name)
        self.graph.outputs[index] = cast.outputs[0]

    def _low_slot(self, node: ir.Node, index: int) -> bool:
        node_plan = self.plan.nodes.get(node)
        return node_plan is not None and node_plan.low and index in node_plan.inputs

    def _cast(self, value: ir.Value, dtype: ir.DataType, cache: dict[ir.Value, ir.Value]) -> ir.Value:
        if value not in cache:
            cast = self._cast_node(value, dtype)
            cast.outputs[0].name = self.names.fresh(f"{value.name}_{'fp32' if dtype == ir.DataType.FLOAT else self.plan.precision}")
            cache[value] = cast.outputs[0]
        return cache[value]

    def _cast_node(self, value: ir.Value, dtype: ir.DataType) -> ir.Node:
        cast = ir.node("Cast", [value], {"to": dtype}, name=self.names.fresh(f"{value.name}_cast"))
        cast.outputs[0].dtype = dtype
        if value.shape is not None:
            cast.outputs[0].shape = value.shape
        self.graph.append(cast)
        self.casts.add(cast)
        self.stats.casts += 1
        return cast

    def _initializer(self, name: str, array: np.ndarray) -> ir.Value:
        name = self.names.fresh(name)
        value = ir.Value(name=name, const_value=ir.tensor(array.astype(self.low.numpy()), name=name))
        value.dtype = self.low
        value.shape = ir.Shape(array.shape)
        self.graph.register_initializer(value)
        self.low_values.add(value)
        return value
