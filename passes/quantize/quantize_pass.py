"""``quantize``: the options of every precision mode, and the dispatch to the mode's module.

One pass, one option set, so recipes read ``quantize{mode=int4,block=32,method=gptq}``.
Each mode lives in its own module with one entry point ``(options, model, ctx) ->
PassResult``: int8.py (static QDQ, calibrated), dynamic.py, float16.py (fp16/bf16),
int4.py (weight-only, RTN or GPTQ). All lossy modes share the accuracy guard (guard.py).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Literal

import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.passes.quantize.calibration import Method
from onnxsmith.registry import register_pass

__all__ = ["MODES", "NEEDS_CALIBRATION", "QuantizePass"]

Mode = Literal["int8", "dynamic", "fp16", "bf16", "int4"]
# mode -> (module, function) of its implementation
MODES: dict[str, tuple[str, str]] = {
    "int8": ("onnxsmith.passes.quantize.int8", "quantize_int8"),
    "dynamic": ("onnxsmith.passes.quantize.dynamic", "quantize_dynamic"),
    "fp16": ("onnxsmith.passes.quantize.float16", "quantize_float16"),
    "bf16": ("onnxsmith.passes.quantize.float16", "quantize_float16"),
    "int4": ("onnxsmith.passes.quantize.int4", "quantize_int4"),
}
# mode -> whether the pipeline must refuse to start without calibration data; a mode that
# needs it only for some options (int4 method=gptq) says False and calls
# ``ctx.require_calibration`` itself
NEEDS_CALIBRATION: dict[str, bool] = {"int8": True, "dynamic": False, "fp16": False, "bf16": False, "int4": False}


@register_pass
@dataclasses.dataclass(frozen=True)
class QuantizePass(Pass):
    name = "quantize"
    summary = "Lower precision: int8 static (QDQ, calibrated), dynamic int8, fp16/bf16, int4 weight-only; guarded by the accuracy budget."
    exact = False
    needs_calibration = True  # in the default mode, int8; requires_calibration() answers per mode
    in_place = False  # type: ignore[assignment]
    changes_input = False  # type: ignore[assignment]

    mode: Mode = dataclasses.field(default="int8", metadata={"doc": "int8 (static QDQ) | dynamic | fp16 | bf16 | int4 (weight-only)"})
    calibration: Method = dataclasses.field(default="mse", metadata={"doc": "int8: how activation ranges are chosen (mse: least error as the tensor's reader sees it)"})
    percentile: float = dataclasses.field(default=99.999, metadata={"doc": "int8: for calibration=percentile"})
    per_channel: bool = dataclasses.field(default=True, metadata={"doc": "int8/dynamic: one weight scale per output channel"})
    activations: Literal["auto", "uint8", "int8", "symmetric"] = dataclasses.field(default="auto", metadata={"doc": "int8: activations as uint8 asymmetric, int8 symmetric, or symmetric with uint8 where never negative (auto: the backend's)"})
    ops: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "op types to quantize (default: the mode's and backend's; int8: given, every layer of them)"})
    all_ops: bool = dataclasses.field(default=False, metadata={"doc": "int8: also the backend's other int8 ops (Add, Mul, Concat, Sigmoid, pooling...), each timed and guarded like a layer"})
    exclude: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "node names to keep in float"})
    guard: bool = dataclasses.field(default=True, metadata={"doc": "keep sensitive layers in float to meet the budget"})
    skip_slow: bool = dataclasses.field(default=True, metadata={"doc": "int8: keep float the layers int8 would slow down on the target (not with ops)"})
    speed: Literal["measured", "rules"] = dataclasses.field(default="measured", metadata={"doc": "int8: which layers int8 slows down: the rules measured on AVX2 (depthwise, little arithmetic per value moved) and, with measured, every other layer timed in float and int8 on the target backend (or read from --costs; rules alone when the target is another machine without one)"})
    hard_activations: bool = dataclasses.field(default=True, metadata={"doc": "int8: HardSwish/HardSigmoid between int8 tensors as integer Add and Mul where the backend runs those (one more rounding, the HardSigmoid's 1/255)"})
    bias_correction: bool = dataclasses.field(default=True, metadata={"doc": "int8: cancel the mean output shift of int8 weights (dW . E[x])"})
    keep_io_types: bool = dataclasses.field(default=True, metadata={"doc": "fp16/bf16: model inputs and outputs stay float32"})
    block: int = dataclasses.field(default=32, metadata={"doc": "int4: weights per scale along the reduction axis (16..256, power of 2)"})
    method: Literal["rtn", "gptq"] = dataclasses.field(default="rtn", metadata={"doc": "int4: rounding (round-to-nearest or GPTQ error compensation)"})
    symmetric: bool = dataclasses.field(default=True, metadata={"doc": "int4: symmetric blocks (no zero point)"})
    smooth: float = dataclasses.field(default=0.0, metadata={"doc": "int8: SmoothQuant alpha applied first (0: off; as a smooth{alpha=...} pass before)"})

    def __post_init__(self) -> None:
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError("percentile must be between 90 and 100")
        if not 0.0 <= self.smooth <= 1.0:
            raise ValueError("smooth must be between 0 (off) and 1")
        if self.block < 16 or self.block > 256 or self.block & (self.block - 1):
            raise ValueError("block must be a power of 2 between 16 and 256")

    def requires_calibration(self) -> bool:
        return NEEDS_CALIBRATION[self.mode]

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        module, function = MODES[self.mode]
        bodies = _control_flow_bodies(model)  # before: a mode may rewrite the model it is given
        result = getattr(importlib.import_module(module), function)(self, model, ctx)
        after = _control_flow_bodies(result.model)
        alone = [(key, len(nodes)) for key, nodes in bodies.items() if after.get(key) == nodes]
        if alone:
            names = ", ".join(f"{op} '{name}'" for (op, name), _ in alone[:5])
            result.notes.append(f"left as they were: the bodies of {len(alone)} control-flow node(s) ({names}"
                                f"{', ...' if len(alone) > 5 else ''}), {sum(n for _, n in alone)} node(s): quantize{{mode={self.mode}}} "
                                "rewrote the main graph only, so they run in the original precision")
            result.counts["subgraph_nodes_left_alone"] = sum(n for _, n in alone)
        return result


def _control_flow_bodies(model: ir.Model) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """The main graph's If/Loop/Scan (any node with a graph attribute) whose bodies hold nodes:
    (op, name) -> the (op, name) of every node in its bodies, nested ones included."""
    bodies = {}
    for node in model.graph:
        graphs = [g for attr in node.attributes.values() if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                  for g in (attr.value if attr.type == ir.AttributeType.GRAPHS else [attr.value])]
        inner = tuple((n.op_type, n.name) for graph in graphs for n in ir.traversal.RecursiveGraphIterator(graph))
        if inner:
            bodies[(node.op_type, node.name)] = inner
    return bodies
