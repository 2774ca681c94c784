"""``opset``: convert the model to another ai.onnx opset with onnx's version converter."""

from __future__ import annotations

import dataclasses

import onnx
import onnx.version_converter
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.errors import PassFailure, first_line
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.registry import register_pass

__all__ = ["OpsetPass"]

# Newest opset the installed onnx can convert to.
MAX_OPSET = onnx.defs.onnx_opset_version()


@register_pass
@dataclasses.dataclass(frozen=True)
class OpsetPass(Pass):
    """Rewrites every standard-domain node to ``version`` (up or down), e.g. to meet a
    format's minimum (per-channel QDQ needs 13) or a runtime's maximum.

    The converter works on protobuf, so this pass returns a new model (not in place).
    Nodes of other domains are left as they are.
    """

    name = "opset"
    summary = "Convert to another ai.onnx opset with onnx's version converter (exact)."
    in_place = False  # type: ignore[assignment]
    changes_input = False  # type: ignore[assignment]

    version: int = dataclasses.field(default=17, metadata={"doc": f"target ai.onnx opset (7..{MAX_OPSET})"})

    def __post_init__(self) -> None:
        if not 7 <= self.version <= MAX_OPSET:
            raise ValueError(f"version must be between 7 and {MAX_OPSET}, got {self.version}")

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        current = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
        if current == self.version:
            return PassResult(model.clone(), modified=False)  # not in place: a new model, even unchanged
        proto = ir.to_proto(model)
        try:
            converted = onnx.version_converter.convert_version(proto, self.version)
        except Exception as e:  # the converter raises RuntimeError or bare C++ errors
            reason = first_line(e)
            raise PassFailure(
                f"pass 'opset': onnx's version converter cannot take this model from opset {current} to {self.version}: {reason}",
                "choose a version that has every op the model uses (often: no lower than the model's own)",
            ) from e
        return PassResult(
            ir.from_proto(converted),
            modified=True,
            counts={"from_opset": int(current or 0), "to_opset": self.version},
        )
