"""Structured channel pruning: remove Conv output channels and Gemm/MatMul hidden units for real.

``prune_channels`` is the library function the ``prune{method=channel}`` pass calls:

1. analyse which channel slices are tied together (channel_groups.py; groups the analysis
   does not understand are left alone, with the reason in the notes);
2. rank each group's channels by importance (``l2`` weight norm, or ``activation``:
   weight norm times the activation's variance on the calibration data);
3. choose how many channels each group loses: ``uniform`` (the ratio everywhere) or
   ``adaptive`` (as many MACs saved as uniform would, spread by each group's measured
   output distortion; channel_alloc.py, channel_distortion.py). The distortion is measured
   at a quarter, half, three quarters and the ratio of each group (interpolated between),
   on at most 4 calibration feeds and 2e12 MACs of runs in all; groups whose removal would
   save under 0.2% of the MACs are left whole;
4. remove them: weights, biases, BatchNorm and elementwise constants, depthwise groups,
   Split sizes (channel_apply.py); the model's outputs never change shape;
5. refit every layer that lost input channels by ridge least squares on calibration
   activations, in dependency order (refit.py), or with ``refit=False`` only measure its error.

MACs and parameters are those of the weight layers (Conv, ConvTranspose, Gemm, MatMul with a
constant weight), at the first calibration feed's input size.
"""

from __future__ import annotations

import logging
from collections import Counter

import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.errors import RecipeError
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.prune.channel_alloc import (
    CostModel,
    adaptive_counts,
    interpolate,
    levels,
    rank_units,
    uniform_counts,
    unit_scores,
)
from onnxsmith.passes.prune.channel_apply import drop_unused_constants, remove_units
from onnxsmith.passes.prune.channel_distortion import measure_distortion
from onnxsmith.passes.prune.channel_groups import ChannelAnalysis, WeightLayer, analyse_channels
from onnxsmith.passes.prune.channel_stats import LayerCost, channel_moments, layer_positions
from onnxsmith.passes.prune.refit import LayerFit, refit_layers, snapshot

__all__ = ["IMPORTANCES", "ALLOCATIONS", "prune_channels"]

logger = logging.getLogger(__name__)

IMPORTANCES = ("activation", "l2")
ALLOCATIONS = ("adaptive", "uniform")
DISTORTION_FEEDS = 4  # calibration feeds each distortion measurement runs, at most
DISTORTION_MACS = 2e12  # and at most this many weight-layer MACs for all of them together
NEGLIGIBLE = 0.002  # adaptive allocation leaves alone groups whose removal saves less of the MACs
MAX_NOTES = 8


def prune_channels(
    model: ir.Model,
    ctx: Context,
    *,
    ratio: float,
    importance: str = "activation",
    allocation: str = "adaptive",
    refit: bool = True,
) -> PassResult:
    """Remove about ``ratio`` of the prunable channels (see the module docstring); in place."""
    _validate(ratio, importance, allocation)
    feeds = ctx.require_calibration("prune").feeds()
    analysis = analyse_channels(model)
    notes = _frozen_notes(analysis)
    prunable = [i for i, g in enumerate(analysis.groups) if g.frozen is None]
    positions = layer_positions(ctx.measure, model, analysis.layers, feeds[0])
    costs = {id(layer.node): LayerCost.of(layer, positions[id(layer.node)]) for layer in analysis.layers}
    summary: dict[str, int] = {"groups": len(analysis.groups), "groups_prunable": len(prunable)}
    uniform = uniform_counts(analysis, prunable, ratio)
    if not any(uniform.values()):
        params, macs = CostModel(analysis, costs, {}).totals({})
        summary.update(groups_pruned=0, channels_removed=0, params_before=params, params_after=params, macs_before=macs,
                       macs_after=macs)
        return PassResult(model, modified=False, counts=summary, notes=notes)
    read = sorted({layer.in_slot for layer in analysis.layers if layer.in_slot and not layer.depthwise})
    needs_moments = importance == "activation" or allocation == "adaptive"
    moments = channel_moments(ctx.measure, model, analysis, read, feeds) if needs_moments else {}
    scores = unit_scores(analysis, importance, moments)
    orders = {g: rank_units(analysis.groups[g], scores) for g in prunable}
    cost = CostModel(analysis, costs, orders)
    if allocation == "adaptive":
        counts = _adaptive(model, ctx, analysis, cost, uniform, ratio, moments, feeds, notes)
    else:
        counts = uniform
    counts = {g: k for g, k in counts.items() if k}
    removed = {u for g, k in counts.items() for u in orders[g][:k]}
    kept_before = {name: len(slot.ids) for name, slot in analysis.slots.items()}
    kept, fits = _remove_and_refit(model, ctx, analysis, removed, feeds, refit, notes)
    (params_before, macs_before), (params_after, macs_after) = cost.totals({}), cost.totals(counts)
    summary.update(groups_pruned=len(counts), channels_removed=len(removed), params_before=params_before,
                   params_after=params_after, macs_before=macs_before, macs_after=macs_after,
                   layers_refit=sum(1 for f in fits.values() if f.alpha is not None))
    notes.append(f"{allocation} allocation, {importance} importance: removed {len(removed)} channels in "
                 f"{len(counts)} of {len(prunable)} prunable groups; MACs {macs_before:,} -> {macs_after:,}")
    return PassResult(model, modified=True, counts=summary, notes=notes,
                      layers=_records(analysis, costs, kept_before, kept, fits))


def _adaptive(model, ctx, analysis, cost: CostModel, uniform: dict[int, int], ratio, moments, feeds, notes) -> dict[int, int]:
    """Per group the channels to remove: as many MACs saved as ``uniform``, least distortion."""
    _, macs_before = cost.totals({})
    target = cost.totals(uniform)[1]
    candidates = {g: levels(analysis.groups[g].size, ratio) for g in uniform}
    worth = [g for g in uniform  # groups whose removal saves next to nothing keep their channels
             if macs_before - cost.totals({g: max(candidates[g][0], default=0)})[1] >= NEGLIGIBLE * macs_before]
    plans = {g: (cost.orders[g], candidates[g][1]) for g in worth}
    runs = sum(len(counts) for _, counts in plans.values()) + 1
    n = int(max(1, min(DISTORTION_FEEDS, DISTORTION_MACS // max(macs_before * runs, 1))))
    measured = measure_distortion(ctx.measure, model, analysis, plans, moments, feeds[:n])
    counts = adaptive_counts(cost, {g: interpolate(measured[g], candidates[g][0]) for g in worth}, target)
    if cost.totals(counts)[1] > target:
        notes.append("adaptive allocation could not save as many MACs as uniform pruning within its per-group limits")
    return counts


def _remove_and_refit(model, ctx, analysis, removed: set[int], feeds, refit: bool, notes) -> tuple[dict, dict[int, LayerFit]]:
    """Remove the units, then refit (or only measure) every layer that lost input channels."""
    shrunk = {name for name in analysis.slots if len(analysis.kept(name, removed)) < len(analysis.slots[name].ids)}
    readers = [layer for layer in analysis.layers if layer.in_slot in shrunk and not layer.depthwise]
    originals = {id(layer.node): o for layer in readers if (o := snapshot(layer)) is not None}
    original = model.clone()  # shares tensors: the pruning below replaces them, never writes into them
    kept = remove_units(model, analysis, removed)
    fits = refit_layers(ctx.measure, model, original, [r for r in readers if id(r.node) in originals], originals, kept,
                        feeds, apply=refit, seed=ctx.seed)
    drop_unused_constants(model.graph)  # the refit replaced the sliced weights
    skipped = [r.node.name for r in readers if id(r.node) not in originals]
    if skipped:
        notes.append(f"not refit (ConvTranspose or grouped), only sliced: {', '.join(skipped[:MAX_NOTES])}")
    return kept, fits


def _validate(ratio: float, importance: str, allocation: str) -> None:
    if not 0.0 <= ratio < 1.0:
        raise RecipeError(f"prune ratio must be in [0, 1), got {ratio}", "give the fraction of channels to remove, e.g. ratio=0.3")
    if importance not in IMPORTANCES:
        raise RecipeError(f"unknown channel importance '{importance}'", f"choose one of: {', '.join(IMPORTANCES)}")
    if allocation not in ALLOCATIONS:
        raise RecipeError(f"unknown channel allocation '{allocation}'", f"choose one of: {', '.join(ALLOCATIONS)}")


def _frozen_notes(analysis: ChannelAnalysis) -> list[str]:
    frozen = [g for g in analysis.groups if g.frozen is not None]
    if not frozen:
        return []
    reasons = Counter(g.frozen for g in frozen)
    lines = [f"{len(frozen)} of {len(analysis.groups)} channel groups left unpruned:"]
    lines += [f"  {n} group(s): {reason}" for reason, n in reasons.most_common(MAX_NOTES)]
    return lines


def _records(
    analysis: ChannelAnalysis,
    costs: dict[int, LayerCost],
    before: dict[str, int],
    kept: dict[str, list[int]],
    fits: dict[int, LayerFit],
) -> list[dict]:
    """One record per weight layer whose input or output channels changed."""
    by_slot = {}
    for layer in analysis.layers:
        if layer.in_slot is not None and not layer.depthwise:
            by_slot.setdefault(layer.in_slot, []).append(layer)
    records = []
    for layer in analysis.layers:
        out_before = before.get(layer.out_slot) if layer.out_slot else None
        out_after = len(kept[layer.out_slot]) if layer.out_slot else None
        in_before = before.get(layer.in_slot) if layer.in_slot else None
        in_after = len(kept[layer.in_slot]) if layer.in_slot else None
        if out_before == out_after and in_before == in_after:
            continue
        cost = costs[id(layer.node)]
        measured = _measured(analysis, layer, fits, by_slot, kept, before)
        records.append({
            "layer": layer.node.name,
            "op_type": layer.node.op_type,
            "channels_before": out_before,
            "channels_after": out_after,
            "in_channels_before": in_before,
            "in_channels_after": in_after,
            "params_before": cost.params(),
            "params_after": cost.params(out_after, in_after),
            "macs_before": cost.macs(),
            "macs_after": cost.macs(out_after, in_after),
            "error": None if measured is None else measured[1].error,
            "error_no_refit": None if measured is None else measured[1].error_no_refit,
            "error_layer": None if measured is None else measured[0],
        })
    return records


def _measured(analysis, layer: WeightLayer, fits, by_slot, kept, before) -> tuple[str, LayerFit] | None:
    """This layer's own fit if it lost inputs, else the worst fit among the layers reading its pruned outputs."""
    if id(layer.node) in fits:
        return layer.node.name, fits[id(layer.node)]
    if layer.out_slot is None:
        return None
    tied = {slot for g in analysis.groups if layer.out_slot in g.key for slot in g.key}
    readers = [r for slot in tied for r in by_slot.get(slot, []) if id(r.node) in fits and len(kept[slot]) < before[slot]]
    if not readers:
        return None
    worst = max(readers, key=lambda r: fits[id(r.node)].error)
    return worst.node.name, fits[id(worst.node)]
