"""``prune``: the options of every pruning method, and the dispatch to the method's module.

One pass, one option set, so recipes read ``prune{method=wanda,ratio=0.5}`` or
``prune{method=channel,ratio=0.3,allocation=uniform}``. Unstructured methods (magnitude,
wanda, nm) live in unstructured.py; structured ones (channel, heads), which remove weights
for real and rewrite the tensors that depend on them, in channel.py and heads.py, imported
only when chosen. Every method reports, per layer, its sparsity, parameters and MACs
before/after and its own output error on calibration data. Unstructured methods prune the
main graph's layers; weights inside If/Loop/Scan bodies and model-local functions are
left as they are.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Literal

import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.errors import RecipeError
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.passes.prune.layers import SUPPORTED_OPS
from onnxsmith.passes.prune.unstructured import prune_unstructured
from onnxsmith.registry import register_pass

__all__ = ["METHODS", "PrunePass"]

Method = Literal["magnitude", "wanda", "nm", "channel", "heads"]
METHODS: dict[str, str] = {
    "magnitude": "zero the smallest |W|, per layer or globally (no data needed)",
    "wanda": "zero the lowest |W| * ||input feature||, per output row (Sun et al. 2023; needs --calib)",
    "nm": "N:M patterns (2:4 by default) along the reduction axis, for sparse tensor cores",
    "channel": "remove Conv output channels and MatMul/Gemm hidden units, with least-squares refit",
    "heads": "remove attention heads (Q/K/V and output projection slices) of recognised attention blocks",
}
# structured method -> (module, function), imported only when the method is chosen
_STRUCTURED: dict[str, tuple[str, str]] = {
    "channel": ("onnxsmith.passes.prune.channel", "prune_channels"),
    "heads": ("onnxsmith.passes.prune.heads", "prune_heads"),
}


@register_pass
@dataclasses.dataclass(frozen=True)
class PrunePass(Pass):
    name = "prune"
    summary = "Remove weights: unstructured (magnitude, wanda), N:M sparsity, or channels/heads for real; reports error per layer."
    exact = False

    method: Method = dataclasses.field(default="magnitude", metadata={"doc": "magnitude | wanda | nm | channel | heads"})
    ratio: float = dataclasses.field(default=0.5, metadata={"doc": "fraction of weights (channels, heads) to remove, 0 <= ratio < 1"})
    scope: Literal["layer", "global"] = dataclasses.field(default="layer", metadata={"doc": "magnitude: one threshold per layer, or one for all layers"})
    n: int = dataclasses.field(default=2, metadata={"doc": "nm: weights kept in every group of m"})
    m: int = dataclasses.field(default=4, metadata={"doc": "nm: group length along the reduction axis"})
    importance: Literal["l2", "activation"] = dataclasses.field(
        default="activation", metadata={"doc": "nm/channel/heads: rank by weight norm, or weighted by calibration activations"})
    allocation: Literal["adaptive", "uniform"] = dataclasses.field(
        default="adaptive", metadata={"doc": "channel: per-layer ratios from measured distortion, or the same ratio everywhere"})
    refit: bool = dataclasses.field(default=True, metadata={"doc": "channel: least-squares refit of the consumer layer after removal"})
    ops: tuple[str, ...] = dataclasses.field(default=("MatMul", "Gemm", "Conv"), metadata={"doc": "op types to prune (MatMul, Gemm, Conv, FusedConv)"})
    exclude: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "node names to leave alone"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be at least 0 and below 1 (the fraction to remove), got {self.ratio}")
        if not 1 <= self.n < self.m:
            raise ValueError(f"nm needs 1 <= n < m, got n={self.n} m={self.m}")
        if self.scope == "global" and self.method != "magnitude":
            raise ValueError(f"scope=global applies to method=magnitude only ({self.method} allocates per row, group or layer)")
        unknown = [op for op in self.ops if op not in SUPPORTED_OPS]
        if unknown:
            raise ValueError(f"prune cannot handle op '{unknown[0]}'; ops may be: {', '.join(SUPPORTED_OPS)}")

    @classmethod
    def catalogue(cls) -> dict[str, str]:
        return dict(METHODS)

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        if self.method not in _STRUCTURED:
            return prune_unstructured(self, model, ctx)
        if self.importance == "activation":
            ctx.require_calibration(f"prune{{method={self.method},importance=activation}}")
        module_name, function = _STRUCTURED[self.method]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            raise RecipeError(f"prune method={self.method} is not available in this build ({module_name} is missing)",
                              "choose method=magnitude, wanda or nm") from None
        kwargs: dict = {"ratio": self.ratio, "importance": self.importance}
        if self.method == "channel":
            kwargs.update(allocation=self.allocation, refit=self.refit)
        result = getattr(module, function)(model, ctx, **kwargs)
        if self.exclude or self.ops != ("MatMul", "Gemm", "Conv"):
            result.notes.append(f"ops and exclude apply to magnitude, wanda and nm; method={self.method} chooses its own layers")
        return result
