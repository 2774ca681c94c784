"""GPTQ (Frantar et al., 2022): 4-bit rounding that compensates each column's error.

For a linear layer ``y = x @ W`` (W [K, N]) and calibration inputs X [tokens, K], the
layer's output error is ``||X (W - Q)||^2``; its Hessian in W is ``H = 2 X^T X``. GPTQ
quantizes W row by row along K (a "column" of the [N, K] weight in the paper's terms) and
spreads each row's rounding error over the rows not yet quantized, weighted by the
inverse Hessian, so the output error, not the weight error, is minimised:

1. Dampen: ``H += 0.01 * mean(diag H) * I``; inputs that are always 0 get ``H_jj = 1``
   and a zero weight row.
2. ``U`` = upper Cholesky factor of ``H^-1`` (numerically stable form of the updates).
3. For rows j in order, in lazy batches of 128 (or ``block``) rows: when j starts a block,
   compute that block's scales (and zero points) from the rows as updated so far;
   ``q_j = quant(w_j)``, ``e = (w_j - q_j) / U_jj``, ``w_{j+1..} -= e * U_{j, j+1..}``
   inside the batch; after the batch, apply its errors to every later row at once.

Hessians are the measurement service's ``Hessian`` statistic (``X^T X`` summed sample by
sample), cached by the model's weights and the feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxsmith.passes.quantize.blockwise import Int4Weight, block_params, quantize_codes

__all__ = ["DAMPENING", "LAZY_BATCH", "InverseHessian", "gptq_int4", "inverse_hessian"]

DAMPENING = 0.01  # of the mean diagonal of H
LAZY_BATCH = 128  # rows per lazy batch update


@dataclass(frozen=True)
class InverseHessian:
    """What GPTQ needs of a Hessian: U, the upper Cholesky factor of the dampened H^-1
    (``U^T U = H^-1``), and the inputs that were always 0. Layers reading the same input
    (Q, K and V) share one."""

    u: np.ndarray
    dead: np.ndarray


def inverse_hessian(hessian: np.ndarray, dampening: float = DAMPENING) -> InverseHessian:
    h = hessian.astype(np.float64).copy()
    k = h.shape[0]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices(k)] += dampening * float(np.mean(np.diag(h)))
    # With J the reversal permutation and J H J = M M^T (M lower), H = R R^T for the upper
    # R = J M J, so H^-1 = (R^-1)^T R^-1 and U = R^-1: one Cholesky, one triangular inverse.
    lower = _cholesky(h[::-1, ::-1])
    r = lower[::-1, ::-1]
    return InverseHessian(np.triu(np.linalg.solve(r, np.eye(k))), dead)


def gptq_int4(weight: np.ndarray, inverse: InverseHessian, block: int, symmetric: bool) -> Int4Weight:
    """GPTQ-rounded 4-bit blocks of ``weight`` [K, N] along K, for inputs whose Hessian gave ``inverse``."""
    k, n = weight.shape
    u = inverse.u
    w = weight.astype(np.float64).copy()
    w[inverse.dead, :] = 0.0
    blocks = -(-k // block)
    codes = np.zeros((k, n), dtype=np.int8)
    scales = np.zeros((blocks, n), dtype=np.float32)
    zero_points = None if symmetric else np.zeros((blocks, n), dtype=np.uint8)
    batch = max(LAZY_BATCH, block)  # a multiple of block: every block starts and ends inside one batch
    scale = zero_point = None
    for b1 in range(0, k, batch):
        b2 = min(b1 + batch, k)
        errors = np.zeros((b2 - b1, n))
        for j in range(b1, b2):
            if j % block == 0:
                scale, zero_point = block_params(w[j : min(j + block, k)].astype(np.float32), symmetric, axis=0)
                scales[j // block] = scale[0]
                if zero_points is not None:
                    zero_points[j // block] = zero_point[0]
            q = quantize_codes(w[j : j + 1].astype(np.float32), scale, zero_point)
            codes[j] = q[0]
            dequantized = (q[0].astype(np.float64) - (0 if zero_point is None else zero_point[0])) * scale[0]
            error = (w[j] - dequantized) / u[j, j]
            w[j + 1 : b2] -= np.outer(u[j, j + 1 : b2], error)
            errors[j - b1] = error
        w[b2:] -= u[b1:b2, b2:].T @ errors
    return Int4Weight(codes, scales, zero_points, block)


def _cholesky(h: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``h``, adding to the diagonal while it is not positive definite."""
    extra = 0.0
    for _ in range(8):
        try:
            return np.linalg.cholesky(h + extra * np.eye(h.shape[0]))
        except np.linalg.LinAlgError:
            extra = extra * 10.0 if extra else 1e-6 * float(np.mean(np.diag(h)))
    raise np.linalg.LinAlgError("the Hessian stays singular after dampening")
