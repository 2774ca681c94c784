"""What channel pruning measures before it cuts: activation moments, and each layer's cost.

- ``channel_moments``: per channel, the mean and variance of the tensors the weight layers
  read, over the calibration feeds: the measurement service's ChannelSums, cached there so
  a second prune on the same model and data reads them back.
- ``layer_positions``: how many output positions each weight layer computes on the first
  calibration feed (output pixels for a Conv, rows for a MatMul). MACs = positions times
  the weight's size, which only depends on the channel counts the pruning changes.
- ``LayerCost``: parameters and MACs of a layer for given kept channel counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.measure import Measurements
from onnxsmith.passes.prune.channel_groups import ChannelAnalysis, WeightLayer, const_array
from onnxsmith.statistics import ChannelSums, Shape, TensorStats

__all__ = ["LayerCost", "channel_moments", "layer_positions"]


def channel_moments(
    measure: Measurements, model: ir.Model, analysis: ChannelAnalysis, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, TensorStats]:
    """Per-channel sums of ``tensors`` (followed tensors) over ``feeds``: ``.mean``, ``.variance``."""
    return measure.reduce(model, {name: ChannelSums(analysis.slots[name].axis) for name in tensors}, feeds, optimize=True)


def layer_positions(measure: Measurements, model: ir.Model, layers: list[WeightLayer], feed: dict[str, np.ndarray]) -> dict[int, int]:
    """id(layer.node) -> output positions (batch times pixels, or rows) on ``feed``."""
    wanted: dict[str, list[WeightLayer]] = {}
    for layer in layers:
        tensor = layer.node.inputs[0] if layer.kind == "convtranspose" else layer.node.outputs[0]
        wanted.setdefault(tensor.name, []).append(layer)
    shapes: dict[str, tuple[int, ...]] = {n: feed[n].shape for n in wanted if n in feed}
    shapes.update(measure.reduce(model, {n: Shape() for n in wanted if n not in shapes}, [feed], optimize=True))
    positions = {}
    for name, group in wanted.items():
        shape = shapes[name]
        for layer in group:
            channels = shape[1] if layer.kind in ("conv", "convtranspose") else shape[-1]
            positions[id(layer.node)] = int(np.prod(shape)) // max(int(channels), 1)
    return positions


@dataclass(frozen=True)
class LayerCost:
    """A weight layer's size: weight shape, bias size and output positions."""

    weight_shape: tuple[int, ...]
    bias: int
    positions: int
    out_axis: int
    in_axis: int
    depthwise: bool

    @classmethod
    def of(cls, layer: WeightLayer, positions: int) -> LayerCost:
        weight = const_array(layer.node.inputs[layer.weight_index])
        bias_value = layer.node.inputs[2] if len(layer.node.inputs) > 2 and layer.kind != "matmul" else None
        bias = const_array(bias_value)
        return cls(tuple(weight.shape), 0 if bias is None else int(bias.size), positions, layer.out_axis, layer.in_axis,
                   layer.depthwise)

    def params(self, out: int | None = None, inp: int | None = None) -> int:
        shape = list(self.weight_shape)
        bias = self.bias
        if out is not None:
            if self.bias == shape[self.out_axis]:
                bias = out
            shape[self.out_axis] = out
        if inp is not None and not self.depthwise:
            shape[self.in_axis] = inp
        return int(np.prod(shape)) + bias

    def macs(self, out: int | None = None, inp: int | None = None) -> int:
        shape = list(self.weight_shape)
        if out is not None:
            shape[self.out_axis] = out
        if inp is not None and not self.depthwise:
            shape[self.in_axis] = inp
        return self.positions * int(np.prod(shape))
