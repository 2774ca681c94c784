"""``shapes``: pin dynamic input dims to fixed sizes, so more shape arithmetic folds away.

``shapes{x=1x3x640x640}`` or, in a recipe, ``- shapes: {x: 1x3x640x640}``; ``?`` keeps a
dim dynamic (``input_ids=1x?``). The artifact then accepts only those sizes: the pass is
exact on inputs of the pinned shape, and evaluation data must have it.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
import onnxscript.optimizer

from onnxsmith import folding_guards
from onnxsmith.context import Context
from onnxsmith.errors import DataError, RecipeError
from onnxsmith.graph_stats import graph_signature
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.registry import register_pass
from onnxsmith.shape_inference import infer_shapes

__all__ = ["ShapesPass"]


def _parse(text: str) -> tuple[int | None, ...]:
    dims = []
    for part in str(text).lower().split("x"):
        if part in ("?", "-1"):
            dims.append(None)
        elif part.isdigit() and int(part) > 0:
            dims.append(int(part))
        else:
            raise ValueError(f"bad shape '{text}': write dims separated by x, '?' to keep one dynamic")
    return tuple(dims)


@register_pass
@dataclasses.dataclass(frozen=True)
class ShapesPass(Pass):
    name = "shapes"
    summary = "Pin dynamic input dims (shapes{x=1x3x640x640}) and fold the shape arithmetic that depended on them."
    extra_options = "inputs"  # unknown option names are input names

    inputs: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"doc": "input name -> dims, e.g. x=1x3x640x640"})

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("give at least one input, e.g. shapes{x=1x3x640x640}")
        for text in self.inputs.values():
            _parse(text)

    def input_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {name: _parse(text) for name, text in self.inputs.items()}

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        before = graph_signature(model)
        by_name = {v.name: v for v in model.graph.inputs}
        pinned = 0
        for name, dims in self.input_shapes().items():
            value = by_name.get(name)
            if value is None:
                raise RecipeError(f"shapes: the model has no input '{name}'", f"its inputs are: {', '.join(by_name)}")
            current = list(value.shape) if value.shape is not None else [None] * len(dims)
            if len(current) != len(dims):
                raise RecipeError(f"shapes: input '{name}' has {len(current)} dims, {len(dims)} given", "give one size per dim")
            for axis, (have, want) in enumerate(zip(current, dims, strict=True)):
                if isinstance(have, int) and want is not None and have != want:
                    raise RecipeError(f"shapes: input '{name}' has a fixed size {have} on axis {axis}, not {want}", "pin only dynamic dims")
            _check_data(ctx, name, dims)
            value.shape = ir.Shape([want if want is not None else have for have, want in zip(current, dims, strict=True)])
            pinned += sum(1 for have, want in zip(current, dims, strict=True) if want is not None and not isinstance(have, int))
        infer_shapes(model)
        folding_guards.install()
        onnxscript.optimizer.optimize_ir(model)
        return PassResult(model, modified=graph_signature(model) != before or pinned > 0, counts={"dims_pinned": pinned})


def _check_data(ctx: Context, name: str, dims: tuple[int | None, ...]) -> None:
    """Evaluation feeds must fit the pinned shape, or verification could not run the model."""
    if ctx.evaluation is None or name not in ctx.evaluation.arrays:
        return
    sample = ctx.evaluation.arrays[name].shape[1:]
    if len(sample) != len(dims) or any(w is not None and h != w for h, w in zip(sample, dims, strict=False)):
        raise DataError(
            f"shapes pins '{name}' to {'x'.join(str(d or '?') for d in dims)} but the evaluation data has shape {'x'.join(map(str, sample))}",
            "give calibration data of the pinned shape (or, without --calib, the pinned shape is used for random feeds)",
        )
