"""Statistics of activations on calibration data, streamed and kept small, shared by passes.

Per tensor and channel axis, over every other position (batch, tokens, pixels) of every
calibration feed: the sum of squares of each channel (its L2 norm is what Wanda scales
weights by), and on request the Gram matrix ``X^T X`` of the channel vectors with their sum (what
activation-aware SVD whitens with, and a least-squares refit solves with). Nothing else
is kept, so memory is ``channels`` (or ``channels^2``) per tensor, never samples. At most
``chunk`` tensors are outputs of one session. Results are cached per tensor in
``ctx.activations`` under a key naming the model's weights and the feeds, so prune,
lowrank and quantize collect once per pipeline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import threadpoolctl

from onnxsmith.runtime import make_session, with_outputs

__all__ = ["TensorStats", "collect_stats", "model_digest", "one_blas_thread"]


@dataclass
class TensorStats:
    """Sums over the positions of one tensor, channels along ``axis``."""

    axis: int
    square_sum: np.ndarray  # [channels], float64
    count: int  # positions summed (channel vectors seen)
    gram: np.ndarray | None = None  # [channels, channels], float64
    total: np.ndarray | None = None  # [channels] sum of each channel, kept with the Gram matrix

    @property
    def mean(self) -> np.ndarray | None:
        return None if self.total is None else self.total / max(self.count, 1)

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of each channel over every calibration position."""
        return np.sqrt(self.square_sum)


def collect_stats(
    model: ir.Model,
    requests: dict[str, tuple[int, bool]],
    feeds: list[dict[str, np.ndarray]],
    *,
    cache: dict | None = None,
    chunk: int = 32,
) -> dict[str, TensorStats]:
    """``requests[name] = (channel axis, want the Gram matrix)`` -> statistics per tensor name."""
    prefix = f"prune.stats:{model_digest(model, feeds)}:"
    result: dict[str, TensorStats] = {}
    missing: dict[str, tuple[int, bool]] = {}
    for name, (axis, gram) in requests.items():
        cached = cache.get(f"{prefix}{name}:{axis}") if cache is not None else None
        if cached is not None and (cached.gram is not None or not gram):
            result[name] = cached
        else:
            missing[name] = (axis, gram)
    names = list(missing)
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        session = make_session(with_outputs(model, part), optimize=False)
        sums: dict[str, TensorStats] = {}
        for feed in feeds:
            arrays = session.run(part, feed)
            with one_blas_thread():
                for name, array in zip(part, arrays, strict=True):
                    _accumulate(sums, name, np.asarray(array), *missing[name])
        for name in part:
            stats = sums[name]
            result[name] = stats
            if cache is not None:
                cache[f"{prefix}{name}:{stats.axis}"] = stats
    return result


def _accumulate(sums: dict[str, TensorStats], name: str, array: np.ndarray, axis: int, gram: bool) -> None:
    channels = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis]).astype(np.float64)
    stats = sums.get(name)
    if stats is None:
        width = channels.shape[1]
        stats = sums[name] = TensorStats(axis, np.zeros(width), 0, np.zeros((width, width)) if gram else None,
                                         np.zeros(width) if gram else None)
    stats.square_sum += np.einsum("ij,ij->j", channels, channels)
    stats.count += channels.shape[0]
    if stats.gram is not None:
        stats.gram += channels.T @ channels
        stats.total += channels.sum(axis=0)


def one_blas_thread() -> threadpoolctl.threadpool_limits:
    """numpy's BLAS/LAPACK on one thread, for the many small products and factorizations
    of these passes. On the 2-core test machine, with other processes running, OpenBLAS'
    threads made them slower, not faster: np.linalg.svd 15-50x (384x384: 2.2 s on 2 threads
    vs 0.05 s on 1; 2048x2048: 37 s vs 5.8 s), X^T X of 128 tokens 2x."""
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def model_digest(model: ir.Model, feeds: list[dict[str, np.ndarray]]) -> str:
    """A digest of the weights and the feeds: statistics stay valid while both do."""
    digest = hashlib.sha256()
    for value in model.graph.initializers.values():
        digest.update(value.name.encode())
        if value.const_value is not None:
            digest.update(value.const_value.tobytes())
    for node in model.graph:
        digest.update(f"{node.op_type}:{node.name}".encode())
    for feed in feeds:
        for name, array in sorted(feed.items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]
