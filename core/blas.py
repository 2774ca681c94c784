"""numpy's BLAS threads for the many small products and factorizations of the passes."""

from __future__ import annotations

import threadpoolctl

__all__ = ["one_blas_thread"]


def one_blas_thread() -> threadpoolctl.threadpool_limits:
    """numpy's BLAS/LAPACK on one thread. On the 2-core test machine, with other processes
    running, OpenBLAS' threads made these small products slower, not faster: np.linalg.svd
    15-50x (384x384: 2.2 s on 2 threads vs 0.05 s on 1; 2048x2048: 37 s vs 5.8 s), X^T X of
    128 tokens 2x."""
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")
