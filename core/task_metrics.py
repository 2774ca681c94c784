"""Built-in task metrics, chosen by name (``--metric embedding-cosine``, ``--metric top1``): drift = 1 - a task score.

The default drift (metrics.py) judges every output position in its own units, and cannot
know which positions the task reads. A sentence encoder's task reads the mean of its token
states over the real tokens only, so padding dilutes the default number, and token errors
that cancel in the mean inflate it. On all-MiniLM-L6-v2 its 0.03 budget let through an
int8 variant of mean-pooled cosine 0.986 (bench/int4_bench.py, docs/benchmarks.md "## int4
and smooth"). When the task is known, budget the task itself: ``max_drift`` is then
1 - the score to keep (0.01 for cosine 0.99).

A task metric takes (reference, candidate, feeds): two lists of {output name: ndarray},
one dict per evaluation sample, and the feeds that produced them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxsmith.errors import RecipeError
from onnxsmith.runtime import Outputs

__all__ = ["MASK_INPUT", "TASK_METRICS", "embedding_cosine", "has_padding", "mean_pool", "row_cosine", "top1_disagreement"]

MASK_INPUT = "attention_mask"


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Mean of ``hidden`` [batch, seq, dim] over the positions where ``mask`` [batch, seq] is
    nonzero (sentence-transformers' mean pooling), over all positions without a mask: [batch, dim]."""
    h = np.asarray(hidden, np.float64)
    if mask is None:
        return h.mean(axis=1)
    m = (np.asarray(mask) != 0).astype(np.float64)[..., None]
    return (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``a`` and ``b`` [n, dim]: [n] (1 for equal zero rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(a == b, axis=1), 1.0, 0.0))


def embedding_cosine(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
    """1 - the mean cosine of sentence embeddings, for the worst embedding output.

    Outputs [batch, dim] are embeddings already; outputs [batch, seq, dim] are mean-pooled
    over the tokens the feed's ``attention_mask`` marks (over every token without one).
    Other outputs are not embeddings and are not judged.
    """

    def drift(name: str) -> float:
        ref = np.concatenate([_embedding(r[name], feed) for r, feed in zip(reference, feeds, strict=True)])
        got = np.concatenate([_embedding(c[name], feed) for c, feed in zip(candidate, feeds, strict=True)])
        return 1.0 - float(row_cosine(ref, got).mean())

    names = [name for name, value in reference[0].items() if np.ndim(value) in (2, 3) and _is_float(value)]
    return _worst("embedding-cosine", "[batch, dim] or [batch, seq, dim]", reference, names, drift)


def _embedding(output: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    output = np.asarray(output, np.float64)
    if output.ndim == 2:
        return output
    mask = feed.get(MASK_INPUT)
    if mask is not None and np.shape(mask) != output.shape[:2]:
        mask = None  # not a token mask of this output
    return mean_pool(output, mask)


def top1_disagreement(reference: list[Outputs], candidate: list[Outputs], feeds: list[dict[str, np.ndarray]]) -> float:
    """The fraction of rows whose argmax over the last axis changed, for the worst score output.

    A classifier's outputs [..., classes] (logits or probabilities, 2 classes or more) are
    judged row by row; other outputs are not. ``feeds`` is unused.
    """

    def drift(name: str) -> float:
        classes = np.shape(reference[0][name])[-1]
        ref = np.concatenate([np.reshape(r[name], (-1, classes)) for r in reference])
        got = np.concatenate([np.reshape(c[name], (-1, classes)) for c in candidate])
        return float(np.mean(ref.argmax(axis=1) != got.argmax(axis=1)))

    names = [name for name, value in reference[0].items() if np.ndim(value) > 0 and np.shape(value)[-1] >= 2 and _is_float(value)]
    return _worst("top1", "[..., classes]", reference, names, drift)


def _is_float(value: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(value).dtype, np.floating)


def _worst(metric: str, wanted: str, reference: list[Outputs], names: list[str], drift: Callable[[str], float]) -> float:
    """The largest ``drift`` over the outputs ``names``; a RecipeError when the model has none."""
    if not names:
        shapes = {name: np.shape(value) for name, value in reference[0].items()}
        raise RecipeError(f"metric '{metric}' found no float output of shape {wanted} (outputs: {shapes})",
                          "use the default metric or a --metric package.module:function")
    return max(0.0, *(drift(name) for name in names))


def has_padding(feeds: list[dict[str, np.ndarray]]) -> bool:
    """Whether any feed's ``attention_mask`` leaves tokens out (padding the default drift still judges)."""
    return any(MASK_INPUT in feed and not np.all(np.asarray(feed[MASK_INPUT]) != 0) for feed in feeds)


TASK_METRICS = {"embedding-cosine": embedding_cosine, "top1": top1_disagreement}
