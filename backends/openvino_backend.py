"""The OpenVINO runtime (``pip install onnxsmith[openvino]``), reading the ONNX artifact.

Sessions compile the model for OpenVINO's CPU device with the latency hint and the
target's inference precision, fp32 unless the target says bf16 or fp16: left alone, the CPU
plugin picks bf16 by itself on CPUs with AVX512-BF16 or AMX, so the same command would be
exact on one machine and lossy on another. The precision that ran is read back from the
compiled model and reported with every profile. A profile
reads OpenVINO's performance counters (``PERF_COUNT``) after every run: per executed
layer of the compiled (fused) graph its time and the kernel it chose (``exec_type``, such
as ``brgconv_avx2_f32`` or ``jit_avx512_I8``: whether an int8 kernel really ran). The
compiled graph's ``originalLayersNames`` say which nodes each layer fused. A layer the
frontend made while translating a node (a contrib op such as Attention becomes a Gemm, a
split and a fused subgraph named ``Add_825``, ``VariadicSplit_466``...) has no name of the
model; it is found by the first layers downstream of it that have one.

OpenVINO cannot stop a running inference: ``InferRequest.cancel()`` left a Loop that never
ends running (OpenVINO 2026.4). So before OpenVINO first runs a model that has a Loop, the
model runs once on ONNX Runtime CPU with the same feed under the run time limit
(core/runtime.py): one that never ends is refused there, as an input error. A model ONNX
Runtime cannot run is left to OpenVINO, unchecked.
"""

from __future__ import annotations

import functools
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import Backend, Capabilities, register_backend
from onnxsmith.errors import InputError
from onnxsmith.flops import TensorInfo
from onnxsmith.graph_stats import all_nodes
from onnxsmith.profile import KernelRun, Measurement, Profile, build_profile, peak_rss_mb
from onnxsmith.runtime import make_session

__all__ = ["OpenVINOBackend", "precision_ran"]

logger = logging.getLogger(__name__)

DEVICE = "CPU"
_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # the target's precision -> INFERENCE_PRECISION_HINT
# OpenVINO layer types -> the ONNX op types the FLOP rules know
_OP_TYPES = {"Convolution": "Conv", "GroupConvolution": "Conv", "Deconvolution": "ConvTranspose", "FullyConnected": "Gemm",
             "Eltwise": "Add", "Reduce": "ReduceMean", "Pooling": "MaxPool", "Interpolate": "Resize", "SoftMax": "Softmax",
             "MVN": "MVN", "ScaledDotProductAttention": "ScaledDotProductAttention"}
_PART_SUFFIX = re.compile(r"_\d+$")  # the frontend names the ops it splits a node into NODE_1, NODE_2, ...
_DOWNSTREAM_HOPS = 8
_LAYOUT_TYPES = frozenset({"Reorder"})  # layout conversions the runtime inserts: not layers of the model


@register_backend
class OpenVINOBackend(Backend):
    name = "openvino"
    description = "OpenVINO runtime, CPU device (reads the ONNX model itself)"
    precisions_run = ("fp32", "bf16", "fp16")

    @functools.cached_property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "bf16", "int8"),
            quant_format="qdq",  # OpenVINO turns QDQ (FakeQuantize) into int8 kernels, as NNCF writes them
            ops=_frontend_ops(),
            int8_ops=("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
                      "ReduceMean", "Interpolate", "Resize"),
            # asymmetric uint8: "symmetric" (NNCF's scheme) removes the Convert + Subtract that undo
            # zero points (a third of PP-OCRv4 det's all-int8 time), but OpenVINO then empties det's
            # output map where ONNX Runtime, running the same QDQ graph, stays at 5.5% error, and
            # --auto's det int8 fell to 1.03x (docs/benchmarks.md "## OpenVINO int8: activation zero points")
            int8_activations="uint8",
            # a ConvTranspose of one output channel (PP-OCRv4 det's last layer) computes a whole
            # channel block per pixel in OpenVINO's blocked layouts: as a 1x1 Conv + DepthToSpace
            # det ran 1.19x (bf16) and 1.10x (f32) faster on the 2-core AVX-512 EPYC; a
            # 24-channel one ran 0.96x, so only one output channel is declared slow
            slow_ops=frozenset({"ConvTranspose:one-output-channel"}),
            notes=("bf16 runs natively on CPUs with AMX/AVX512-BF16 (--inference-precision bf16); elsewhere OpenVINO "
                   "computes in fp32",),
        )

    def available(self) -> tuple[bool, str]:
        try:
            import openvino as ov
        except ImportError:
            return False, "the openvino package is not installed: pip install 'onnxsmith[openvino]'"
        if DEVICE not in ov.Core().available_devices:
            return False, f"OpenVINO sees no {DEVICE} device"
        return True, ""

    def create_session(self, model: ir.Model, *, optimize: bool = True, checking: bool = False) -> _OpenVINOSession:
        # OpenVINO has no switch to turn its graph transformations off; ``optimize`` and ``checking`` cannot apply.
        return _OpenVINOSession(_compile(model, None, self.config()), model)

    def as_is_session(self, model: ir.Model) -> _OpenVINOSession:
        """``model`` compiled as OpenVINO compiles it when told nothing (its default precision on
        this CPU, bf16 where the CPU runs it natively): the baseline of a user who runs the
        model as it is, and of issue 16's target for this backend."""
        config = {key: value for key, value in self.config().items() if key != "INFERENCE_PRECISION_HINT"}
        return _OpenVINOSession(_compile(model, None, config), model)

    def config(self) -> dict[str, str]:
        """The compile properties of this target: latency hint, inference precision, threads."""
        config = {**_CONFIG, "INFERENCE_PRECISION_HINT": _HINTS[self.target.precision]}
        if self.target.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.target.threads)
        return config

    def profile(self, model: ir.Model, feeds: list[dict[str, np.ndarray]], *, runs: int = 20, warmup: int = 3) -> Profile:
        start = time.perf_counter()
        compiled = _compile(model, feeds[0], {**self.config(), "PERF_COUNT": "YES"})
        session_ms = (time.perf_counter() - start) * 1000.0
        request = compiled.create_infer_request()
        _stop_endless_runs_first(model, feeds[0])
        layers = _runtime_layers(compiled)
        per_run: list[dict[int, float]] = []
        names: dict[int, tuple[str, str, str]] = {}
        e2e = []
        for i in range(warmup + runs):
            begin = time.perf_counter()
            request.infer(feeds[i % len(feeds)])
            elapsed = (time.perf_counter() - begin) * 1000.0
            if i < warmup:
                continue
            e2e.append(elapsed)
            executed = {}
            for index, info in enumerate(request.get_profiling_info()):
                if info.status.name == "EXECUTED":
                    names[index] = (info.node_name, info.node_type, info.exec_type)
                    executed[index] = info.real_time.total_seconds() * 1000.0
            per_run.append(executed)
        known = _model_names(model)
        # A node the runtime skips in some runs (it does, on small models) took 0 ms in those:
        # every kernel keeps one time per run, so the runs' sums line up with end-to-end times.
        kernels = [_kernel(*names[i], [run.get(i, 0.0) for run in per_run], layers.get(names[i][0]), known)
                   for i in sorted(names)]
        measured = Measurement(self.name, kernels, e2e, session_ms, peak_rss_mb())
        return build_profile(measured, model, warmup=warmup, precision=precision_ran(compiled),
                             target=self.describe_target())


def precision_ran(compiled: Any) -> str:
    """The inference precision a compiled model runs in (fp32, bf16, fp16), as compiled:
    a bf16 hint on a CPU without bf16 arithmetic compiles to f32."""
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # an openvino.Type: "f32", "bf16"
    return {theirs: ours for ours, theirs in _HINTS.items()}.get(ran, ran)


class _OpenVINOSession:
    """An OpenVINO compiled model behind the ``Session.run`` interface the tool uses."""

    def __init__(self, compiled: Any, model: ir.Model) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._names = [output.get_any_name() for output in compiled.outputs]
        self.precision = precision_ran(compiled)
        self._unchecked: ir.Model | None = model  # until its first run (_stop_endless_runs_first)

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._unchecked is not None:
            _stop_endless_runs_first(self._unchecked, feed)
            self._unchecked = None
        results = self._request.infer(feed)
        # every name of each output: where OpenVINO merges tensors, get_any_name may give another one
        by_name = {name: value for key, value in results.items() for name in key.get_names()}
        return [np.asarray(by_name[n]) for n in (output_names or self._names)]


def _compile(model: ir.Model, feed: dict[str, np.ndarray] | None, config: dict[str, str]) -> Any:
    """Compile ``model`` (written to a temporary .onnx that OpenVINO reads); with a ``feed``,
    its input shapes are fixed to the feed's first, so every layer has static shapes."""
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="onnxsmith-openvino-") as tmp:
        path = Path(tmp) / "model.onnx"
        ir.save(model, path, external_data="model.onnx.data" if _large(model) else None)
        ov_model = core.read_model(str(path))
        if feed is not None:
            ov_model.reshape({port.get_any_name(): list(feed[port.get_any_name()].shape)
                              for port in ov_model.inputs if port.get_any_name() in feed})
        return core.compile_model(ov_model, DEVICE, config)


def _stop_endless_runs_first(model: ir.Model, feed: dict[str, np.ndarray]) -> None:
    """Run a model that has a Loop once on ONNX Runtime CPU under the run time limit, which
    raises InputError for one that never ends; OpenVINO could not be stopped (module doc)."""
    if not any(node.op_type == "Loop" for node in all_nodes(model)):
        return
    try:
        make_session(model, optimize=False).run(None, feed)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 (ONNX Runtime cannot run it: OpenVINO may; nothing to check with)
        logger.debug("no time-limited check before OpenVINO runs the model: ONNX Runtime cannot run it: %s", e)


def _large(model: ir.Model) -> bool:
    from onnxsmith.modelio import EXTERNAL_DATA_THRESHOLD, model_bytes

    return model_bytes(model) >= EXTERNAL_DATA_THRESHOLD


def _runtime_layers(compiled: Any) -> dict[str, Any]:
    """The compiled graph's layers by name (the names the performance counters use)."""
    return {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}


def _model_names(model: ir.Model) -> frozenset[str]:
    """Node and tensor names of the model: what a runtime layer may be known by."""
    return frozenset(name for node in all_nodes(model) for name in (node.name, *(v.name for v in node.outputs)) if name)


def _layer_names(op: Any, known: frozenset[str]) -> list[str]:
    """The names ``op`` goes by (its own, ``originalLayersNames``, its output tensors), plus
    ``NODE`` for a ``NODE_3`` the model does not have but whose ``NODE`` it has."""
    names = [op.get_friendly_name(), *(n for n in op.get_rt_info()["originalLayersNames"].astype(str).split(",") if n),
             *(n for port in op.outputs() for n in port.get_names())]
    return names + [_PART_SUFFIX.sub("", n) for n in names if n not in known and _PART_SUFFIX.sub("", n) in known]


def _downstream_names(op: Any, known: frozenset[str]) -> list[str]:
    """The model names of the nearest layers downstream of ``op`` that have any (breadth first)."""
    level, seen = [op], {op.get_friendly_name()}
    for _ in range(_DOWNSTREAM_HOPS):
        level = [target.get_node() for node in level for port in node.outputs() for target in port.get_target_inputs()]
        level = [node for node in level if node.get_friendly_name() not in seen and not seen.add(node.get_friendly_name())]
        found = [name for node in level for name in _layer_names(node, known) if name in known]
        if found or not level:
            return found
    return []


def _kernel(name: str, layer_type: str, exec_type: str, times: list[float], op: Any | None,
            known: frozenset[str] = frozenset()) -> KernelRun:
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    params = 0
    seeds = [name]
    fallback: list[str] = []
    precision = None
    if op is not None:
        info = op.get_rt_info()
        seeds = _layer_names(op, known)
        if layer_type not in _LAYOUT_TYPES and not any(seed in known for seed in seeds):
            fallback = _downstream_names(op, known)
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else None
        for port in op.inputs():
            tensor = _tensor(port.get_partial_shape(), port.get_element_type().get_type_name())
            inputs.append(tensor)
            source = port.get_source_output().get_node()
            if source.get_rt_info()["layerType"].astype(str) == "Const":
                params += tensor.size
        outputs = [_tensor(port.get_partial_shape(), port.get_element_type().get_type_name()) for port in op.outputs()]
    return KernelRun(
        node=name,
        op_type=_OP_TYPES.get(layer_type, layer_type),
        kernel=exec_type,
        provider=f"openvino:{DEVICE}",
        inputs=inputs,
        outputs=outputs,
        params=params,
        times_ms=times,
        seeds=seeds,
        fallback_seeds=fallback,
        precision=_precision(precision, exec_type),
    )


def _tensor(shape: Any, dtype: str) -> TensorInfo:
    dims = tuple(d.get_length() if d.is_static else 0 for d in shape) if shape.rank.is_static else ()
    return TensorInfo(dims, dtype)


def _precision(runtime: str | None, exec_type: str) -> str | None:
    """OpenVINO's runtime precision (``f32``, ``u8``, ``i8``, ``bf16``) as the report spells it;
    an ``exec_type`` ending in ``_I8``/``_u8`` means an int8 kernel ran."""
    lowered = exec_type.lower()
    if lowered.endswith(("_i8", "_u8")):
        return "int8"
    spelled = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "u8": "int8", "i8": "int8", "i32": "int32", "i64": "int64"}
    return spelled.get(runtime or "", runtime)


# The com.microsoft ops OpenVINO's ONNX frontend translates (its
# src/frontends/onnx/frontend/src/op/com.microsoft/ folder, 2026.x); the frontend has no API to list them.
_CONTRIB_OPS = ("Attention", "BiasAdd", "BiasGelu", "DynamicQuantizeMatMul", "EmbedLayerNormalization", "FastGelu",
                "FusedConv", "FusedGemm", "FusedMatMul", "GatherBlockQuantized", "Gelu", "GroupNorm", "GroupQueryAttention",
                "MatMulIntegerToFloat", "MatMulNBits", "MultiHeadAttention", "QLinearConv", "QuickGelu", "RotaryEmbedding",
                "SimplifiedLayerNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization")


@functools.lru_cache(maxsize=1)
def _frontend_ops() -> frozenset[str]:
    """The op types OpenVINO reads from ONNX: the standard opset (onnx's schemas) and _CONTRIB_OPS."""
    import onnx

    standard = {schema.name for schema in onnx.defs.get_all_schemas() if schema.domain in ("", "ai.onnx")}
    return frozenset(standard | set(_CONTRIB_OPS))
