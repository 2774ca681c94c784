"""Which channels go: importance within a group, and how many each group loses.

Importance of a unit (one channel with everything tied to it), summed over the weight slices
it owns, each layer's scores normalised to mean 1 so no single layer dominates a group:

- ``l2``: the squared L2 norm of the weight slices: a producer's output filter (a
  depthwise filter too), a consumer's input column (``||W[:, j]||^2``);
- ``activation``: for every consumer, ``||W[:, j]||^2 * Var(x_j)``, the energy channel j
  contributes to the consumer's output beyond its mean (the mean is folded into the
  consumer's bias when the channel goes), with x_j measured on the calibration data.

Allocation, for a target ``ratio``:

- ``uniform``: every prunable group keeps ``(1 - ratio)`` of its channels;
- ``adaptive``: the groups together must save at least the MACs uniform pruning would, and
  each group's count is chosen to minimise the sum of the measured output distortions
  ``D_g(k)`` (channel_distortion.py), a Lagrangian choice: each group takes the k minimising
  ``D_g(k) - lambda * MACs_saved_g(k)``, with lambda the smallest that meets the budget
  (bisection, on exact MACs of the whole allocation, so coupled layers count right).

Kept counts are multiples of 8 for groups of 32 channels or more (ONNX Runtime's blocked
convolution kernels work on 8 channels at a time), and a group keeps at least a quarter of
its channels under adaptive allocation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from onnxsmith.passes.prune.channel_groups import ChannelAnalysis, Group, const_array
from onnxsmith.passes.prune.channel_stats import LayerCost
from onnxsmith.statistics import TensorStats

__all__ = [
    "ALIGN", "CostModel", "adaptive_counts", "interpolate", "kept_count", "levels", "rank_units", "uniform_counts", "unit_scores",
]

ALIGN = 8
ALIGN_FROM = 32
MAX_FRACTION = 0.75


def kept_count(size: int, fraction: float) -> int:
    """Channels a group of ``size`` keeps when asked to remove ``fraction`` of them."""
    keep = size * (1.0 - fraction)
    if size >= ALIGN_FROM:
        return int(min(size, max(ALIGN, ALIGN * round(keep / ALIGN))))
    return int(min(size, max(1, round(keep))))


def levels(size: int, ratio: float) -> tuple[list[int], list[int]]:
    """(candidate removal counts for adaptive allocation: eighths up to 3/4 or the ratio;
    the ones whose distortion is measured: quarters and the ratio itself, the rest interpolated)."""
    top = max(MAX_FRACTION, ratio)
    candidates = {size - kept_count(size, j / 8) for j in range(1, 8) if j / 8 <= top + 1e-9}
    measured = {size - kept_count(size, f) for f in (0.25, 0.5, MAX_FRACTION, ratio) if f <= top + 1e-9}
    candidates = sorted(c for c in candidates | measured if 0 < c < size)
    return candidates, sorted(c for c in measured if 0 < c < size)


def interpolate(measured: dict[int, float], counts: list[int]) -> dict[int, float]:
    """Distortion at every count, piecewise linear through (0, 0) and the measured points."""
    if not measured:
        return {}
    xs = np.array([0, *sorted(measured)], dtype=np.float64)
    ys = np.array([0.0, *(measured[k] for k in sorted(measured))])
    table = {}
    for k in counts:
        if k in measured:
            table[k] = measured[k]
        elif k <= xs[-1]:
            table[k] = float(np.interp(k, xs, ys))
        else:  # beyond the last measurement: the last segment's slope
            slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1.0)
            table[k] = float(ys[-1] + slope * (k - xs[-1]))
    return table


def unit_scores(analysis: ChannelAnalysis, importance: str, moments: dict[str, TensorStats]) -> dict[int, float]:
    """Importance of every unit (see the module docstring)."""
    score: dict[int, float] = defaultdict(float)
    for layer in analysis.layers:
        weight = const_array(layer.node.inputs[layer.weight_index])
        pieces = []
        if importance == "l2" and layer.out_slot is not None:
            pieces.append((layer.out_slot, _slice_norms(weight, layer.out_axis)))
        if layer.in_slot is not None and not layer.depthwise:
            norms = _slice_norms(weight, layer.in_axis)
            if importance == "activation":
                norms = norms * moments[layer.in_slot].variance
            pieces.append((layer.in_slot, norms))
        for slot, norms in pieces:
            norms = norms / max(float(norms.mean()), 1e-30)
            for position, unit in enumerate(analysis.roots[slot]):
                score[unit] += float(norms[position])
    return score


def rank_units(group: Group, scores: dict[int, float]) -> list[int]:
    """The group's units, least important first."""
    return sorted(group.units, key=lambda u: (scores.get(u, 0.0), u))


def _slice_norms(weight: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(weight.astype(np.float64), axis, 0)
    return (moved.reshape(moved.shape[0], -1) ** 2).sum(axis=1)


class CostModel:
    """Parameters and MACs of all weight layers for a choice of removed units per group."""

    def __init__(self, analysis: ChannelAnalysis, costs: dict[int, LayerCost], orders: dict[int, list[int]]) -> None:
        self.analysis = analysis
        self.costs = costs
        self.orders = orders  # group index -> units, least important first
        self.sizes = {name: len(slot.ids) for name, slot in analysis.slots.items()}
        # per group: slot -> cumulative positions removed after the first k units (k = 0..n)
        self.cumulative: dict[int, dict[str, np.ndarray]] = {}
        for g, units in orders.items():
            table = {}
            for slot in analysis.groups[g].key:
                counts = [len(analysis.positions[u].get(slot, ())) for u in units]
                table[slot] = np.concatenate([[0], np.cumsum(counts)])
            self.cumulative[g] = table

    def removed_per_slot(self, counts: dict[int, int]) -> dict[str, int]:
        removed: dict[str, int] = defaultdict(int)
        for g, k in counts.items():
            for slot, table in self.cumulative[g].items():
                removed[slot] += int(table[k])
        return removed

    def totals(self, counts: dict[int, int]) -> tuple[int, int]:
        """(params, MACs) of every weight layer when group g loses its first ``counts[g]`` units."""
        removed = self.removed_per_slot(counts)
        params = macs = 0
        for layer in self.analysis.layers:
            out, inp = self._kept(layer.out_slot, removed), self._kept(layer.in_slot, removed)
            cost = self.costs[id(layer.node)]
            params += cost.params(out, inp)
            macs += cost.macs(out, inp)
        return params, macs

    def _kept(self, slot: str | None, removed: dict[str, int]) -> int | None:
        return None if slot is None else self.sizes[slot] - removed.get(slot, 0)


def uniform_counts(analysis: ChannelAnalysis, groups: list[int], ratio: float) -> dict[int, int]:
    return {g: analysis.groups[g].size - kept_count(analysis.groups[g].size, ratio) for g in groups}


def adaptive_counts(
    cost: CostModel,
    distortion: dict[int, dict[int, float]],
    target_macs: int,
) -> dict[int, int]:
    """Per group the units to remove, minimising total distortion with MACs <= ``target_macs``.

    ``distortion[g][k]`` is the measured distortion of removing group g's first k units.
    """
    options = {g: sorted({0: 0.0, **table}.items()) for g, table in distortion.items()}
    standalone = {}
    _, full = cost.totals({})
    for g, table in options.items():
        standalone[g] = {k: full - cost.totals({g: k})[1] for k, _ in table}

    def choose(lam: float) -> dict[int, int]:
        return {g: min(table, key=lambda kd: (kd[1] - lam * standalone[g][kd[0]], -kd[0]))[0] for g, table in options.items()}

    def macs(lam: float) -> int:
        return cost.totals(choose(lam))[1]

    return _bisect(choose, macs, target_macs)


def _bisect(choose: Callable[[float], dict[int, int]], macs: Callable[[float], int], target: int) -> dict[int, int]:
    low, high = 0.0, 1e-12
    while macs(high) > target and high < 1e12:
        low, high = high, high * 4.0
    for _ in range(60):
        mid = (low + high) / 2
        if macs(mid) > target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-6 * high:
            break
    return choose(high)
