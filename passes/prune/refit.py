"""Least-squares refit of the layers that lost input channels, on calibration activations.

For a consumer with original weights ``W`` (as a matrix over im2col patches: Cout x
Cin*kh*kw, or Cout x K for Gemm/MatMul) and bias ``b``, the target is what it computed in the
original model, ``Y = W P + b`` with P the original input's patches. After pruning it sees
``P'``: fewer channels, and inputs shifted by every earlier prune. Layers are refit in
dependency order (a wave of layers at a time, none feeding another), each on the inputs the
already-refit pruned model gives it, so it also corrects what earlier layers got wrong:

    [W' b'] = argmin ||Y - W' P' - b'||^2 + alpha * ||D (W' b' - prior)||^2

solved in closed form from accumulated statistics (float64 normal equations). The ridge is
scale-free (D^2 = diag of P'P^T) and pulls toward ``prior``, the sliced weights with the
removed channels' calibration mean contribution folded into the bias, not toward zero: with
few calibration rows per weight a plain least-squares fit overfits. ``alpha`` is chosen per
layer by two-fold cross-validation over the calibration feeds.

Without refit (``apply=False``) each layer gets ``prior`` itself: the bias correction that
costs nothing and that the allocation's distortion measurement assumes; its error is
``error_no_refit`` in both modes, so the two compare the least-squares fit with it.

Rows (output positions) are subsampled, evenly over the feeds, to about
``max(ROW_BUDGET, ROWS_PER_WEIGHT * K)`` per layer: enough for the normal equations, and the
cost of the Gram products stays proportional to K^2 rather than to the image size. ConvTranspose,
grouped and 1-D/3-D convolution consumers are not refit (only sliced); their error is not
measured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.measure import Measurements
from onnxsmith.passes.prune import im2col
from onnxsmith.passes.prune.channel_apply import set_constant
from onnxsmith.passes.prune.channel_groups import WeightLayer, const_array

__all__ = ["LayerFit", "Original", "refit_layers", "snapshot"]

logger = logging.getLogger(__name__)

ROW_BUDGET = 8192  # rows per layer over all feeds, at least ROWS_PER_WEIGHT per fitted weight column
ROWS_PER_WEIGHT = 8
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_ALPHA = 1e-2


@dataclass
class Original:
    """A consumer's weights before pruning, as a matrix, with where its bias lives."""

    matrix: np.ndarray  # [Cout, K] (conv: K = Cin * kernel size)
    bias: np.ndarray | None  # [Cout]
    taps: int  # kernel positions per input channel (1 for Gemm/MatMul)
    bias_node: ir.Node  # the node holding the bias (the layer, or MatMul's following Add)
    bias_index: int | None


@dataclass
class LayerFit:
    error: float  # relative RMS error of the layer's output after refit (the same as no_refit without it)
    error_no_refit: float
    alpha: float | None


def snapshot(layer: WeightLayer) -> Original | None:
    """The layer's weights as a matrix, before pruning (None for layers that are never refit)."""
    node = layer.node
    weight = const_array(node.inputs[layer.weight_index]).astype(np.float64)
    if layer.kind == "conv" and not layer.depthwise and _group(node) == 1 and weight.ndim == 4:
        bias = const_array(node.inputs[2]) if len(node.inputs) > 2 else None
        return Original(weight.reshape(weight.shape[0], -1), _vec(bias), int(np.prod(weight.shape[2:])), node, 2)
    if layer.kind == "gemm":
        matrix = weight if _int(node, "transB") else weight.T
        bias = const_array(node.inputs[2]) if len(node.inputs) > 2 else None
        if bias is not None and bias.size != matrix.shape[0]:
            return None  # a bias broadcast over rows as well: leave it alone
        return Original(matrix, _vec(bias), 1, node, 2)
    if layer.kind == "matmul":
        add, index = _bias_add(node, weight.shape[1])
        bias = const_array(add.inputs[index]) if add is not None else None
        return Original(weight.T, _vec(bias), 1, add or node, index)
    return None


def refit_layers(
    measure: Measurements,
    pruned: ir.Model,
    original: ir.Model,
    layers: list[WeightLayer],
    originals: dict[int, Original],
    kept: dict[str, list[int]],
    feeds: list[dict[str, np.ndarray]],
    *,
    apply: bool = True,
    seed: int = 0,
) -> dict[int, LayerFit]:
    """Refit (``apply``) or only measure each layer in ``layers``; id(node) -> its fit."""
    fits: dict[int, LayerFit] = {}
    rng = np.random.default_rng(seed)
    reference = _reference(measure, original, sorted({layer.node.inputs[0].name for layer in layers}), feeds)
    for wave in _waves(pruned, layers):
        readers: dict[str, list[WeightLayer]] = {}
        for layer in wave:
            readers.setdefault(layer.node.inputs[0].name, []).append(layer)
        names = sorted(readers)
        if reference is None:
            pairs = measure.paired(original, pruned, names, feeds, optimize=True)
        else:
            pairs = ((f, reference[f], after) for f, after in measure.stream(pruned, names, feeds, optimize=True))
        stats = {id(layer.node): _Stats() for layer in wave}
        for f, before, after in pairs:
            for name in after:
                for layer in readers[name]:
                    orig = originals[id(layer.node)]
                    per_feed = -(-max(ROW_BUDGET, ROWS_PER_WEIGHT * orig.matrix.shape[1]) // len(feeds))
                    rows = im2col.rows(layer, before[name], rng, per_feed)
                    full = im2col.patches(layer, before[name], rows)
                    cut = im2col.patches(layer, after[name], rows)
                    out = kept[layer.out_slot] if layer.out_slot in kept else slice(None)
                    y = full @ orig.matrix[out].T.astype(np.float32)
                    if orig.bias is not None:
                        y += orig.bias[out].astype(np.float32)
                    stats[id(layer.node)].add(f % 2, _with_ones(cut, orig.bias_index is not None), y, full.mean(axis=0), len(rows))
        for layer in wave:
            fits[id(layer.node)] = _fit(pruned.graph, layer, originals[id(layer.node)], kept, stats[id(layer.node)], apply)
    return fits


def _reference(measure: Measurements, model: ir.Model, names: list[str], feeds: list[dict[str, np.ndarray]],
               budget: int = 1 << 30) -> dict[int, dict[str, np.ndarray]] | None:
    """The original model's activations per feed, read once when they fit ``budget`` bytes
    (None otherwise: each wave then reads them again beside the pruned model's)."""
    arrays: dict[int, dict[str, np.ndarray]] = {}
    used = 0
    for f, part in measure.stream(model, names, feeds, optimize=True):
        used += sum(a.nbytes for a in part.values())
        if used > budget:
            return None
        arrays.setdefault(f, {}).update(part)
    return arrays


class _Stats:
    """Normal-equation sums, per fold: P'^T P', P'^T Y, ||Y||^2, and the original inputs' mean."""

    def __init__(self) -> None:
        self.gram: list[np.ndarray | float] = [0.0, 0.0]
        self.cross: list[np.ndarray | float] = [0.0, 0.0]
        self.energy = [0.0, 0.0]
        self.mean_sum: np.ndarray | float = 0.0
        self.rows = 0

    def add(self, fold: int, p: np.ndarray, y: np.ndarray, mean: np.ndarray, rows: int) -> None:
        # float32 products (per feed), float64 sums (across feeds)
        self.gram[fold] = self.gram[fold] + (p.T @ p).astype(np.float64)
        self.cross[fold] = self.cross[fold] + (p.T @ y).astype(np.float64)
        self.energy[fold] += float(np.square(y, dtype=np.float64).sum())
        self.mean_sum = self.mean_sum + mean.astype(np.float64) * rows
        self.rows += rows


def _fit(graph: ir.Graph, layer: WeightLayer, orig: Original, kept, stats: _Stats, apply: bool) -> LayerFit:
    out = kept[layer.out_slot] if layer.out_slot in kept else list(range(orig.matrix.shape[0]))
    columns = _columns(kept[layer.in_slot], orig.taps)
    has_bias = orig.bias_index is not None
    sliced = orig.matrix[out][:, columns]
    bias = orig.bias[out] if orig.bias is not None else np.zeros(len(out))
    # without refit: the sliced weights, the removed channels' mean contribution folded into the bias
    corrected = np.concatenate([sliced, bias[:, None]], axis=1) if has_bias else sliced
    if has_bias:
        removed = np.setdiff1d(np.arange(orig.matrix.shape[1]), columns)
        corrected[:, -1] += orig.matrix[out][:, removed] @ (stats.mean_sum / max(stats.rows, 1))[removed]
    gram, cross, energy = _total(stats.gram), _total(stats.cross), sum(stats.energy)
    no_refit = _error(corrected, gram, cross, energy)
    fitted, error, alpha = corrected, no_refit, None
    if apply:
        if all(isinstance(g, np.ndarray) for g in stats.gram):
            alpha = _choose_alpha([_Ridge(stats.gram[i], stats.cross[i], corrected) for i in (0, 1)], stats)
        else:
            alpha = DEFAULT_ALPHA
        solution = _Ridge(gram, cross, corrected).solve(alpha)
        logger.debug("refit %s: alpha %g", layer.node.name, alpha)
        if _error(solution, gram, cross, energy) < no_refit:  # never worse on its own calibration data
            fitted, error = solution, _error(solution, gram, cross, energy)
    _write(graph, layer, orig, fitted, has_bias)
    return LayerFit(error, no_refit, alpha)


def _choose_alpha(folds: list[_Ridge], stats: _Stats) -> float:
    """The ridge with the lowest error on the other half of the feeds (two folds)."""
    best, best_error = DEFAULT_ALPHA, np.inf
    for alpha in ALPHAS:
        total = 0.0
        for a, b in ((0, 1), (1, 0)):
            fitted = folds[a].solve(alpha)
            total += _error(fitted, stats.gram[b], stats.cross[b], stats.energy[b]) ** 2 * stats.energy[b]
        if total < best_error:
            best, best_error = alpha, total
    return best


class _Ridge:
    """argmin_B ||Y - B P||^2 + alpha ||(B - prior) D||^2 with D^2 = diag(P P^T).

    Solved in the scaled basis, ``(D^-1 G D^-1 + alpha I) D B^T = D^-1 C + alpha D prior^T``,
    where every diagonal entry is 1 so one ``alpha`` means the same for every layer.
    """

    def __init__(self, gram: np.ndarray, cross: np.ndarray, prior: np.ndarray) -> None:
        diag = np.diag(gram)
        self.scale = np.sqrt(np.maximum(diag, 1e-12 * max(float(diag.max()), 1e-30)))
        self.normed = gram / self.scale[:, None] / self.scale[None, :]
        self.data = cross / self.scale[:, None]
        self.anchor = prior.T * self.scale[:, None]

    def solve(self, alpha: float) -> np.ndarray:
        system = self.normed + alpha * np.eye(len(self.scale))
        return (np.linalg.solve(system, self.data + alpha * self.anchor) / self.scale[:, None]).T


def _error(b: np.ndarray, gram: np.ndarray, cross: np.ndarray, energy: float) -> float:
    """Relative RMS error sqrt(||Y - B P||^2 / ||Y||^2) from the sums."""
    residual = energy - 2.0 * float(np.sum(b.T * cross)) + float(np.sum((b @ gram) * b))
    return float(np.sqrt(max(residual, 0.0) / max(energy, 1e-30)))


def _total(parts: list) -> np.ndarray:
    return parts[0] + parts[1]


def _write(graph: ir.Graph, layer: WeightLayer, orig: Original, fitted: np.ndarray, has_bias: bool) -> None:
    node = layer.node
    weight = fitted[:, :-1] if has_bias else fitted
    current = const_array(node.inputs[layer.weight_index])
    if layer.kind == "conv":
        new = weight.reshape(current.shape)
    elif layer.kind == "gemm" and _int(node, "transB"):
        new = weight
    else:
        new = weight.T
    set_constant(graph, node, layer.weight_index, new.astype(current.dtype))
    if not has_bias:
        return
    holder, index = orig.bias_node, orig.bias_index
    old = const_array(holder.inputs[index]) if index < len(holder.inputs) else None
    bias = fitted[:, -1]
    if old is None:
        if len(holder.inputs) <= index:
            holder.resize_inputs(index + 1)
        set_constant(graph, holder, index, bias.astype(current.dtype))
    else:
        shape = list(old.shape)
        if shape:
            shape[-1] = bias.size
        set_constant(graph, holder, index, bias.reshape(shape).astype(old.dtype))


def _with_ones(p: np.ndarray, bias: bool) -> np.ndarray:
    return np.concatenate([p, np.ones((p.shape[0], 1), p.dtype)], axis=1) if bias else p


def _columns(channels: list[int], taps: int) -> np.ndarray:
    return (np.asarray(channels, dtype=np.int64)[:, None] * taps + np.arange(taps)[None, :]).ravel()


# --- scheduling and small helpers ----------------------------------------------------------


def _waves(model: ir.Model, layers: list[WeightLayer]) -> list[list[WeightLayer]]:
    """``layers`` in dependency order, batched so that no layer of a wave feeds another."""
    wanted = {id(layer.node): layer for layer in layers}
    depth: dict[int, int] = {}
    for node in model.graph:
        d = 0
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None:
                d = max(d, depth.get(id(producer), 0) + (1 if id(producer) in wanted else 0))
        depth[id(node)] = d
    waves: dict[int, list[WeightLayer]] = {}
    for layer in layers:
        waves.setdefault(depth[id(layer.node)], []).append(layer)
    return [waves[d] for d in sorted(waves)]


def _bias_add(node: ir.Node, width: int) -> tuple[ir.Node | None, int | None]:
    """The Add right after a MatMul that adds a constant [N] bias, and the bias's input index."""
    uses = node.outputs[0].uses()
    if len(uses) != 1 or uses[0].node.op_type != "Add" or node.outputs[0].is_graph_output():
        return None, None
    add = uses[0].node
    other = 1 - uses[0].idx
    bias = const_array(add.inputs[other])
    if bias is None or bias.size != width or bias.shape[-1] != width:
        return None, None
    return add, other


def _vec(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array.astype(np.float64).reshape(-1)


def _group(node: ir.Node) -> int:
    attr = node.attributes.get("group")
    return 1 if attr is None else int(attr.value)


def _int(node: ir.Node, name: str) -> int:
    attr = node.attributes.get(name)
    return 0 if attr is None else int(attr.value)
