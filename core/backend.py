"""What a runtime backend offers: availability, sessions, and what it runs fast.

Backends live in backends/ and register through the ``onnxsmith.backends`` entry point;
passes ask ``ctx.backend.capabilities`` instead of hard-coding per-runtime rules.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import onnx_ir as ir

from onnxsmith.errors import RecipeError
from onnxsmith.runtime import one_array
from onnxsmith.target import Target, load_target

if TYPE_CHECKING:
    from onnxsmith.profile import Profile

__all__ = ["Backend", "Capabilities", "Session", "get_backend", "register_backend", "available_backends"]


class Session(Protocol):
    """The part of onnxruntime.InferenceSession the tool relies on."""

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]: ...


@dataclass(frozen=True)
class Capabilities:
    """What a backend runs fast; passes read this to decide what to emit."""

    precisions: tuple[str, ...] = ("fp32",)
    quant_format: str = "qdq"
    ops: frozenset[str] = frozenset()  # op types it has kernels for, fused/contrib ops included
    # ops it has kernels for that run slower than the standard ops they stand for, or that
    # break its fast paths; fuse avoids forming them (catalogue.FuseRule.makes / avoids). An
    # entry "Op:variant" names one slow use of an op (Softmax:inner-axis: over an axis not last)
    slow_ops: frozenset[str] = frozenset()
    # int8: the op types it runs in integer kernels when wrapped in QDQ, and the activation scheme it
    # prefers (qdq_writer.ACTIVATION_SCHEMES)
    int8_ops: tuple[str, ...] = ()
    int8_activations: str = "uint8"
    # fp16/bf16: op types it has kernels for in that precision (ai.onnx ops by name, others as
    # "domain::name"; ONNX Runtime: read from its kernel registry); the quantize pass keeps the
    # other ops in fp32 (weights still stored low)
    fp16_ops: frozenset[str] = frozenset()
    bf16_ops: frozenset[str] = frozenset()
    # int8 dynamic: op types whose run-time-quantized kernels beat float (empty: MatMul, Gemm)
    dynamic_ops: tuple[str, ...] = ()
    # int8 weights limited to 7 bits: u8 x s8 GEMMs that add product pairs in int16 saturate
    # with full-range weights (MLAS on x86 CPUs without VNNI)
    int8_reduce_range: bool = False
    # its int8 kernels run slower than float for depthwise convolutions and for layers with
    # little arithmetic per value moved: the int8 plan keeps those float (passes/quantize/int8_plan.py)
    int8_slow_small_layers: bool = False
    gains_from_nm_sparsity: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


class Backend(abc.ABC):
    """A runtime on a target: sessions and profiles run here, capabilities describe the target.

    ``target`` is where the artifact will run (CPU, threads, inference precision); by
    default this machine, in fp32. Capabilities that depend on the CPU read ``target.cpu``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    provider: ClassVar[str | None] = None  # the ONNX Runtime execution provider, for ORT backends
    precisions_run: ClassVar[tuple[str, ...]] = ("fp32",)  # whole-model inference precisions it can be told to use

    def __init__(self, target: Target | None = None) -> None:
        self.target = target or load_target()
        if self.target.precision not in self.precisions_run:
            raise RecipeError(f"backend '{self.name}' cannot run a whole model in {self.target.precision}",
                              f"choose one of {', '.join(self.precisions_run)} for it, or quantize{{mode={self.target.precision}}}")

    def describe_target(self) -> dict[str, Any]:
        """The target as the report records it, with the backend's name."""
        return {"backend": self.name, **self.target.to_dict()}

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend runs fast, asked of the runtime where it can tell."""

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, why not and what to install)."""

    @abc.abstractmethod
    def create_session(self, model: ir.Model, *, optimize: bool = True, checking: bool = False) -> Session:
        """A session that runs ``model`` on this backend, with its graph optimizations on by
        default. ``checking``: its outputs are compared, it is not timed, so the backend may
        trade speed for memory (ONNX Runtime does for big models, runtime.make_session's ``lean``)."""

    def as_is_session(self, model: ir.Model) -> Session | None:
        """``model`` compiled as the runtime compiles it when told nothing, where the backend
        overrides a runtime default to meet the target (OpenVINO's inference precision): the
        baseline of a user who runs the model as it is. None where nothing is overridden."""
        return None

    def run_all(self, model: ir.Model, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """``model``'s outputs on every feed as this backend computes them (its kernels, its
        graph optimizations): what a lossy pass's drift must be measured on, since fused
        integer kernels can round differently from the QDQ graph they replace."""
        session = self.create_session(model)
        names = [v.name for v in model.graph.outputs]
        return [{name: one_array(value) for name, value in zip(names, session.run(None, feed), strict=True)} for feed in feeds]

    @abc.abstractmethod
    def profile(self, model: ir.Model, feeds: list[dict[str, np.ndarray]], *, runs: int = 20, warmup: int = 3) -> Profile:
        """Per-layer times of ``runs`` runs after ``warmup`` (feeds cycled), named by the model's origin map."""


_BACKENDS: dict[str, type[Backend]] = {}
_loaded = False


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls
    return cls


def available_backends() -> dict[str, type[Backend]]:
    global _loaded
    if not _loaded:
        _loaded = True
        for ep in entry_points(group="onnxsmith.backends"):
            ep.load()
    return dict(sorted(_BACKENDS.items()))


def get_backend(name: str, target: Target | None = None) -> Backend:
    """The backend called ``name`` for ``target`` (default: this machine), checked to be usable here."""
    backends = available_backends()
    if name not in backends:
        raise RecipeError(f"unknown backend '{name}'", f"choose one of: {', '.join(backends)}")
    backend = backends[name](target)
    ok, why = backend.available()
    if not ok:
        raise RecipeError(f"backend '{name}' is not available here: {why}", "choose another with --backend (see `onnxsmith backends`)")
    return backend
