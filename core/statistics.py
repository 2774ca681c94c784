"""Typed reducers: what the measurement service folds a tensor into, feed by feed.

A statistic is a frozen dataclass (hashable: with the model's and the feeds' digests it is
the cache key) whose ``accumulator()`` folds one array at a time and keeps only what its
result needs, so memory never grows with the number of feeds. A statistic that needs two
sweeps over the feeds (a histogram whose range is the data's min/max) says so in
``sweeps``; the service runs the feeds again for it, in the same session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

__all__ = [
    "AbsMaxRows", "Accumulator", "ChannelSums", "ErrorEnergy", "Hessian", "Histogram", "MinMax", "PairedStatistic",
    "RowSample", "Shape", "Statistic", "TensorStats",
]


class Accumulator(Protocol):
    def add(self, array: np.ndarray, sweep: int) -> None: ...

    def result(self) -> Any: ...


class Statistic(Protocol):
    sweeps: ClassVar[int]

    def accumulator(self) -> Accumulator: ...


# --- min/max and histograms (calibration) -------------------------------------------------


@dataclass(frozen=True)
class MinMax:
    """(low, high) over every element; 0.0 for a tensor that was always empty or non-finite."""

    sweeps: ClassVar[int] = 1

    def accumulator(self) -> _MinMax:
        return _MinMax()


class _MinMax:
    def __init__(self) -> None:
        self.low, self.high = np.inf, -np.inf

    def add(self, array: np.ndarray, sweep: int) -> None:
        if array.size:
            self.low = min(self.low, float(array.min()))
            self.high = max(self.high, float(array.max()))

    def result(self) -> tuple[float, float]:
        return (self.low if np.isfinite(self.low) else 0.0, self.high if np.isfinite(self.high) else 0.0)


@dataclass(frozen=True)
class Histogram:
    """``bins`` counts over the data's own range (found in a first sweep): of x in [low, high],
    or with ``absolute`` of |x| in [0, max(|low|, |high|)]. Result: (low, high, counts)."""

    bins: int = 2048
    absolute: bool = False
    sweeps: ClassVar[int] = 2

    def accumulator(self) -> _Histogram:
        return _Histogram(self)


class _Histogram:
    def __init__(self, spec: Histogram) -> None:
        self.spec, self.range = spec, _MinMax()
        self.counts = np.zeros(spec.bins, dtype=np.float64)

    def add(self, array: np.ndarray, sweep: int) -> None:
        if sweep == 0:
            self.range.add(array, sweep)
            return
        low, high = self.range.result()
        values = array.astype(np.float32, copy=False)
        if self.spec.absolute:
            edges = (0.0, max(abs(low), abs(high), 1e-12))
            values = np.abs(values)
        elif high > low:
            edges = (low, high)
        else:
            return
        self.counts += np.histogram(values, bins=self.spec.bins, range=edges)[0]

    def result(self) -> tuple[float, float, np.ndarray]:
        return (*self.range.result(), self.counts)


# --- moments (channel statistics, bias correction, Wanda, low-rank whitening) -------------


@dataclass
class TensorStats:
    """Sums over the positions of one tensor, channels along ``axis``."""

    axis: int
    square_sum: np.ndarray  # [channels], float64
    count: int  # positions summed (channel vectors seen)
    total: np.ndarray  # [channels] sum of each channel
    gram: np.ndarray | None = None  # [channels, channels] X^T X, float64

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.square_sum / max(self.count, 1) - self.mean**2, 0.0)

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of each channel over every position."""
        return np.sqrt(self.square_sum)


@dataclass(frozen=True)
class ChannelSums:
    """Per channel along ``axis``: sum and sum of squares (mean, variance, norm), and with
    ``gram`` the Gram matrix X^T X of the channel vectors, all in float64."""

    axis: int = -1
    gram: bool = False
    sweeps: ClassVar[int] = 1

    def accumulator(self) -> _ChannelSums:
        return _ChannelSums(self)


class _ChannelSums:
    def __init__(self, spec: ChannelSums) -> None:
        self.spec, self.stats = spec, None

    def add(self, array: np.ndarray, sweep: int) -> None:
        axis = self.spec.axis
        channels = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis]).astype(np.float64)
        if self.stats is None:
            width = channels.shape[1]
            self.stats = TensorStats(axis, np.zeros(width), 0, np.zeros(width), np.zeros((width, width)) if self.spec.gram else None)
        self.stats.square_sum += np.einsum("ij,ij->j", channels, channels)
        self.stats.total += channels.sum(axis=0)
        self.stats.count += channels.shape[0]
        if self.stats.gram is not None:
            self.stats.gram += channels.T @ channels

    def result(self) -> TensorStats | None:
        return self.stats


@dataclass(frozen=True)
class Hessian:
    """GPTQ's ``H = 2 X^T X / rows`` of the tensor as rows of its last axis: float32 products
    of one feed (fast), summed over feeds in float64."""

    sweeps: ClassVar[int] = 1

    def accumulator(self) -> _Hessian:
        return _Hessian()


class _Hessian:
    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.rows = 0

    def add(self, array: np.ndarray, sweep: int) -> None:
        x = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
        product = (x.T @ x).astype(np.float64)
        self.sum = product if self.sum is None else self.sum + product
        self.rows += x.shape[0]

    def result(self) -> np.ndarray | None:
        return None if self.sum is None else 2.0 * self.sum / max(self.rows, 1)


# --- samples and shapes --------------------------------------------------------------------


@dataclass
class RowSample:
    absmax: np.ndarray  # max |x| per channel (the last axis) over every feed
    rows: np.ndarray | None  # rows [rows, channels] spread evenly over every feed, when asked for


@dataclass(frozen=True)
class AbsMaxRows:
    """Per channel of the last axis its max |x|, and ``rows_per_feed`` rows of every feed
    (evenly spaced): what smooth's alpha search simulates int8 on."""

    rows_per_feed: int = 0
    sweeps: ClassVar[int] = 1

    def accumulator(self) -> _AbsMaxRows:
        return _AbsMaxRows(self.rows_per_feed)


class _AbsMaxRows:
    def __init__(self, per_feed: int) -> None:
        self.per_feed, self.absmax, self.rows = per_feed, None, []

    def add(self, array: np.ndarray, sweep: int) -> None:
        flat = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
        current = np.max(np.abs(flat), axis=0)
        self.absmax = current if self.absmax is None else np.maximum(self.absmax, current)
        if self.per_feed:
            self.rows.append(flat[np.linspace(0, len(flat) - 1, min(self.per_feed, len(flat))).astype(int)])

    def result(self) -> RowSample:
        return RowSample(self.absmax, np.concatenate(self.rows) if self.rows else None)


@dataclass(frozen=True)
class Shape:
    """The tensor's shape on the first feed."""

    sweeps: ClassVar[int] = 1

    def accumulator(self) -> _Shape:
        return _Shape()


class _Shape:
    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None

    def add(self, array: np.ndarray, sweep: int) -> None:
        if self.shape is None:
            self.shape = tuple(array.shape)

    def result(self) -> tuple[int, ...] | None:
        return self.shape


# --- paired: one tensor in two models ------------------------------------------------------


class PairedStatistic(Protocol):
    def accumulator(self) -> Any: ...  # add(reference, candidate); result()


@dataclass(frozen=True)
class ErrorEnergy:
    """(noise, signal): sum of (candidate - reference)^2 and of reference^2, float64; noise is
    +inf when the candidate holds a non-finite value or changed shape. ``float_only``: a
    tensor that turns out not to be float (its type was undeclared) counts nothing."""

    float_only: bool = False

    def accumulator(self) -> _ErrorEnergy:
        return _ErrorEnergy(self.float_only)


class _ErrorEnergy:
    def __init__(self, float_only: bool) -> None:
        self.float_only = float_only
        self.noise = self.signal = 0.0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        if self.float_only and not np.issubdtype(np.asarray(reference).dtype, np.floating):
            return
        ref, got = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        if ref.shape != got.shape or not np.isfinite(got).all():
            self.noise = np.inf
            return
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((got - ref) ** 2))

    def result(self) -> tuple[float, float]:
        return self.noise, self.signal
