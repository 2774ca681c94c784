"""``ort-bake``: let ONNX Runtime apply its own graph optimizations offline and keep the result.

ONNX Runtime optimizes every model when a session starts; saving that result
(``SessionOptions.optimized_model_filepath``) moves the work offline and keeps fusions our
rules do not have. The baked graph contains ops of the target execution provider (and at
``level=all``, layouts chosen for this CPU), so the artifact then runs only there: the
pass says so in the report's warnings.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Literal

import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.context import Context
from onnxsmith.errors import RecipeError
from onnxsmith.graph_stats import count_nodes
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.registry import register_pass
from onnxsmith.runtime import save_runtime_graph

__all__ = ["OrtBakePass"]

_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@register_pass
@dataclasses.dataclass(frozen=True)
class OrtBakePass(Pass):
    name = "ort-bake"
    summary = "Save ONNX Runtime's own offline graph optimizations for the target provider (artifact then runs only there)."
    in_place = False  # type: ignore[assignment]
    changes_input = False  # type: ignore[assignment]
    atol = 1e-4  # ONNX Runtime's fused kernels reorder float arithmetic

    level: Literal["basic", "extended", "all"] = dataclasses.field(
        default="extended", metadata={"doc": "ONNX Runtime optimization level; 'all' adds CPU-specific layouts"}
    )

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        provider = getattr(ctx.backend, "provider", None) if ctx.backend is not None else None
        if provider is None:
            name = ctx.backend.name if ctx.backend is not None else "none"
            raise RecipeError(f"ort-bake needs an ONNX Runtime backend, not '{name}'", "use --backend cpu (or cuda/tensorrt)")
        with tempfile.TemporaryDirectory(prefix="onnxsmith-bake-") as tmp:
            target = Path(tmp) / "baked.onnx"
            save_runtime_graph(model, target, providers=[provider], level=_LEVELS[self.level])
            baked = ir.load(target)
            ir.external_data.load_to_model(baked)
        baked.metadata_props.update(model.metadata_props)
        return PassResult(
            baked,
            modified=True,
            counts={"nodes_removed": count_nodes(model) - count_nodes(baked)},
            warnings=[f"the artifact was optimized by ONNX Runtime (level={self.level}) for {provider} and now runs only on that provider"
                      + (" on CPUs like this one" if self.level == "all" else "")],
        )
