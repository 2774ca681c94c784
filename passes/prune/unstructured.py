"""Unstructured pruning: zero individual weights by magnitude, by Wanda's score, or N:M.

Every weight is seen as a matrix ``[outputs, reduction]`` (layers.py). The rules:

1. ``magnitude``: zero the ``round(ratio * size)`` weights of smallest |W| of each layer
   (``scope=layer``), or of all layers together (``scope=global``, one threshold). The
   count is exact: ties are broken by position, not by a threshold.
2. ``wanda`` (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): score
   ``|W_ij| * ||X_j||_2``, X_j the input feature weight j multiplies, over every calibration
   token or pixel; zero the ``round(ratio * reduction)`` lowest scores of each output row.
   For Conv, the feature of W[o, c, kh, kw] is input channel c, its norm taken over all
   spatial positions: the exact feature would be the im2col entry at (c, kh, kw), whose
   norm differs from the channel's only by the border rows the kernel offset skips, and a
   per-channel norm costs C numbers instead of C*kh*kw.
3. ``nm``: in every group of ``m`` consecutive weights along the reduction axis (input
   channels at one kernel position, for Conv) keep the ``n`` with the highest score (|W|
   with ``importance=l2``, Wanda's with ``importance=activation``). Layers whose
   reduction length is not a multiple of m are left alone (sparse kernels need it).

Zeros do not make ONNX Runtime's dense kernels faster and the artifact stays as large; the
report says so and gives what the sparsity is worth: the deflate-compressed size of the
weights (as in a zip of the artifact) and their size in CSR (or, for N:M, the compressed
format sparse tensor cores read), and, for nm, which backends run N:M patterns faster.
"""

from __future__ import annotations

import logging
import math
import zlib
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import available_backends
from onnxsmith.context import Context
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.prune.layer_error import conv_macs, matmul_macs, measure_layers, weight_shadow
from onnxsmith.passes.prune.layers import WeightedLayer, find_layers, set_weight
from onnxsmith.statistics import ChannelSums

if TYPE_CHECKING:
    from onnxsmith.passes.prune.prune_pass import PrunePass

__all__ = ["magnitude_mask", "nm_mask", "nm_backends", "prune_unstructured", "row_mask"]

_DEFLATE_LEVEL = 6  # zip's default

logger = logging.getLogger(__name__)


def prune_unstructured(options: PrunePass, model: ir.Model, ctx: Context) -> PassResult:
    """Zero weights of ``model``'s layers in place as ``options`` say (method magnitude, wanda or nm)."""
    layers, skipped = find_layers(model, options.ops, options.exclude)
    notes = [f"skipped {s}" for s in skipped[:20]]
    uses_activations = options.method == "wanda" or (options.method == "nm" and options.importance == "activation")
    calibration = ctx.require_calibration(f"prune{{method={options.method}}}") if uses_activations else ctx.calibration
    feeds = calibration.feeds() if calibration is not None else []
    if options.method == "nm":
        eligible = [layer for layer in layers if layer.matrix().shape[1] % options.m == 0]
        notes += [f"skipped {layer.name}: reduction length {layer.matrix().shape[1]} is not a multiple of m={options.m}"
                  for layer in layers if layer.matrix().shape[1] % options.m][:20]
        layers = eligible
    if not layers:
        return PassResult(model, modified=False, counts={"layers_pruned": 0}, notes=notes or ["no layer to prune"])

    norms = _input_norms(model, layers, feeds, ctx) if uses_activations else {}
    masks = _masks(options, layers, norms)
    pruned = {layer.name: layer.from_matrix(layer.matrix() * keep) for layer, keep in zip(layers, masks, strict=True)}
    measures = measure_layers(ctx.measure, model, {name: weight_shadow(w) for name, w in pruned.items()}, feeds) if feeds else {}
    if not feeds:
        notes.append("no calibration data: per-layer errors and MACs are not measured (give --calib)")

    records, before, after, csr, changed = [], 0, 0, 0, 0
    for layer, keep in zip(layers, masks, strict=True):
        original = layer.weight
        new = pruned[layer.name]
        before += len(zlib.compress(original.tobytes(), _DEFLATE_LEVEL))
        after += len(zlib.compress(new.tobytes(), _DEFLATE_LEVEL))
        csr += _csr_bytes(keep & (layer.matrix() != 0))
        records.append(_record(layer, new, measures.get(layer.name)))
        if not np.array_equal(new, original):
            changed += 1
            set_weight(model, layer, new, "pruned")

    total = sum(layer.weight.size for layer in layers)
    zeros = sum(int(np.count_nonzero(pruned[layer.name] == 0)) for layer in layers)
    dense_bytes = 4 * total
    counts = {
        "layers_pruned": changed,
        "weights": total,
        "weights_zero": zeros,
        "weight_bytes": dense_bytes,
        "weight_bytes_deflate_before": before,
        "weight_bytes_deflate_after": after,
        "weight_bytes_csr": csr,
    }
    notes.append(_size_note(options, zeros / max(total, 1), dense_bytes, before, after, csr, ctx))
    if options.method == "nm":
        counts["weight_bytes_nm_compressed"] = _nm_bytes(total, zeros, options.m)
        notes.append(_nm_note(options, ctx, counts["weight_bytes_nm_compressed"]))
        if options.ratio != 0.5:
            notes.append(f"ratio={options.ratio} is ignored by nm: its sparsity is 1 - n/m = {1 - options.n / options.m:.2f}")
    return PassResult(model, modified=changed > 0, counts=counts, notes=notes, layers=records)


# --- masks (True: keep) ---------------------------------------------------------------------


def magnitude_mask(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Keep all but exactly ``round(ratio * size)`` entries: the lowest scores go."""
    keep = np.ones(scores.size, dtype=bool)
    k = _count(ratio, scores.size)
    if k:
        keep[np.argpartition(scores.ravel(), k - 1)[:k]] = False
    return keep.reshape(scores.shape)


def row_mask(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Per row, all but exactly ``round(ratio * columns)`` entries: each row's lowest scores go."""
    keep = np.ones(scores.shape, dtype=bool)
    k = _count(ratio, scores.shape[1])
    if k:
        np.put_along_axis(keep, np.argpartition(scores, k - 1, axis=1)[:, :k], False, axis=1)
    return keep


def nm_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """In every group of ``m`` consecutive entries of a row keep the ``n`` highest scores."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, np.argsort(-groups, axis=-1, kind="stable")[..., :n], True, axis=-1)
    return keep.reshape(rows, cols)


def _count(ratio: float, size: int) -> int:
    return int(math.floor(ratio * size + 0.5))


def _masks(options: PrunePass, layers: list[WeightedLayer], norms: dict[str, np.ndarray]) -> list[np.ndarray]:
    scores = [_scores(layer, norms.get(layer.name)) for layer in layers]
    if options.method == "magnitude" and options.scope == "global":
        flat = magnitude_mask(np.concatenate([s.ravel() for s in scores]), options.ratio)
        bounds = np.cumsum([0, *(s.size for s in scores)])
        return [flat[a:b].reshape(s.shape) for a, b, s in zip(bounds[:-1], bounds[1:], scores, strict=True)]
    if options.method == "magnitude":
        return [magnitude_mask(s, options.ratio) for s in scores]
    if options.method == "wanda":
        return [row_mask(s, options.ratio) for s in scores]
    return [nm_mask(s, options.n, options.m) for s in scores]


def _scores(layer: WeightedLayer, norms: np.ndarray | None) -> np.ndarray:
    """|W|, or Wanda's |W| * ||X_j|| (a zero weight always scores below a non-zero one)."""
    magnitude = np.abs(layer.matrix()).astype(np.float64)
    if norms is None:
        return magnitude
    scale = norms[layer.feature_index()]
    return magnitude * (scale + 1e-12 * max(float(norms.max()), 1e-30))


def _input_norms(model: ir.Model, layers: list[WeightedLayer], feeds, ctx: Context) -> dict[str, np.ndarray]:
    stats = ctx.measure.reduce(model, {layer.input_name: ChannelSums(layer.channel_axis) for layer in layers}, feeds)
    return {layer.name: stats[layer.input_name].norms for layer in layers}


# --- report -------------------------------------------------------------------------------


def _record(layer: WeightedLayer, new: np.ndarray, measure) -> dict:
    bias = layer.bias_size()
    nonzero = int(np.count_nonzero(new))
    record = {
        "layer": layer.name,
        "op_type": layer.op_type,
        "sparsity": round(1.0 - nonzero / new.size, 6),
        "params_before": int(layer.weight.size) + bias,
        "params_after": nonzero + bias,
        "macs_before": None,
        "macs_after": None,
        "nonzero_macs": None,
        "error": None,
    }
    if measure is not None:
        if layer.is_conv:
            macs = conv_macs(layer.weight.shape, measure.output_size)
        else:
            macs = matmul_macs(layer.matrix().shape[1], measure.output_size)
        # Dense kernels multiply the zeros too: the MACs run are unchanged; nonzero_macs is
        # what a kernel skipping zeros would do.
        record.update(macs_before=macs, macs_after=macs, nonzero_macs=int(round(macs * nonzero / new.size)),
                      error=round(measure.error, 6))
    return record


def _csr_bytes(keep: np.ndarray) -> int:
    """fp32 values, column indices (uint16 when they fit) and int32 row pointers."""
    rows, cols = keep.shape
    nnz = int(np.count_nonzero(keep))
    return nnz * (4 + (2 if cols <= 65536 else 4)) + (rows + 1) * 4


def _nm_bytes(total: int, zeros: int, m: int) -> int:
    """The compressed N:M format: the kept fp32 values plus log2(m) bits of position each."""
    kept = total - zeros
    return kept * 4 + math.ceil(kept * math.ceil(math.log2(m)) / 8)


def nm_backends() -> list[tuple[str, bool]]:
    """(backend, available here) for every backend whose kernels run N:M sparse weights faster."""
    found = []
    for name, cls in available_backends().items():
        try:
            backend = cls()
            if backend.capabilities.gains_from_nm_sparsity:
                found.append((name, backend.available()[0]))
        except Exception:  # a backend that cannot describe itself here says nothing about N:M
            logger.debug("backend %s: capabilities unavailable", name, exc_info=True)
    return found


def _target_gains_from_nm(ctx: Context) -> bool:
    try:
        return ctx.backend is not None and ctx.backend.capabilities.gains_from_nm_sparsity
    except Exception:
        logger.debug("target backend: capabilities unavailable", exc_info=True)
        return False


def _nm_note(options: PrunePass, ctx: Context, compressed: int) -> str:
    gaining = nm_backends()
    names = ", ".join(f"{name} ({'available here' if ok else 'not available here'})" for name, ok in gaining) or "none known"
    target = ctx.backend.name if ctx.backend is not None else "cpu"
    verdict = "gains speed from them" if _target_gains_from_nm(ctx) else "runs them as dense weights, no faster"
    return (f"{options.n}:{options.m} patterns run faster on sparse kernels of: {names}; the target backend {target} {verdict}; "
            f"in the compressed N:M format the weights take {compressed / 1e6:.2f} MB")


def _size_note(options: PrunePass, sparsity: float, dense: int, before: int, after: int, csr: int, ctx: Context) -> str:
    target = ctx.backend.name if ctx.backend is not None else "cpu"
    if options.method == "nm" and _target_gains_from_nm(ctx):
        speed = f"The {target} backend runs N:M patterns on sparse kernels; the artifact still stores them densely"
    else:
        speed = (f"The {target} backend's dense kernels multiply zeros like any weight, so expect no speedup, "
                 f"and the artifact stores them densely")
    return (f"{sparsity:.1%} of the pruned layers' weights are zero. {speed} ({dense / 1e6:.2f} MB). Compressed "
            f"(deflate, as in a zip of the artifact) they take {after / 1e6:.2f} MB instead of {before / 1e6:.2f} MB; "
            f"in CSR {csr / 1e6:.2f} MB")
