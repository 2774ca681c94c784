"""What channel pruning measures before it cuts: activation moments, and each layer's cost.

- ``channel_moments``: per channel, the mean and variance of the tensors the weight layers
  read, over the calibration feeds (streamed, at most ``chunk`` tensors per session), cached
  in ``ctx.activations`` so a second prune on the same model and data reads them back.
- ``layer_positions``: how many output positions each weight layer computes on the first
  calibration feed (output pixels for a Conv, rows for a MatMul). MACs = positions times
  the weight's size, which only depends on the channel counts the pruning changes.
- ``LayerCost``: parameters and MACs of a layer for given kept channel counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.prune.channel_groups import ChannelAnalysis, WeightLayer, const_array
from onnxsmith.runtime import make_session

__all__ = ["LayerCost", "Moments", "channel_moments", "extra_outputs", "layer_positions", "model_key"]


@dataclass(frozen=True)
class Moments:
    mean: np.ndarray  # [C]
    var: np.ndarray  # [C]


@contextmanager
def extra_outputs(model: ir.Model, names: list[str]) -> Iterator[None]:
    """Temporarily make the tensors ``names`` outputs of ``model`` too, to read them in a session.

    Cheaper than core's ``with_outputs`` (a full copy) when done once per refit wave.
    """
    values = {v.name: v for node in model.graph for v in node.outputs}
    saved = list(model.graph.outputs)
    present = {v.name for v in saved}
    model.graph.outputs.extend(values[n] for n in names if n not in present)
    try:
        yield
    finally:
        model.graph.outputs.clear()
        model.graph.outputs.extend(saved)


def model_key(model: ir.Model, feeds: list[dict[str, np.ndarray]], what: str) -> str:
    """A cache key for statistics of this graph (structure and weights) on these feeds."""
    digest = hashlib.sha256(what.encode())
    for node in model.graph:
        digest.update(f"{node.op_type}|{[v.name if v else '' for v in node.inputs]}".encode())
    for name, value in sorted(model.graph.initializers.items()):
        digest.update(name.encode())
        if value.const_value is not None:
            digest.update(str(value.const_value.shape).encode())
            digest.update(np.ascontiguousarray(value.const_value.numpy()).tobytes()[:4096])
    for feed in feeds:
        for name, array in sorted(feed.items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def channel_moments(
    model: ir.Model,
    analysis: ChannelAnalysis,
    tensors: list[str],
    feeds: list[dict[str, np.ndarray]],
    *,
    cache: dict | None = None,
    chunk: int = 48,
) -> dict[str, Moments]:
    """Per-channel mean and variance of ``tensors`` (followed tensors) over ``feeds``."""
    key = "prune-moments:" + model_key(model, feeds, repr(sorted(tensors)))
    if cache is not None and key in cache:
        return cache[key]
    result: dict[str, Moments] = {}
    for start in range(0, len(tensors), chunk):
        names = tensors[start : start + chunk]
        with extra_outputs(model, names):
            session = make_session(model)
        sums: dict[str, np.ndarray] = {}
        squares: dict[str, np.ndarray] = {}
        counts = dict.fromkeys(names, 0)
        for feed in feeds:
            for name, array in zip(names, session.run(names, feed), strict=True):
                flat = np.moveaxis(array, analysis.slots[name].axis, 0).reshape(array.shape[analysis.slots[name].axis], -1)
                flat = flat.astype(np.float64)
                sums[name] = sums.get(name, 0) + flat.sum(axis=1)
                squares[name] = squares.get(name, 0) + (flat * flat).sum(axis=1)
                counts[name] += flat.shape[1]
        for name in names:
            mean = sums[name] / max(counts[name], 1)
            result[name] = Moments(mean, np.maximum(squares[name] / max(counts[name], 1) - mean * mean, 0.0))
    if cache is not None:
        cache[key] = result
    return result


def layer_positions(model: ir.Model, layers: list[WeightLayer], feed: dict[str, np.ndarray], *, chunk: int = 32) -> dict[int, int]:
    """id(layer.node) -> output positions (batch times pixels, or rows) on ``feed``."""
    wanted: dict[str, list[WeightLayer]] = {}
    for layer in layers:
        tensor = layer.node.inputs[0] if layer.kind == "convtranspose" else layer.node.outputs[0]
        wanted.setdefault(tensor.name, []).append(layer)
    names = [n for n in wanted if n not in {v.name for v in model.graph.inputs}]
    shapes: dict[str, tuple[int, ...]] = {n: feed[n].shape for n in wanted if n in feed}
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        with extra_outputs(model, part):
            session = make_session(model)
        shapes.update({n: a.shape for n, a in zip(part, session.run(part, feed), strict=True)})
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
