"""What every ONNX Runtime execution-provider backend shares: availability, sessions, profile.

A subclass names its provider, its provider options, the providers it falls back to
(nodes the provider cannot run go to the next one, as ONNX Runtime assigns them), what
it needs besides the provider being compiled in (a GPU, an OS), and its capabilities.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import Backend, Capabilities
from onnxsmith.profile import Profile, build_profile
from onnxsmith.runtime import make_session, session_threads

__all__ = ["OrtBackend", "gpu_present", "kernel_ops", "typed_kernel_ops"]


class OrtBackend(Backend):
    """An ONNX Runtime execution provider as a backend."""

    provider: ClassVar[str]  # type: ignore[misc]
    package: ClassVar[str] = "onnxruntime"  # the pip package whose build has the provider
    fallbacks: ClassVar[tuple[str, ...]] = ()

    def provider_options(self) -> dict[str, Any]:
        """Options of this provider (ONNX Runtime's names and string values)."""
        return {}

    def requirement(self) -> str:
        """Why this machine cannot run the provider even when it is compiled in ("" when it can)."""
        return ""

    def declared_capabilities(self) -> Capabilities:
        """What the provider runs fast; ``ops`` is filled from ONNX Runtime's kernel registry."""
        return Capabilities()

    @functools.cached_property
    def capabilities(self) -> Capabilities:
        declared = self.declared_capabilities()
        registered = kernel_ops(self.provider)
        return Capabilities(**{
            **vars(declared),
            "ops": registered or declared.ops,
            "fp16_ops": typed_kernel_ops(self.provider, "tensor(float16)") or declared.fp16_ops,
            "bf16_ops": typed_kernel_ops(self.provider, "tensor(bfloat16)") or declared.bf16_ops,
        })

    def available(self) -> tuple[bool, str]:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            return False, f"this onnxruntime build ({ort.__version__}) has no {self.provider}: install {self.package}"
        missing = self.requirement()
        return (False, missing) if missing else (True, "")

    def providers(self) -> list[str | tuple[str, dict[str, Any]]]:
        return [(self.provider, self.provider_options()), *self.fallbacks]

    def create_session(self, model: ir.Model, *, optimize: bool = True, checking: bool = False):
        return make_session(model, optimize=optimize, providers=self.providers(), threads=self.target.threads, lean=checking)

    def profile(self, model: ir.Model, feeds: list[dict[str, np.ndarray]], *, runs: int = 20, warmup: int = 3) -> Profile:
        from onnxsmith.backends.ort_profiler import profile_session

        with session_threads(self.target.threads):
            measured = profile_session(model, feeds, backend=self.name, providers=self.providers(), runs=runs, warmup=warmup)
        return build_profile(measured, model, warmup=warmup, target=self.describe_target())


def kernel_ops(provider: str) -> frozenset[str]:
    """Every op type ONNX Runtime has a kernel for on ``provider``, asked of its registry."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return frozenset(k.op_name for k in ort_state.get_all_opkernel_def() if k.provider == provider)


def typed_kernel_ops(provider: str, type_str: str) -> frozenset[str]:
    """The op types ONNX Runtime has a kernel for on ``provider`` taking ``type_str`` (e.g.
    ``"tensor(float16)"``): ai.onnx ops by name, others as ``domain::name`` (the CPU has an
    fp16 ai.onnx Attention but only a float com.microsoft one)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return frozenset(
        f"{k.domain}::{k.op_name}" if k.domain not in ("", "ai.onnx") else k.op_name
        for k in ort_state.get_all_opkernel_def()
        if k.provider == provider and any(type_str in t for t in k.type_constraints.values())
    )


def gpu_present() -> str:
    """"" when an NVIDIA GPU and driver are visible, else why not."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia/version").exists():
        return "no NVIDIA GPU driver on this machine (/proc/driver/nvidia/version is missing)"
    return ""
