"""Block-wise 4-bit weight quantization: scales per block of the reduction axis, RTN rounding.

A weight ``W[K, N]`` (``y = x @ W``: K is the reduction axis) is cut along K into blocks
of ``block`` rows; every (block, column) pair has one scale, and one zero point when
asymmetric. The arithmetic is ONNX Runtime's (MLAS ``BlockwiseQuantizer``), so our codes
are the ones its own ``MatMulNBitsQuantizer`` writes:

- symmetric: ``m`` = the block's value of largest magnitude (sign kept), ``scale = -m / 8``
  (the scale may be negative: the largest magnitude then maps to code -8, using the
  wider half of [-8, 7]), ``q = clip(round(w / scale + 8), 0, 15) - 8``;
- asymmetric: the range [min(w, 0), max(w, 0)], ``scale = (max - min) / 15``,
  ``zp = clip(round(-min / scale), 0, 15)``, ``q = clip(round(w / scale + zp), 0, 15)``,
  rounding halves away from zero, in float32, as MLAS does (so ties agree).

Dequantized, ``w ~ (q - zp) * scale`` (zp = 0 when symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Int4Weight", "block_params", "quantize_codes", "rtn_int4"]


@dataclass(frozen=True)
class Int4Weight:
    """A [K, N] weight in 4-bit blocks along K.

    ``codes``: int8 [K, N], in [-8, 7] when symmetric, [0, 15] otherwise;
    ``scales``: float32 [n_blocks, N]; ``zero_points``: uint8 [n_blocks, N] or None.
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    block: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    @property
    def symmetric(self) -> bool:
        return self.zero_points is None

    def expand(self, per_block: np.ndarray) -> np.ndarray:
        """A [n_blocks, N] array repeated to one row per weight row: [K, N]."""
        return np.repeat(per_block, self.block, axis=0)[: self.shape[0]]

    def dequantize(self) -> np.ndarray:
        """The float32 [K, N] weight these codes stand for."""
        codes = self.codes.astype(np.float32)
        if self.zero_points is not None:
            codes = codes - self.expand(self.zero_points).astype(np.float32)
        return codes * self.expand(self.scales)


def block_params(w: np.ndarray, symmetric: bool, axis: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point or None) of the values of ``w`` along ``axis`` (kept as size 1)."""
    low = np.min(w, axis=axis, keepdims=True).astype(np.float32)
    high = np.max(w, axis=axis, keepdims=True).astype(np.float32)
    if symmetric:
        extreme = np.where(np.abs(high) > np.abs(low), high, low)
        return (extreme / np.float32(-8.0)).astype(np.float32), None
    low, high = np.minimum(low, 0), np.maximum(high, 0)
    scale = ((high - low) / np.float32(15.0)).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1.0), scale)
    zero_point = np.where(scale == 0, 0, np.clip(_round(-low / safe), 0, 15)).astype(np.uint8)
    return scale, zero_point


def quantize_codes(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    """The int8 codes of ``w`` with broadcastable ``scale`` (and ``zero_point``).

    As MLAS computes them, so ties round the same way: in float32, ``w * (1 / scale)``
    plus the zero point (8 for symmetric codes, stored unsigned), rounded half away from
    zero, clipped to [0, 15]."""
    scale = np.asarray(scale, dtype=np.float32)
    reciprocal = np.where(scale == 0, np.float32(0.0), np.float32(1.0) / np.where(scale == 0, np.float32(1.0), scale))
    offset = np.float32(8.0) if zero_point is None else np.asarray(zero_point, dtype=np.float32)
    stored = np.clip(_round((np.asarray(w, dtype=np.float32) * reciprocal + offset).astype(np.float32)), 0, 15)
    return (stored - 8).astype(np.int8) if zero_point is None else stored.astype(np.int8)


def _round(x: np.ndarray) -> np.ndarray:
    """Halves away from zero, as C's roundf (numpy's round goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def rtn_int4(weight: np.ndarray, block: int, symmetric: bool) -> Int4Weight:
    """Round-to-nearest 4-bit blocks of ``weight`` [K, N] along K."""
    k, n = weight.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), dtype=np.float32)
    padded[:k] = weight
    grouped = padded.reshape(blocks, block, n)
    # Zero padding of a short tail block changes nothing: the asymmetric range always
    # holds 0, and 0 never has the largest magnitude of a symmetric block.
    scale, zero_point = block_params(grouped, symmetric, axis=1)
    codes = quantize_codes(grouped, scale, zero_point).reshape(blocks * block, n)[:k]
    return Int4Weight(codes, scale[:, 0, :], None if zero_point is None else zero_point[:, 0, :], block)
