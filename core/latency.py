"""Latency of two (or more) sessions measured interleaved, so machine noise hits both alike.

Each round runs every session once, in an order that alternates between rounds; a
session's time per round is the mean of ``inner`` back-to-back runs, with ``inner`` picked
so one timed block lasts at least ``min_block_s`` (tiny models are below timer noise).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

from onnxsmith.backend import Session

__all__ = ["MIN_ROUNDS", "LatencyStats", "consistently_faster", "measure_interleaved", "percentile", "ratio_with_spread", "speedup_summary"]

MIN_ROUNDS = 9  # fewer interleaved rounds cannot tell "faster in most rounds" from noise


@dataclass
class LatencyStats:
    median_ms: float
    p90_ms: float
    rounds: int
    samples_ms: tuple[float, ...] = ()  # one per round, in round order (paired with the other sessions' rounds)


def measure_interleaved(
    sessions: dict[str, Session],
    feed: dict[str, np.ndarray],
    *,
    rounds: int = 15,
    warmup: int = 3,
    min_block_s: float = 0.005,
) -> dict[str, LatencyStats]:
    """Median and p90 latency per session, in milliseconds, over ``rounds`` interleaved rounds."""
    names = list(sessions)
    slowest_single = max(_time_block(sessions[n], feed, 1) for n in names)  # also the first run
    inner = min(1000, max(1, math.ceil(min_block_s / max(slowest_single, 1e-9))))
    for _ in range(warmup):
        for name in names:
            _time_block(sessions[name], feed, inner)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(_time_block(sessions[name], feed, inner) * 1000.0)
    return {n: LatencyStats(statistics.median(s), percentile(s, 90), rounds, tuple(s)) for n, s in samples.items()}


def consistently_faster(candidate: LatencyStats, baseline: LatencyStats, quantile: float = 25) -> bool:
    """Whether ``candidate`` beat ``baseline`` in most rounds of one interleaved run: the
    ``quantile``-th percentile of the per-round ratios baseline/candidate is above 1. Pairing
    by round cancels the machine's drift; a gain within the noise of the rounds is no gain."""
    ratios = [b / c for b, c in zip(baseline.samples_ms, candidate.samples_ms, strict=True) if c > 0]
    return bool(ratios) and percentile(ratios, quantile) > 1.0


def speedup_summary(before: LatencyStats, after: LatencyStats) -> dict[str, object]:
    """``after`` against ``before`` from one interleaved run: the medians, their ratio, the
    spread of the per-round ratios (25th-75th percentile), and a verdict that calls a ratio a
    change only when it held in most of at least MIN_ROUNDS rounds ("faster", "slower", "within
    the noise", "too few rounds to tell")."""
    ratios = [b / a for b, a in zip(before.samples_ms, after.samples_ms, strict=True) if a > 0]
    if before.rounds < MIN_ROUNDS:
        verdict = "too few rounds to tell"
    elif consistently_faster(after, before):
        verdict = "faster"
    elif consistently_faster(before, after):
        verdict = "slower"
    else:
        verdict = "within the noise"
    return {"before": before.median_ms, "after": after.median_ms, "speedup": before.median_ms / after.median_ms,
            "speedup_iqr": [percentile(ratios, 25), percentile(ratios, 75)], "rounds": before.rounds, "verdict": verdict}


def ratio_with_spread(speedup: float | None, low: float | None = None, high: float | None = None) -> str:
    """A speedup as tables show it: ``1.23x (1.10-1.31)`` with the spread of its rounds where known, "" when not measured."""
    if speedup is None:
        return ""
    return f"{speedup:.2f}x ({low:.2f}-{high:.2f})" if low is not None and high is not None else f"{speedup:.2f}x"


def _time_block(session: Session, feed: dict[str, np.ndarray], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        session.run(None, feed)
    return (time.perf_counter() - start) / inner


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of ``values`` (NaN when there are none)."""
    return float(np.percentile(np.asarray(values), q)) if values else math.nan
