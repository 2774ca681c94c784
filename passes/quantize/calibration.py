"""Calibration: activation ranges from calibration data, streamed and bounded in memory.

Statistics are collected sample by sample, never holding every activation: pass 1 keeps a
running min/max per tensor; methods that need a distribution (percentile, entropy, mse)
make pass 2, a fixed-range histogram per tensor (range from pass 1). Tensors are read in
chunks whose outputs for one feed stay under ``max_bytes`` (streaming.py), so memory stays
bounded on big models and big inputs.
Results are cached in ``ctx.activations`` so other passes reuse them.

Range rules (``calibration=``):
- ``minmax``: [min, max] seen;
- ``percentile``: clip |x| at the given percentile of the |x| histogram (outliers dropped);
- ``entropy``: TensorRT's KL-divergence threshold on the |x| histogram (128 quantized bins);
- ``mse``: on a signed histogram, the [lo, hi] that minimises the expected squared error
  of 8-bit quantization as the tensor's reader sees it: rounding noise inside, clipping
  outside, both through the elementwise function (SiLU, hardswish, GELU...) between the
  tensor and the next quantized value (range_search.py).
percentile and entropy clip |x| at a threshold t: [-t, t], narrowed to [0, t] (or the
observed minimum) for tensors that are never negative.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.prune.activations import model_digest
from onnxsmith.passes.quantize.range_search import mse_range, reader_functions
from onnxsmith.passes.quantize.streaming import MAX_CHUNK_BYTES, chunk_tensors
from onnxsmith.runtime import make_session, with_outputs

__all__ = ["Method", "TensorRange", "collect_ranges"]

Method = Literal["minmax", "percentile", "entropy", "mse"]
BINS = 2048


@dataclass(frozen=True)
class TensorRange:
    low: float
    high: float


def collect_ranges(
    model: ir.Model,
    tensors: list[str],
    feeds: list[dict[str, np.ndarray]],
    *,
    method: Method,
    percentile: float = 99.999,
    max_bytes: int = MAX_CHUNK_BYTES,
    cache: dict | None = None,
    symmetric: bool = False,
) -> dict[str, TensorRange]:
    """Per tensor name, the range int8 quantization should cover (``symmetric``: int8
    activations, a range symmetric around 0; used by mse)."""
    key = _cache_key(model, tensors, feeds, method, percentile) + f":{symmetric}"
    if cache is not None and key in cache:
        return cache[key]
    ranges: dict[str, TensorRange] = {}
    for names in chunk_tensors(model, tensors, feeds[0], max_bytes) if feeds else []:
        session = make_session(with_outputs(model, names), optimize=False)
        lows, highs = _minmax(session, names, feeds)
        if method == "minmax":
            ranges.update({n: TensorRange(float(lows[n]), float(highs[n])) for n in names})
            continue
        if method == "mse":
            readers = reader_functions(model, names)
            histograms = _signed_histograms(session, names, feeds, lows, highs)
            for n in names:
                lo, hi = mse_range(histograms[n], float(lows[n]), float(highs[n]), readers.get(n), symmetric=symmetric)
                ranges[n] = TensorRange(lo, hi)
            continue
        limits = {n: max(abs(float(lows[n])), abs(float(highs[n])), 1e-12) for n in names}
        histograms = _abs_histograms(session, names, feeds, limits)
        for n in names:
            threshold = _threshold(histograms[n], limits[n], method, percentile)
            low = 0.0 if lows[n] >= 0 else max(float(lows[n]), -threshold)
            ranges[n] = TensorRange(low, min(float(highs[n]), threshold) if highs[n] > 0 else float(highs[n]))
    if cache is not None:
        cache[key] = ranges
    return ranges


def _cache_key(model, tensors, feeds, method, percentile) -> str:
    """Keyed by the weights' values, not only their names: smooth rescales weights in place."""
    return f"calibration:{model_digest(model, feeds)}:{method}:{percentile}:{hashlib.sha256(repr(tuple(tensors)).encode()).hexdigest()[:16]}"


def _run(session, names: list[str], feeds: Iterable[dict[str, np.ndarray]]):
    for feed in feeds:
        yield dict(zip(names, session.run(names, feed), strict=True))


def _minmax(session, names, feeds) -> tuple[dict[str, float], dict[str, float]]:
    lows = dict.fromkeys(names, np.inf)
    highs = dict.fromkeys(names, -np.inf)
    for outputs in _run(session, names, feeds):
        for n, array in outputs.items():
            if array.size:
                lows[n] = min(lows[n], float(array.min()))
                highs[n] = max(highs[n], float(array.max()))
    return {n: (v if np.isfinite(v) else 0.0) for n, v in lows.items()}, {n: (v if np.isfinite(v) else 0.0) for n, v in highs.items()}


def _abs_histograms(session, names, feeds, limits) -> dict[str, np.ndarray]:
    histograms = {n: np.zeros(BINS, dtype=np.float64) for n in names}
    for outputs in _run(session, names, feeds):
        for n, array in outputs.items():
            counts, _ = np.histogram(np.abs(array.astype(np.float32)), bins=BINS, range=(0.0, limits[n]))
            histograms[n] += counts
    return histograms


def _signed_histograms(session, names, feeds, lows, highs) -> dict[str, np.ndarray]:
    histograms = {n: np.zeros(BINS, dtype=np.float64) for n in names}
    for outputs in _run(session, names, feeds):
        for n, array in outputs.items():
            if highs[n] > lows[n]:
                counts, _ = np.histogram(array.astype(np.float32), bins=BINS, range=(float(lows[n]), float(highs[n])))
                histograms[n] += counts
    return histograms


def _threshold(hist: np.ndarray, limit: float, method: str, percentile: float) -> float:
    """Clip threshold t on |x| (bins of width limit/BINS)."""
    width = limit / len(hist)
    total = hist.sum()
    if total == 0:
        return limit
    if method == "percentile":
        cumulative = np.cumsum(hist) / total
        return float((np.searchsorted(cumulative, percentile / 100.0) + 1) * width)
    if method == "entropy":
        # KL on a sparse histogram (few calibration values per bin) clips far too much:
        # merge bins until there are about 16 values per bin, down to 128 (the level count).
        merge = 1
        while len(hist) // (merge * 2) >= 128 and total / (len(hist) / merge) < 16:
            merge *= 2
        merged = hist.reshape(-1, merge).sum(axis=1)
        return _kl_threshold(merged, width * merge)
    raise ValueError(f"no |x| threshold rule for calibration method '{method}'")


def _kl_threshold(hist: np.ndarray, width: float, levels: int = 128) -> float:
    """TensorRT's entropy calibration: the threshold whose 128-level quantized distribution
    is closest (KL divergence) to the clipped reference distribution."""
    best_kl, best_i = np.inf, len(hist)
    for i in range(levels, len(hist) + 1, 16):
        reference = hist[:i].copy()
        reference[i - 1] += hist[i:].sum()
        groups = np.array_split(np.arange(i), levels)
        quantized = np.zeros(i)
        for group in groups:
            chunk = hist[group]
            nonzero = chunk > 0
            if nonzero.any():
                quantized[group[nonzero]] = chunk.sum() / nonzero.sum()
        p, q = reference / reference.sum(), quantized / max(quantized.sum(), 1e-12)
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * width
