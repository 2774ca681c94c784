"""``lowrank``: factor MatMul/Gemm weights W [k, n] into A [k, r] and B [r, n] where it pays.

1. A layer ``y = x @ W (+ bias)`` of the main graph with a constant 2-D W is a candidate
   (MatMul; Gemm with transA=0), unless excluded or already one of this pass's factors.
2. Whitening S. ``method=svd``: S = I, the best rank-r approximation of the weights alone.
   ``method=asvd`` (activation-aware, the whitening of SVD-LLM, Wang et al. 2024): S = L^T
   with L L^T = X^T X + dI, X the layer's input over every calibration token, d a small
   damping (1% of the mean diagonal). Then ``||x W - x W_r||^2`` summed over the
   calibration data is ``||S (W - W_r)||_F^2`` (less d ||W - W_r||^2), so truncating the
   SVD of S W gives the rank-r weights with the least output error on those inputs
   rather than the least weight error.
3. Rank. ``energy=e``: per layer, the smallest r whose singular values of S W keep a
   fraction e of their sum of squares (for asvd, of the layer's output energy on the
   calibration data). ``param_budget=p`` (overrides energy): ranks allocated across layers,
   starting at 1 each, adding singular values by the largest share of their layer's
   energy per parameter (k + n each) while the factored layers hold at most p times the
   parameters they had dense.
4. A layer is factored only when it pays off, r (k + n) < k n, i.e. r < k n / (k + n)
   (counting the bias the shift of rule 6 may add).
5. A = S^-1 U_r Sigma_r^1/2, B = Sigma_r^1/2 V_r^T. ``MatMul(x, W)`` becomes
   ``MatMul(MatMul(x, A), B)``; a Gemm keeps alpha, beta, transB (B stored to match) and
   its bias. The second node keeps the layer's name and output tensor.
6. ``center=true`` (asvd): the Gram matrix is taken about the calibration mean mu of the
   input (its scatter matrix), so the rank goes to how inputs vary, not to their common
   offset (large in transformer activations), and the mean's part of the output stays
   exact: ``mu (W - A B)`` is added as a bias (into a Gemm's C, else an Add after).

Each factored layer is reported with its rank, parameters and MACs before/after and its
own output error on the calibration data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxsmith.blas import one_blas_thread
from onnxsmith.context import Context
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.passes.prune.layer_error import Shadow, copy_node, matmul_macs, measure_layers
from onnxsmith.passes.prune.layers import WeightedLayer, constant_value, drop_if_unused, find_layers
from onnxsmith.registry import register_pass
from onnxsmith.statistics import ChannelSums, TensorStats

__all__ = ["LowRankPass", "Factorization", "factorize", "whitening"]

_OPS = ("MatMul", "Gemm")
# d of rule 2, relative to the mean diagonal of X^T X (GPTQ's usual 1%): directions the
# calibration inputs never took still count a little, so a small calibration set is not
# fitted alone (MiniLM, 32 sentences, param_budget=0.7: cosine 0.787 with 1e-2, 0.782 with 1e-6).
DAMPING = 1e-2


@register_pass
@dataclasses.dataclass(frozen=True)
class LowRankPass(Pass):
    name = "lowrank"
    summary = "Factor MatMul/Gemm weights into two thin ones (activation-aware SVD) where the rank needed pays off."
    exact = False

    energy: float = dataclasses.field(
        default=0.95, metadata={"doc": "per layer, keep this fraction of the output energy (asvd) or weight energy (svd)"})
    # (not ``params``: Pass.params() returns the options)
    param_budget: float | None = dataclasses.field(
        default=None, metadata={"doc": "instead of energy: keep at most this fraction of the candidate layers' parameters"})
    method: Literal["asvd", "svd"] = dataclasses.field(
        default="asvd", metadata={"doc": "asvd: whiten by calibration activations (needs --calib); svd: weights only"})
    center: bool = dataclasses.field(
        default=True, metadata={"doc": "asvd: factor the inputs' spread about their mean; the mean's output kept exact in a bias"})
    ops: tuple[str, ...] = dataclasses.field(default=_OPS, metadata={"doc": "op types to factor (MatMul, Gemm)"})
    exclude: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "node names to leave dense"})

    def __post_init__(self) -> None:
        if not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be above 0 and at most 1, got {self.energy}")
        if self.param_budget is not None and not 0.0 < self.param_budget < 1.0:
            raise ValueError(f"param_budget must be above 0 and below 1 (the fraction of parameters to keep), got {self.param_budget}")
        unknown = [op for op in self.ops if op not in _OPS]
        if unknown:
            raise ValueError(f"lowrank cannot factor op '{unknown[0]}'; ops may be: {', '.join(_OPS)}")

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        calibration = ctx.require_calibration("lowrank{method=asvd}") if self.method == "asvd" else ctx.calibration
        feeds = calibration.feeds() if calibration is not None else []
        layers, skipped = find_layers(model, self.ops, self.exclude)
        skipped += [f"{layer.name}: already a low-rank factor" for layer in layers if _is_factor(layer)]
        layers = [layer for layer in layers if not _is_factor(layer)]  # running twice changes nothing more
        notes = [f"skipped {s}" for s in skipped[:20]]
        stats = {}
        if self.method == "asvd" and layers:
            stats = ctx.measure.reduce(model, {layer.input_name: ChannelSums(-1, gram=True) for layer in layers}, feeds)
        with one_blas_thread():
            factors = [factorize(layer, stats.get(layer.input_name), center=self.center) for layer in layers]
        _choose_ranks(factors, self.energy, self.param_budget)
        chosen = [f for f in factors if 0 < f.rank <= f.max_rank]
        rule = f"budget {self.param_budget}" if self.param_budget is not None else f"energy {self.energy}"
        notes += [f"kept dense {f.layer.name}: rank {f.rank} for {rule} does not pay off "
                  f"(needs < {f.k * f.n / (f.k + f.n):.1f})" for f in factors if not 0 < f.rank <= f.max_rank][:20]
        if not chosen:
            return PassResult(model, modified=False, counts={"layers_factored": 0, "layers_dense": len(factors)},
                              notes=notes or ["no MatMul/Gemm with a constant weight"])

        with one_blas_thread():
            split = {f.layer.name: f.factors() for f in chosen}
        shadows = {name: _shadow(*parts) for name, parts in split.items()}
        measures = measure_layers(ctx.measure, model, shadows, feeds) if feeds else {}
        if not feeds:
            notes.append("no calibration data: per-layer errors and MACs are not measured (give --calib)")
        records = [_record(f, measures.get(f.layer.name)) for f in chosen]
        for f in chosen:
            _rewrite(model, f.layer, *split[f.layer.name])
        saved = sum(r["params_before"] - r["params_after"] for r in records)
        dense = sum(r["params_before"] for r in records)
        notes.insert(0, f"factored {len(chosen)} of {len(factors)} candidate layers ({self.method}): "
                        f"their parameters {dense:,} -> {dense - saved:,} ({saved:,} saved)")
        counts = {"layers_factored": len(chosen), "layers_dense": len(factors) - len(chosen), "params_saved": saved}
        return PassResult(model, modified=True, counts=counts, notes=notes, layers=records)


@dataclass(eq=False)
class Factorization:
    """The SVD of S W for one layer (W as [k, n], ``x @ W``) and the rank chosen for it."""

    layer: WeightedLayer
    whiten: np.ndarray | None  # S (upper triangular), None for plain SVD
    mean: np.ndarray | None  # mu, when factoring about the input mean
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    rank: int = 0

    @property
    def k(self) -> int:
        return self.u.shape[0]

    @property
    def n(self) -> int:
        return self.vt.shape[1]

    @property
    def extra(self) -> int:
        """Parameters factoring adds besides A and B: the shift's bias, where there was none."""
        return self.n if self.mean is not None and not self.layer.bias_size() else 0

    @property
    def max_rank(self) -> int:
        """The largest rank that still saves parameters: r (k + n) + extra < k n."""
        return (self.k * self.n - self.extra - 1) // (self.k + self.n)

    def energy(self, rank: int) -> float:
        power = self.s**2
        return float(power[:rank].sum() / power.sum()) if power.sum() > 0 else 1.0

    def factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A [k, r], B [r, n] and the shift mu (W - A B) [n] (None when not centered):
        x @ A @ B + shift is the rank-r approximation of x @ W."""
        root = np.sqrt(self.s[: self.rank])
        a = self.u[:, : self.rank] * root
        if self.whiten is not None:
            a = np.linalg.solve(self.whiten, a)
        b = root[:, None] * self.vt[: self.rank]
        shift = None
        if self.mean is not None:
            shift = (self.mean @ self.layer.matrix().T.astype(np.float64) - (self.mean @ a) @ b).astype(np.float32)
        return a.astype(np.float32), b.astype(np.float32), shift


def whitening(gram: np.ndarray, damping: float | None = None) -> np.ndarray:
    """S = L^T with L L^T = gram + d I, d = ``damping`` times the mean diagonal (raised tenfold
    until the Cholesky factorization succeeds)."""
    scale = float(np.mean(np.diag(gram))) or 1.0
    for d in (DAMPING if damping is None else damping) * 10.0 ** np.arange(6):
        try:
            return np.linalg.cholesky(gram + d * scale * np.eye(len(gram))).T
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the activation Gram matrix is not positive definite even with strong damping")


def factorize(layer: WeightedLayer, stats: TensorStats | None, *, center: bool = True) -> Factorization:
    """The SVD of S W, S the whitening of the input's Gram matrix in ``stats`` (about its
    mean when ``center``), or the identity without ``stats``."""
    w = layer.matrix().T.astype(np.float64)  # [k, n]
    whiten = mean = None
    if stats is not None:
        gram = stats.gram
        if center:
            mean = stats.mean
            gram = gram - stats.count * np.outer(mean, mean)
        whiten = whitening(gram)
    u, s, vt = np.linalg.svd(whiten @ w if whiten is not None else w, full_matrices=False)
    return Factorization(layer, whiten, mean, u, s, vt)


def _choose_ranks(factors: list[Factorization], energy: float, params: float | None) -> None:
    if params is None:
        for f in factors:
            power = np.cumsum(f.s**2)
            target = energy * power[-1] * (1 - 1e-10)  # energy=1: every direction above float noise
            f.rank = int(np.searchsorted(power, target) + 1) if power[-1] > 0 else 0
        return
    factors = [f for f in factors if f.max_rank >= 1]  # the others stay at rank 0: dense
    budget = params * sum(f.k * f.n for f in factors)
    for f in factors:
        f.rank = 1
    spent = sum(f.k + f.n + f.extra for f in factors)
    gains = [(float(f.s[i] ** 2 / max((f.s**2).sum(), 1e-300)) / (f.k + f.n), j, i)
             for j, f in enumerate(factors) for i in range(1, min(f.max_rank, len(f.s)))
             if f.s[i] ** 2 > 1e-10 * (f.s**2).sum()]  # directions with no energy are not worth a parameter
    closed: set[int] = set()
    for _, j, i in sorted(gains, key=lambda g: -g[0]):
        f = factors[j]
        if j in closed or i != f.rank:
            continue
        if spent + f.k + f.n > budget:
            closed.add(j)  # its next singular values cost the same: none fits
            continue
        f.rank += 1
        spent += f.k + f.n


def _factored(model: ir.Model, node: ir.Node, a: np.ndarray, b: np.ndarray, shift: np.ndarray | None, tag: str) -> list[ir.Node]:
    """The nodes computing ``node``'s output from its input through A and B (and the shift);
    new initializers are added to ``model``. The last node's first output stands for the layer's."""
    name = node.name + tag
    first = ir.Node("", "MatMul", [node.inputs[0], constant_value(model, a, f"{name}.lowrank_a")], num_outputs=1,
                    name=f"{name}/lowrank_a")
    first.outputs[0].name = f"{node.outputs[0].name}{tag}.lowrank_a"
    inputs = [first.outputs[0], constant_value(model, _stored_b(node, b), f"{name}.lowrank_b"), *node.inputs[2:]]
    nodes = [first]
    if shift is not None and node.op_type == "Gemm" and (len(inputs) < 3 or inputs[2] is None or inputs[2].const_value is not None):
        alpha, beta = _gemm_scale(node, "alpha"), _gemm_scale(node, "beta")
        bias = inputs[2].const_value.numpy() if len(inputs) > 2 and inputs[2] is not None else np.zeros_like(shift)
        inputs[2:3] = [constant_value(model, (bias + alpha / beta * shift).astype(np.float32), f"{name}.lowrank_bias")]
        shift = None
    second = copy_node(node, inputs, name, output=f"{node.outputs[0].name}{tag}.lowrank_b")
    nodes.append(second)
    if shift is not None:
        add = ir.Node("", "Add", [second.outputs[0], constant_value(model, shift, f"{name}.lowrank_shift")], num_outputs=1,
                      name=f"{name}/lowrank_shift")
        add.outputs[0].name = f"{node.outputs[0].name}{tag}.lowrank_shift"
        nodes.append(add)
    return nodes


def _is_factor(layer: WeightedLayer) -> bool:
    return any(tag in (layer.node.inputs[1].name or "") for tag in (".lowrank_a", ".lowrank_b"))


def _gemm_scale(node: ir.Node, name: str) -> float:
    attr = node.attributes.get(name)
    return float(attr.value) if attr is not None else 1.0


def _stored_b(node: ir.Node, b: np.ndarray) -> np.ndarray:
    transposed = node.op_type == "Gemm" and node.attributes.get("transB") is not None and node.attributes["transB"].value
    return np.ascontiguousarray(b.T if transposed else b)


def _shadow(a: np.ndarray, b: np.ndarray, shift: np.ndarray | None) -> Shadow:
    def build(model: ir.Model, node: ir.Node) -> ir.Value:
        nodes = _factored(model, node, a, b, shift, ".shadow")
        model.graph.extend(nodes)
        return nodes[-1].outputs[0]

    return build


def _rewrite(model: ir.Model, layer: WeightedLayer, a: np.ndarray, b: np.ndarray, shift: np.ndarray | None) -> None:
    node = layer.node
    old = [v for v in node.inputs[1:] if v is not None]
    nodes = _factored(model, node, a, b, shift, "")
    ir.convenience.replace_nodes_and_values(model.graph, node, [node], nodes, [node.outputs[0]], [nodes[-1].outputs[0]])
    for value in old:
        drop_if_unused(model, value)


def _record(f: Factorization, measure) -> dict:
    bias = f.layer.bias_size()
    record = {
        "layer": f.layer.name,
        "op_type": f.layer.op_type,
        "rank": f.rank,
        "full_rank": min(f.k, f.n),
        "energy": round(f.energy(f.rank), 6),
        "params_before": f.k * f.n + bias,
        "params_after": f.rank * (f.k + f.n) + bias + f.extra,
        "macs_before": None,
        "macs_after": None,
        "error": None,
    }
    if measure is not None:
        tokens = measure.output_size / f.n
        record.update(macs_before=matmul_macs(f.k, measure.output_size),
                      macs_after=matmul_macs(f.k, tokens * f.rank) + matmul_macs(f.rank, measure.output_size),
                      error=round(measure.error, 6))
    return record
