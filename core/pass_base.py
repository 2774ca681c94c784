"""The pass interface: typed, frozen options and ``run(model, ctx) -> PassResult``.

A pass is a frozen dataclass whose fields are its options (xDSL style), built on
onnx-ir's pass base so it also works in an ``onnx_ir.passes.PassManager``. It does no
file I/O and no printing: it reports through its result (``modified``, ``counts``,
``notes``) and the context. The pipeline adds name, timing, node counts and verification.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxsmith.context import Context

__all__ = ["Pass", "PassResult"]


@dataclasses.dataclass
class PassResult(ir.passes.PassResult):
    """onnx-ir's result plus what the pass did, e.g. ``{"nodes_folded": 12}``."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)  # things the user must know
    # One JSON-able dict per layer the pass touched, keyed by the layer's node name, e.g.
    # {"layer": "conv1", "sparsity": 0.5, "params_before": 864, "params_after": 432, ...}.
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Pass(ir.passes.PassBase):
    """Base of every onnxsmith pass.

    Class attributes a pass sets: ``name`` (used in pipelines and recipes), ``summary``
    (one line for ``onnxsmith passes``), ``exact`` (outputs must stay within float
    tolerance; False for lossy passes, whose drift is recorded instead), and
    ``needs_calibration``. Options are dataclass fields with defaults; put a one-line
    description in ``field(metadata={"doc": ...})``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    exact: ClassVar[bool] = True
    needs_calibration: ClassVar[bool] = False
    # Tolerance of an exact pass against the original outputs (numpy.allclose rule); a pass
    # whose rewrites change kernels (fused ops reorder float arithmetic) may widen atol.
    rtol: ClassVar[float] = 1e-4
    atol: ClassVar[float] = 1e-5
    # A pass whose options are open-ended (``shapes{x=1x3x224x224}``) names the dict field
    # that collects option names it does not declare.
    extra_options: ClassVar[str | None] = None
    in_place: ClassVar[bool] = True  # type: ignore[misc]
    changes_input: ClassVar[bool] = True  # type: ignore[misc]

    @abc.abstractmethod
    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        """Transform ``model`` (in place unless ``in_place`` is False: then return a new model,
        e.g. ``model.clone()``, and leave ``model`` untouched) and say what changed."""

    def call(self, model: ir.Model) -> PassResult:
        """onnx-ir's entry point: run with a default context (no data, CPU backend)."""
        from onnxsmith.context import Context

        return self.run(model, Context())

    def apply(self, model: ir.Model, ctx: Context) -> PassResult:
        """Run with the contract checks of onnx-ir's ``PassBase.__call__``, but with a context:
        preconditions, postconditions, and the ``in_place`` claim both ways (an in-place pass
        returns its input model, any other pass a new one, even when it changed nothing)."""
        self.requires(model)
        result = self.run(model, ctx)
        if not isinstance(result, PassResult):
            raise TypeError(f"pass '{self.name}' must return onnxsmith.pass_base.PassResult")
        self.ensures(result.model)
        if self.in_place and result.model is not model:
            raise ir.passes.PassError(f"pass '{self.name}' is declared in place but returned a new model")
        if not self.in_place and result.model is model:
            raise ir.passes.PassError(f"pass '{self.name}' is declared not in place but returned its input model")
        return result

    def requires_calibration(self) -> bool:
        """Whether this configuration needs calibration data (``needs_calibration`` unless an
        option changes it, e.g. ``quantize{mode=fp16}`` needs none)."""
        return self.needs_calibration

    @classmethod
    def catalogue(cls) -> dict[str, str]:
        """Named sub-rules of a pass family with one line each (``onnxsmith passes`` lists them)."""
        return {}

    def input_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Input shapes the model will require after this pass (None: dim stays dynamic)."""
        return {}

    def params(self) -> dict[str, Any]:
        """The option values, as a recipe would write them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __str__(self) -> str:
        changed = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        }
        if not changed:
            return self.name
        return self.name + "{" + ",".join(f"{k}={_format_value(v)}" for k, v in changed.items()) + "}"


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ":".join(str(v) for v in value)
    return str(value)
