"""Measured output distortion of pruning each group by each amount, on one masked model.

Removing a channel changes the model's outputs only through the weight layers that read it
(the tensors it lives in between are pass-through or tied ops). So a copy of the model gets,
in front of every such read, ``x' = x * scale + shift`` with two inputs per tensor (scale 1,
shift 0 keep a channel; scale 0, shift = its calibration mean replace it by that mean, the
best a consumer's bias can do without it). One ONNX Runtime session then measures every (group, count):
the masks of the group's first ``k`` units are zeroed and the model's outputs compared with
the unmasked run. The distortion of one run is, per output, the squared error of each
channel (axis 1) relative to that channel's energy, averaged over channels and outputs
(a power, so distortions of separate groups roughly add up).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.measure import Measurements
from onnxsmith.passes.prune.channel_groups import ChannelAnalysis
from onnxsmith.runtime import make_session
from onnxsmith.statistics import TensorStats

__all__ = ["measure_distortion", "relative_power_error"]

MASK_PREFIX = "onnxsmith_prune_mask_"


def measure_distortion(
    measure: Measurements,
    model: ir.Model,
    analysis: ChannelAnalysis,
    plans: dict[int, tuple[list[int], list[int]]],
    moments: dict[str, TensorStats],
    feeds: list[dict[str, np.ndarray]],
) -> dict[int, dict[int, float]]:
    """``plans[g] = (units least important first, removal counts)`` -> ``{g: {k: distortion}}``,
    cached by ``measure`` for this model, feeds and plans."""
    plan_key = repr(sorted(plans.items()))
    return measure.memo("prune-distortion", model, feeds, lambda: _distortion(model, analysis, plans, moments, feeds), plan_key)


def _distortion(model, analysis, plans, moments, feeds) -> dict[int, dict[int, float]]:
    read = sorted({layer.in_slot for layer in analysis.layers if layer.in_slot and not layer.depthwise})
    masked, shapes = _masked_copy(model, analysis, read)
    session = make_session(masked, optimize=True, threads=0)
    index = {slot: i for i, slot in enumerate(read)}
    ones = {f"{MASK_PREFIX}{i}": np.ones(shape, np.float32) for i, shape in enumerate(shapes)}
    zeros = {f"{MASK_PREFIX}{i}_shift": np.zeros(shape, np.float32) for i, shape in enumerate(shapes)}
    names = [o.name for o in masked.graph.outputs]
    reference = [session.run(names, {**feed, **ones, **zeros}) for feed in feeds]
    result: dict[int, dict[int, float]] = {}
    for g, (order, counts) in plans.items():
        table = {}
        for k in counts:
            masks: dict[str, np.ndarray] = {}
            for unit in order[:k]:
                for slot, where in analysis.positions[unit].items():
                    if slot not in index:
                        continue
                    i = index[slot]
                    scale = masks.setdefault(f"{MASK_PREFIX}{i}", ones[f"{MASK_PREFIX}{i}"].copy())
                    shift = masks.setdefault(f"{MASK_PREFIX}{i}_shift", zeros[f"{MASK_PREFIX}{i}_shift"].copy())
                    scale.reshape(-1)[where] = 0.0
                    shift.reshape(-1)[where] = moments[slot].mean[where]
            got = [session.run(names, {**feed, **ones, **zeros, **masks}) for feed in feeds]
            table[k] = relative_power_error(reference, got)
        result[g] = _monotone(table)
    return result


def relative_power_error(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """Mean over outputs and channels of sum((got - ref)^2) / sum(ref^2), all samples together."""
    errors = []
    for i in range(len(reference[0])):
        ref = np.concatenate([_channels_first(r[i]) for r in reference], axis=1)
        got = np.concatenate([_channels_first(c[i]) for c in candidate], axis=1)
        energy = (ref * ref).sum(axis=1)
        floor = 1e-12 * max(float(energy.max()), 1e-30)
        errors.append(float(np.mean(((got - ref) ** 2).sum(axis=1) / (energy + floor))))
    return float(np.mean(errors))


def _channels_first(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array, dtype=np.float64)
    if a.ndim < 2:
        return a.reshape(1, -1)
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)


def _monotone(table: dict[int, float]) -> dict[int, float]:
    """Removing more never measures as better (calibration noise can say otherwise)."""
    best, out = 0.0, {}
    for k in sorted(table):
        best = max(best, table[k])
        out[k] = best
    return out


def _masked_copy(model: ir.Model, analysis: ChannelAnalysis, read: list[str]) -> tuple[ir.Model, list[tuple[int, ...]]]:
    """A copy where each weight layer reads ``x * scale + shift`` (two inputs per followed tensor)."""
    copy = model.clone()  # tensors shared (never written in place); a proto round trip loses external data's folder
    values = {v.name: v for node in copy.graph for v in node.outputs}
    readers: dict[str, set[str]] = {}
    for layer in analysis.layers:
        if layer.in_slot in read:
            readers.setdefault(layer.in_slot, set()).add(layer.node.outputs[0].name)
    shapes = []
    for i, slot_name in enumerate(read):
        slot = analysis.slots[slot_name]
        value = values[slot_name]
        rank = value.shape.rank() if value.shape is not None else slot.axis + 1
        shape = (len(slot.ids),) + (1,) * (rank - 1 - slot.axis)
        shapes.append(shape)
        inputs = [ir.Value(name=f"{MASK_PREFIX}{i}{suffix}", shape=ir.Shape(shape), type=ir.TensorType(ir.DataType.FLOAT))
                  for suffix in ("", "_shift")]
        copy.graph.inputs.extend(inputs)
        scaled = ir.node("Mul", [value, inputs[0]])
        shifted = ir.node("Add", [scaled.outputs[0], inputs[1]])
        copy.graph.extend([scaled, shifted])
        for node in list(copy.graph):
            if node.outputs and node.outputs[0].name in readers[slot_name] and node.inputs[0] is value:
                node.replace_input_with(0, shifted.outputs[0])
    copy.graph.sort()
    return copy, shapes
