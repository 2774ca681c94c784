"""Calibration: activation ranges from calibration data, streamed and bounded in memory.

Statistics are collected sample by sample, never holding every activation: pass 1 keeps a
running min/max per tensor; methods that need a distribution (percentile, entropy, mse)
make pass 2, a fixed-range histogram per tensor (range from pass 1): the measurement
service's MinMax and Histogram statistics (core/statistics.py), read in bounded chunks and
cached by the model's weights and the feeds, so other passes reuse them.

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

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxsmith.measure import Measurements
from onnxsmith.passes.quantize.range_search import mse_range, reader_functions
from onnxsmith.statistics import Histogram, MinMax

__all__ = ["Method", "TensorRange", "collect_ranges"]

Method = Literal["minmax", "percentile", "entropy", "mse"]
BINS = 2048


@dataclass(frozen=True)
class TensorRange:
    low: float
    high: float


def collect_ranges(
    measure: Measurements,
    model: ir.Model,
    tensors: list[str],
    feeds: list[dict[str, np.ndarray]],
    *,
    method: Method,
    percentile: float = 99.999,
    activations: str = "uint8",
) -> dict[str, TensorRange]:
    """Per tensor name, the range int8 quantization should cover, for ``activations`` in
    the writer's schemes (qdq_writer.ACTIVATION_SCHEMES; mse fits its range to the scheme).
    Measured through ``measure``, which caches the statistics and the ranges by the model's
    weights and the feeds."""
    return measure.memo("calibration", model, feeds, lambda: _ranges(measure, model, tensors, feeds, method, percentile, activations),
                        tuple(tensors), method, percentile, activations)


def _ranges(measure: Measurements, model: ir.Model, tensors: list[str], feeds, method: Method, percentile: float,
            activations: str) -> dict[str, TensorRange]:
    if method == "minmax":
        return {n: TensorRange(*lo_hi) for n, lo_hi in measure.reduce(model, dict.fromkeys(tensors, MinMax()), feeds).items()}
    if method == "mse":
        histograms = measure.reduce(model, dict.fromkeys(tensors, Histogram(BINS)), feeds)
        readers = reader_functions(model, tensors)
        return {n: TensorRange(*mse_range(counts, low, high, readers.get(n), symmetric=activations == "int8",
                                               by_sign=activations == "symmetric"))
                for n, (low, high, counts) in histograms.items()}
    ranges = {}
    for n, (low, high, counts) in measure.reduce(model, dict.fromkeys(tensors, Histogram(BINS, absolute=True)), feeds).items():
        threshold = _threshold(counts, max(abs(low), abs(high), 1e-12), method, percentile)
        lowest = 0.0 if low >= 0 else max(low, -threshold)
        ranges[n] = TensorRange(lowest, min(high, threshold) if high > 0 else high)
    return ranges


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
