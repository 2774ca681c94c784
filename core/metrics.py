"""How far a model's outputs moved from the original's: per output, and one drift number.

``drift`` is the budgeted number (``accuracy.max_drift``): the largest absolute error of
any output divided by that output's largest reference magnitude, so it means the same for
logits, probabilities and embeddings. Per output we also report max abs error, cosine
similarity and SQNR in dB, over all evaluation samples together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxsmith.runtime import Outputs

__all__ = ["OutputDrift", "compare_outputs", "drift", "within_tolerance"]


@dataclass
class OutputDrift:
    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    ref_max_abs: float

    @property
    def relative(self) -> float:
        return self.max_abs / self.ref_max_abs if self.ref_max_abs > 0 else self.max_abs


def compare_outputs(reference: list[Outputs], candidate: list[Outputs]) -> dict[str, OutputDrift]:
    """Compare two models' outputs sample by sample, keyed by output name of the reference."""
    result = {}
    for name in reference[0]:
        ref = np.concatenate([np.asarray(r[name], dtype=np.float64).ravel() for r in reference])
        got = np.concatenate([np.asarray(c[name], dtype=np.float64).ravel() for c in candidate])
        if ref.shape != got.shape:
            raise ValueError(f"output '{name}' changed size: {ref.size} values before, {got.size} after")
        err = got - ref
        finite = np.isfinite(err).all()
        signal, noise = float(np.sum(ref * ref)), float(np.sum(err * err)) if finite else math.inf
        norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
        result[name] = OutputDrift(
            max_abs=float(np.max(np.abs(err))) if finite else math.inf,
            mean_abs=float(np.mean(np.abs(err))) if finite else math.inf,
            cosine=float(np.dot(ref, got) / norms) if norms > 0 else float(np.array_equal(ref, got)),
            sqnr_db=_sqnr_db(signal, noise),
            ref_max_abs=float(np.max(np.abs(ref))) if ref.size else 0.0,
        )
    return result


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def drift(per_output: dict[str, OutputDrift]) -> float:
    """The single budgeted number: the worst output's relative max error."""
    return max((d.relative for d in per_output.values()), default=0.0)


def within_tolerance(reference: list[Outputs], candidate: list[Outputs], *, rtol: float, atol: float) -> str | None:
    """None when every output is close (numpy's allclose rule); else the first failure, described."""
    for name in reference[0]:
        for i, (r, c) in enumerate(zip(reference, candidate, strict=True)):
            ref, got = np.asarray(r[name]), np.asarray(c[name])
            if ref.shape != got.shape:
                return f"output '{name}' changed shape from {ref.shape} to {got.shape}"
            if not np.allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True):
                worst = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
                return f"output '{name}' differs by up to {worst:.3g} on sample {i} (tolerance atol={atol}, rtol={rtol})"
    return None
