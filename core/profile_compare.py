"""Two profiles side by side: per layer before/after time, and where accuracy breaks.

Layers are matched through their original node names (``origin``): each layer of the
*before* profile goes to the *after* layer made the most of its original names (the share
of the after layer's names that are its own, then how many; ties: the earlier one), so a
fusion of three layers into one gets the three layers' time as its ``before_ms`` and no
time is counted twice. Before layers that match nothing (removed by
the optimization) are listed under ``compare.removed``. An after layer takes the name of the
slowest before layer it stands for (a fused Conv+BatchNorm is the Conv), where no other
after layer has that name, and that layer's PyTorch module where it has none of its own.

``sqnr_db`` compares each after layer's result tensor with the same tensor of the before
model (fusions keep their pattern's output names) on the same feeds: 10*log10(|ref|^2 /
|after - ref|^2), accumulated over the feeds. The tensors are read a chunk at a time, each
chunk made graph outputs of a copy of the model, so memory stays bounded on big models
(marking every tensor as an output at once runs out of memory). ``first_divergence`` is the
first layer, in execution order, whose SQNR is below the threshold: where to look first.

End to end, ``compare.before_ms``/``after_ms``/``speedup`` come from ``latency``, the two
models timed in one interleaved run, when the caller measured it (``timing``:
``interleaved``); only without it from the two profiles' own totals (``profiles``),
which were measured one after the other and so under different machine noise.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import Backend
from onnxsmith.latency import LatencyStats
from onnxsmith.measure import Measurements
from onnxsmith.profile import Layer, Profile
from onnxsmith.statistics import ErrorEnergy

__all__ = ["DEFAULT_THRESHOLD_DB", "compare_profiles", "tensor_sqnr"]

DEFAULT_THRESHOLD_DB = 30.0


def compare_profiles(
    before: Profile,
    after: Profile,
    *,
    sqnr: dict[str, float],
    other: str,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
    latency: tuple[LatencyStats, LatencyStats] | None = None,
) -> Profile:
    """``after`` with every layer's before/after times, speedup and SQNR filled in, and a
    ``compare`` summary naming ``other`` (the before model) and the first divergence.

    ``latency``: (before, after) end-to-end times measured interleaved, for the summary."""
    owner = _match(before.layers, after.layers)
    before_ms: dict[str, float] = {}
    before_spread: dict[str, float] = {}  # the layers' iqr_ms, summed like their times
    heaviest: dict[str, Layer] = {}  # after layer -> the slowest before layer it stands for
    removed = []
    for layer in before.layers:
        target = owner.get(layer.name)
        if target is None:
            removed.append({"name": layer.name, "op_type": layer.op_type, "before_ms": layer.median_ms})
        else:
            before_ms[target] = before_ms.get(target, 0.0) + layer.median_ms
            before_spread[target] = before_spread.get(target, 0.0) + layer.iqr_ms
            if target not in heaviest or layer.median_ms > heaviest[target].median_ms:
                heaviest[target] = layer
    for layer in after.layers:
        layer.after_ms = layer.median_ms
        layer.before_ms = before_ms.get(layer.name)
        if layer.before_ms is not None and layer.after_ms > 0:
            layer.speedup = layer.before_ms / layer.after_ms
            # The profiles are not interleaved: a difference inside the run-to-run spread is no change.
            spread = max(before_spread[layer.name], layer.iqr_ms)
            layer.speedup_within_noise = abs(layer.before_ms - layer.after_ms) <= spread
        layer.sqnr_db = sqnr.get(layer.tensor) if layer.tensor else None
        known = heaviest.get(layer.name)
        if known is not None and layer.module is None:
            layer.module = known.module  # a fused node keeps no exporter metadata; the original's says which module
    _name_as_originals(after.layers, heaviest)
    diverged = next(
        (layer for layer in sorted(after.layers, key=lambda l: l.order) if layer.sqnr_db is not None and layer.sqnr_db < threshold_db),
        None,
    )
    before_e2e, after_e2e = (latency[0].median_ms, latency[1].median_ms) if latency else (before.total.median_ms, after.total.median_ms)
    after.compare = {
        "other": other,
        "before_ms": before_e2e,
        "after_ms": after_e2e,
        "speedup": before_e2e / after_e2e if after_e2e > 0 else None,
        "timing": {"method": "interleaved", "rounds": latency[0].rounds,
                   "before_p90_ms": latency[0].p90_ms, "after_p90_ms": latency[1].p90_ms} if latency else {"method": "profiles"},
        "threshold_db": threshold_db,
        "first_divergence": None if diverged is None else {"name": diverged.name, "tensor": diverged.tensor, "sqnr_db": diverged.sqnr_db},
        "removed": removed,
        # JSON writes an infinite SQNR as null, like a tensor not compared: name the identical ones
        "exact": [layer.name for layer in after.layers if layer.sqnr_db == math.inf],
    }
    return after


def _name_as_originals(layers: list[Layer], heaviest: dict[str, Layer]) -> None:
    """Name each after layer as the user knows it: by the slowest before layer it stands for (a
    Conv with its BatchNorm folded in is the Conv, not the BatchNorm). A layer with no before
    time that bears such a name (a runtime's Transpose named after the Conv it feeds) gives it
    up and is told apart by its op type."""
    wanted = {id(layer): heaviest[layer.name].name for layer in layers if layer.name in heaviest}
    taken = set(wanted.values())
    for layer in layers:
        if id(layer) in wanted:
            layer.name = wanted[id(layer)]
        elif layer.name in taken:
            layer.name = f"{layer.name} ({layer.op_type})"


def _match(before: list[Layer], after: list[Layer]) -> dict[str, str]:
    """Before layer name -> the after layer made the most of its original node names (``_overlap``)."""
    by_origin: dict[str, list[Layer]] = {}
    for layer in sorted(after, key=lambda l: l.order):
        for name in layer.origin:
            by_origin.setdefault(name, []).append(layer)
    owner = {}
    for layer in before:
        mine = set(layer.origin)
        candidates = {c.name: c for name in mine for c in by_origin.get(name, [])}
        if candidates:
            best = max(candidates.values(), key=lambda c: (*_overlap(mine, set(c.origin)), -c.order))
            owner[layer.name] = best.name
    return owner


def _overlap(mine: set[str], theirs: set[str]) -> tuple[float, int]:
    """How much an after layer (``theirs``) is made of a before layer (``mine``): the share of
    its original names that are the before layer's, then how many they share. A layout
    Transpose a runtime inserted stands for a dozen layers and shares names with each, but
    the QLinearConv made of exactly one's Conv and BatchNorm is that layer."""
    shared = len(mine & theirs)
    return shared / len(theirs), shared


def tensor_sqnr(
    backend: Backend,
    reference: ir.Model,
    candidate: ir.Model,
    feeds: list[dict[str, np.ndarray]],
    names: list[str],
    *,
    measure: Measurements | None = None,
) -> dict[str, float]:
    """SQNR in dB of each float tensor in ``names`` that both models compute (+inf when equal),
    on ``backend``'s sessions."""
    available = _float_tensors(reference) & _float_tensors(candidate)
    shared = [n for n in dict.fromkeys(names) if n in available]
    energies = (measure or Measurements()).compare(reference, candidate, shared, feeds, statistic=ErrorEnergy(float_only=True), backend=backend)
    return {n: _db(signal, noise) for n, (noise, signal) in energies.items() if signal or noise}


def _float_tensors(model: ir.Model) -> set[str]:
    """Main-graph tensors that are float, or whose type the model does not declare."""
    return {
        out.name for node in model.graph for out in node.outputs
        if out.name and (out.dtype is None or out.dtype.is_floating_point())
    }


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0 or math.isinf(noise):
        return -math.inf
    return 10.0 * math.log10(signal / noise)
