"""Attention head pruning: remove whole heads of recognised attention blocks (heads_match.py).

Removing head h of a block deletes its columns ``h*d .. (h+1)*d`` from the query, key and
value projections (weights and biases) and the same rows of the output projection; every
other head computes exactly what it did, so the pruned model equals the original with those
rows of the output projection set to zero (what the tests check). Reshape constants that
spell the head count (``[.., H, d]``) or the width (``[.., H*d]``) are rewritten; ``-1`` and
shapes computed at run time need nothing.

Which heads go, ``round(ratio * all heads)`` of them, every block keeping at least one:

- ``activation``: the share of the block's output-projection energy each head carries on
  the calibration data, ``||x_h W_o[h]||^2 / sum_h' ||x_h' W_o[h']||^2``, lowest first across
  all blocks (a share, so blocks compare on one scale);
- ``l2``: the squared norms of the head's Q, K, V and output slices, each layer's scaled
  to mean 1.

Per block the report gives heads, parameters and MACs before/after (projections plus the
two attention products, at the first calibration feed's size) and the relative error of the
output projection on calibration data (no refit: the remaining heads are untouched).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.errors import RecipeError
from onnxsmith.measure import Measurements
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.prune.channel_apply import drop_unused_constants, set_constant, set_shape_entries
from onnxsmith.passes.prune.channel_groups import const_array, shape_entries
from onnxsmith.passes.prune.heads_match import AttentionBlock, find_attention

__all__ = ["prune_heads"]

IMPORTANCES = ("activation", "l2")


def prune_heads(model: ir.Model, ctx: Context, *, ratio: float, importance: str = "activation") -> PassResult:
    """Remove about ``ratio`` of all attention heads, the least important first; in place."""
    if not 0.0 <= ratio < 1.0:
        raise RecipeError(f"prune ratio must be in [0, 1), got {ratio}", "give the fraction of heads to remove, e.g. ratio=0.25")
    if importance not in IMPORTANCES:
        raise RecipeError(f"unknown head importance '{importance}'", f"choose one of: {', '.join(IMPORTANCES)}")
    feeds = ctx.require_calibration("prune{method=heads}").feeds() if importance == "activation" or ctx.calibration else []
    blocks, notes = find_attention(model)
    total = sum(b.heads for b in blocks)
    counts = {"attention_blocks": len(blocks), "heads_before": total}
    if not blocks:
        notes.append("no attention block recognised (fused Attention/MultiHeadAttention ops are not pruned: prune before fuse)")
        return PassResult(model, modified=False, counts={**counts, "heads_after": 0}, notes=notes)
    energy = _head_energy(ctx.measure, model, blocks, feeds) if feeds else None
    scores = _scores(blocks, energy, importance)
    removed = _choose(blocks, scores, round(ratio * total))
    records = []
    for i, block in enumerate(blocks):
        keep = [h for h in range(block.heads) if (i, h) not in removed]
        record = _record(block, keep, energy[i] if energy else None)
        if len(keep) < block.heads:
            _remove(model.graph, block, keep)
        records.append(record)
    drop_unused_constants(model.graph)
    counts["heads_after"] = total - len(removed)
    counts["params_before"] = sum(r["params_before"] for r in records)
    counts["params_after"] = sum(r["params_after"] for r in records)
    if energy:
        counts["macs_before"] = sum(r["macs_before"] for r in records)
        counts["macs_after"] = sum(r["macs_after"] for r in records)
    notes.append(f"{importance} importance: removed {len(removed)} of {total} heads in {len(blocks)} attention blocks")
    return PassResult(model, modified=bool(removed), counts=counts, notes=notes, layers=records)


class _Energy:
    """Per block, from the output projection's input on calibration data: the cross energies
    ``<x_h W_o[h], x_g W_o[g]>`` of the heads' outputs (its diagonal scores a head, a block of it
    the error of removing several), the output's total energy, and the sizes for MACs."""

    def __init__(self, heads: int) -> None:
        self.gram: np.ndarray = np.zeros((heads, heads))
        self.total = 0.0
        self.tokens = 0  # rows of the first feed (batch x sequence)
        self.keys = 0  # sequence length the attention products run over

    @property
    def per_head(self) -> np.ndarray:
        return np.diag(self.gram)


def _head_energy(measure: Measurements, model: ir.Model, blocks: list[AttentionBlock], feeds: list[dict[str, np.ndarray]]
                 ) -> list[_Energy]:
    names = [b.out.matmul.inputs[0].name for b in blocks]
    stats = [_Energy(b.heads) for b in blocks]
    for _, arrays in measure.stream(model, names, feeds, optimize=True):
        for block, stat in zip(blocks, stats, strict=True):
            x = arrays.get(block.out.matmul.inputs[0].name)
            if x is None:  # in another chunk
                continue
            weight = const_array(block.out.matmul.inputs[1]).astype(np.float64)
            bias = const_array(block.out.add.inputs[block.out.bias_index]).astype(np.float64) if block.out.add else 0.0
            flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
            d = block.head_dim
            parts = np.stack([flat[:, h * d:(h + 1) * d] @ weight[h * d:(h + 1) * d] for h in range(block.heads)])
            stat.gram += np.einsum("hnc,gnc->hg", parts, parts)
            y = parts.sum(axis=0) + bias
            stat.total += float((y * y).sum())
            if not stat.tokens:
                stat.tokens = flat.shape[0]
                stat.keys = x.shape[-2] if x.ndim >= 2 else 1
    return stats


def _scores(blocks: list[AttentionBlock], energy: list[_Energy] | None, importance: str) -> dict[tuple[int, int], float]:
    scores = {}
    for i, block in enumerate(blocks):
        d = block.head_dim
        if importance == "activation":
            share = energy[i].per_head / max(float(energy[i].per_head.sum()), 1e-30)
        else:
            share = np.zeros(block.heads)
            for proj, axis in ((block.q, 1), (block.k, 1), (block.v, 1), (block.out, 0)):
                w = np.moveaxis(const_array(proj.matmul.inputs[1]).astype(np.float64), axis, 0)
                norms = np.array([(w[h * d:(h + 1) * d] ** 2).sum() for h in range(block.heads)])
                share += norms / max(float(norms.mean()), 1e-30)
        for h in range(block.heads):
            scores[(i, h)] = float(share[h])
    return scores


def _choose(blocks: list[AttentionBlock], scores: dict[tuple[int, int], float], count: int) -> set[tuple[int, int]]:
    removed: set[tuple[int, int]] = set()
    left = {i: b.heads for i, b in enumerate(blocks)}
    for key in sorted(scores, key=lambda k: (scores[k], k)):
        if len(removed) >= count:
            break
        if left[key[0]] > 1:
            removed.add(key)
            left[key[0]] -= 1
    return removed


def _record(block: AttentionBlock, keep: list[int], energy: _Energy | None) -> dict:
    d_in = const_array(block.q.matmul.inputs[1]).shape[0]
    d_out = const_array(block.out.matmul.inputs[1]).shape[1]
    width, kept_width = block.heads * block.head_dim, len(keep) * block.head_dim

    def params(n: int) -> int:
        biases = sum(n for p in (block.q, block.k, block.v) if p.add is not None)
        return 3 * d_in * n + biases + n * d_out + (d_out if block.out.add is not None else 0)

    def macs(n: int) -> int | None:
        if energy is None:
            return None
        return energy.tokens * (3 * d_in * n + n * d_out + 2 * energy.keys * n)

    error = None
    if energy is not None and energy.total > 0:
        gone = [h for h in range(block.heads) if h not in keep]
        lost = float(energy.gram[np.ix_(gone, gone)].sum()) if gone else 0.0
        error = float(np.sqrt(max(lost, 0.0) / energy.total))
    return {
        "layer": block.name,
        "op_type": "Attention",
        "heads_before": block.heads,
        "heads_after": len(keep),
        "heads_removed": [h for h in range(block.heads) if h not in keep],
        "channels_before": width,
        "channels_after": kept_width,
        "params_before": params(width),
        "params_after": params(kept_width),
        "macs_before": macs(width),
        "macs_after": macs(kept_width),
        "error": error,
        "error_no_refit": error,
    }


def _remove(graph: ir.Graph, block: AttentionBlock, keep: list[int]) -> None:
    d = block.head_dim
    columns = np.concatenate([np.arange(h * d, (h + 1) * d) for h in keep])
    for proj in (block.q, block.k, block.v):
        set_constant(graph, proj.matmul, 1, const_array(proj.matmul.inputs[1])[:, columns])
        if proj.add is not None:
            bias = const_array(proj.add.inputs[proj.bias_index])
            set_constant(graph, proj.add, proj.bias_index, bias[..., columns])
    set_constant(graph, block.out.matmul, 1, const_array(block.out.matmul.inputs[1])[columns])
    for node in block.reshapes:
        _fix_reshape(graph, node, block, len(keep))
    for value in block.inner:
        value.shape = None


def _fix_reshape(graph: ir.Graph, node: ir.Node, block: AttentionBlock, heads: int) -> None:
    """Rewrite static head counts / widths in the shape a Reshape takes (constant or a Concat of pieces)."""
    entries = shape_entries(node.inputs[1])
    fixed = _fixed(entries, block, heads) if entries is not None else None
    if fixed is not None:
        set_shape_entries(graph, node, 1, fixed)


def _fixed(entries: list[int | None], block: AttentionBlock, heads: int) -> list[int] | None:
    out = list(entries)
    h, d, width = block.heads, block.head_dim, block.heads * block.head_dim
    if len(out) == 4 and out[-1] == d and out[-2] == h:
        out[-2] = heads
    elif len(out) == 4 and out[-1] == d and out[1] == h:
        out[1] = heads
    elif out and out[-1] == width:
        out[-1] = heads * d
    return out if out != entries else None
