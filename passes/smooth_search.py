"""What ``smooth`` measures of its activations, and its per-group choice of alpha.

One fixed alpha is a compromise: behind a LayerNorm, smoothing hard (alpha 0.8) divides the
int8 error of Q/K/V by 3 on MiniLM, while behind a GELU any alpha below 0.6 makes it worse
(the inputs are one-sided and a few tokens dominate). ``search`` picks, per group of
linears reading one activation, the alpha of GRID whose simulated int8 output error on
calibration rows is lowest, or none (alpha 0) unless that error is at least 10% lower: activations quantized per tensor as the
backend runs them (uint8 asymmetric or int8 symmetric, range = min/max of the smoothed
rows), weights int8 symmetric per output channel, as quantize{mode=int8} writes them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["GRID", "MIN_GAIN", "SAMPLE_ROWS", "best_alpha", "int8_error"]

GRID = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SAMPLE_ROWS = 512  # rows per activation kept for the search, spread evenly over the feeds
MIN_GAIN = 0.1  # a group is smoothed only if its simulated int8 error drops by at least 10%


def best_alpha(
    rows: np.ndarray, weights: list[np.ndarray], scales: Callable[[float], np.ndarray], *, symmetric: bool
) -> tuple[float, float, float]:
    """(the alpha of GRID with the lowest int8 error, that error, the error unsmoothed);
    ``weights`` are [K, N], ``scales(alpha)`` the s of that alpha."""
    errors = {alpha: int8_error(rows, weights, scales(alpha) if alpha else None, symmetric=symmetric) for alpha in GRID}
    alpha = min(errors, key=lambda a: (errors[a], a))
    if errors[alpha] > (1.0 - MIN_GAIN) * errors[0.0]:
        alpha = 0.0  # not worth a Mul node
    return alpha, errors[alpha], errors[0.0]


def int8_error(rows: np.ndarray, weights: list[np.ndarray], s: np.ndarray | None, *, symmetric: bool) -> float:
    """Relative RMS error of ``rows @ W`` for every W, activations and weights fake-quantized
    to int8 after smoothing by ``s`` (None: unsmoothed)."""
    x = rows if s is None else rows / s
    q = _fake_quantize_activations(x, symmetric)
    num = den = 0.0
    for w in weights:
        ws = w if s is None else w * s[:, None]
        step = np.max(np.abs(ws), axis=0, keepdims=True) / 127.0
        wq = np.round(ws / np.where(step > 0, step, 1.0)) * step
        reference = rows @ w
        num += float(np.sum((q @ wq - reference) ** 2))
        den += float(np.sum(reference**2))
    return float(np.sqrt(num / den)) if den > 0 else 0.0


def _fake_quantize_activations(x: np.ndarray, symmetric: bool) -> np.ndarray:
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if symmetric:
        step = max(-low, high) / 127.0
        return x if step == 0 else np.clip(np.round(x / step), -127, 127) * step
    step = (high - low) / 255.0
    if step == 0:
        return x
    zero = np.round(-low / step)
    return (np.clip(np.round(x / step) + zero, 0, 255) - zero) * step
