"""The per-layer profile: what a backend measured, aggregated per layer and named by origin.

A backend measures (``Measurement``): per runtime kernel, its time in every timed run, its
tensors' shapes and the names it is known by; end-to-end time per run; session creation
time and peak memory. ``build_profile`` turns that into the report's ``profile`` object:
layers ordered by median time, each with its original node names (layer_map), FLOPs,
parameters, bytes moved, arithmetic intensity and achieved throughput (flops), and totals
whose ``coverage`` (per run, the layers' time over the run's, the median) says how much of
the latency the layers explain. JSON keys are part of the report schema: rename nothing.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from onnxsmith.flops import TensorInfo, kernel_bytes, kernel_flops, precision_of
from onnxsmith.latency import percentile
from onnxsmith.layer_map import LayerMapper
from onnxsmith.report import json_safe

__all__ = ["KernelRun", "Layer", "Measurement", "Profile", "Totals", "build_profile", "peak_rss_mb"]

HOTSPOTS = 5


@dataclass
class KernelRun:
    """One runtime kernel as a backend measured it over the timed runs."""

    node: str  # the runtime's name for it
    op_type: str
    kernel: str  # what really ran: ORT's domain::op, OpenVINO's exec type (e.g. brgconv_avx2_I8)
    provider: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: int
    times_ms: list[float]  # one per timed run (0.0 where it did not run)
    seeds: list[str]  # names to find it by in the model: node names, tensor names
    fallback_seeds: list[str] = field(default_factory=list)
    precision: str | None = None  # when the backend says; else derived from the tensor dtypes


@dataclass
class Measurement:
    """Everything one profiling session measured."""

    backend: str
    kernels: list[KernelRun]  # in execution order
    e2e_ms: list[float]  # wall-clock time of each timed run
    session_ms: float
    peak_rss_mb: float | None
    kernel_overhead_ms: float | None = None  # the profiler's cost taken off each kernel event, the mean over events
    run_coverage: list[float] | None = None  # per timed run, its kernels' share of its own time (where e2e_ms is another run's)


@dataclass
class Layer:
    name: str
    origin: list[str]
    op_type: str
    kernel: str
    provider: str
    median_ms: float
    p90_ms: float
    share: float
    flops: int
    params: int
    bytes: int
    precision: str
    node: str
    order: int  # position in the run (execution order), to walk the graph front to back
    inserted_by: str | None = None
    module: str | None = None
    tensor: str | None = None  # the model tensor holding the layer's result (compared by --compare)
    intensity: float | None = None  # FLOPs per byte moved
    gflops_per_s: float | None = None  # achieved throughput at the median time
    iqr_ms: float = 0.0  # p75 - p25 over the runs: the run-to-run spread a burst in one or two runs does not move
    before_ms: float | None = None
    after_ms: float | None = None
    speedup: float | None = None
    speedup_within_noise: bool | None = None  # its medians differ by no more than either side's iqr_ms
    sqnr_db: float | None = None


@dataclass
class Totals:
    median_ms: float
    p90_ms: float
    layers_sum_ms: float  # median over runs of the per-run sum of layer times
    coverage: float  # per run, the layers' share of the run's time; the median over runs
    session_ms: float
    peak_rss_mb: float | None
    kernel_overhead_us: float | None = None  # taken off a kernel event, mean over events (see backends/ort_profiler.py)


@dataclass
class Profile:
    backend: str
    runs: int
    warmup: int
    total: Totals
    layers: list[Layer]
    compare: dict[str, Any] | None = None  # set by profile_compare: other model, first divergence
    precision: str = "fp32"  # the whole-model inference precision the runtime ran (OpenVINO: its hint, read back)
    target: dict[str, Any] | None = None  # the backend's target: CPU model, ISA, threads (Backend.describe_target)

    def by_op_type(self) -> list[dict[str, Any]]:
        """Time per op type, largest first: where a family of kernels costs the most."""
        groups: dict[str, dict[str, Any]] = {}
        for layer in self.layers:
            entry = groups.setdefault(layer.op_type, {"op_type": layer.op_type, "count": 0, "median_ms": 0.0, "flops": 0})
            entry["count"] += 1
            entry["median_ms"] += layer.median_ms
            entry["flops"] += layer.flops
        total = sum(g["median_ms"] for g in groups.values()) or 1.0
        for entry in groups.values():
            entry["share"] = entry["median_ms"] / total
        return sorted(groups.values(), key=lambda g: -g["median_ms"])

    def to_dict(self) -> dict[str, Any]:
        compare_keys = ("before_ms", "after_ms", "speedup", "speedup_within_noise", "sqnr_db")
        layers = []
        for layer in self.layers:
            data = dict(vars(layer))
            if self.compare is None:
                for key in compare_keys:
                    data.pop(key)
            layers.append(data)
        result: dict[str, Any] = {
            "backend": self.backend,
            "runs": self.runs,
            "warmup": self.warmup,
            "precision": self.precision,
            "target": self.target,
            "total": dict(vars(self.total)),
            "layers": layers,
            "by_op_type": self.by_op_type(),
            "hotspots": [layer.name for layer in self.layers[:HOTSPOTS]],
        }
        if self.compare is not None:
            result["compare"] = self.compare
        return json_safe(result)


def build_profile(measurement: Measurement, model: ir.Model, *, warmup: int, precision: str = "fp32",
                  target: dict[str, Any] | None = None) -> Profile:
    """Aggregate a measurement per layer (median, p90 over runs) and name layers by origin;
    ``precision`` is the inference precision the runtime ran, ``target`` what it ran on."""
    mapper = LayerMapper(model)
    mapped = mapper.assign(
        {k.node: k.seeds for k in measurement.kernels},
        {k.node: k.fallback_seeds for k in measurement.kernels},
    )
    runs = len(measurement.e2e_ms)
    per_run_sum = [sum(k.times_ms[i] for k in measurement.kernels) for i in range(runs)]
    layers_sum = statistics.median(per_run_sum) if runs else 0.0
    medians = [statistics.median(k.times_ms) if k.times_ms else 0.0 for k in measurement.kernels]
    medians_sum = sum(medians)  # the denominator of ``share``, so shares add up to 1
    layers: list[Layer] = []
    taken: set[str] = set()
    for order in sorted(range(len(medians)), key=lambda i: -medians[i]):  # the slowest kernel of a layer gets its plain name
        kernel, median = measurement.kernels[order], medians[order]
        where = mapped[kernel.node]
        flops = kernel_flops(kernel.op_type, kernel.inputs, kernel.outputs)
        moved = kernel_bytes(kernel.inputs, kernel.outputs)
        name = where.name(kernel.op_type, kernel.node)
        if name in taken:
            name = f"{name} ({kernel.node})"
        taken.add(name)
        layers.append(Layer(
            name=name,
            origin=list(where.origin),
            op_type=kernel.op_type,
            kernel=kernel.kernel,
            provider=kernel.provider,
            median_ms=median,
            p90_ms=percentile(kernel.times_ms, 90),
            iqr_ms=percentile(kernel.times_ms, 75) - percentile(kernel.times_ms, 25),
            share=median / medians_sum if medians_sum > 0 else 0.0,
            flops=flops,
            params=kernel.params,
            bytes=moved,
            precision=kernel.precision or precision_of(kernel.op_type, kernel.inputs, kernel.outputs),
            node=kernel.node,
            order=order,
            inserted_by=where.inserted_by,
            module=where.module(kernel.op_type),
            tensor=where.tensor,
            intensity=flops / moved if moved and flops else None,
            gflops_per_s=flops / (median * 1e6) if median > 0 and flops else None,
        ))
    layers.sort(key=lambda layer: (-layer.median_ms, layer.order))
    e2e = statistics.median(measurement.e2e_ms) if runs else 0.0
    # coverage within each run, never the layers of one run over another run's latency
    ratios = measurement.run_coverage or [s / t for s, t in zip(per_run_sum, measurement.e2e_ms, strict=True) if t > 0]
    coverage = statistics.median(ratios) if ratios else 0.0
    totals = Totals(
        median_ms=e2e,
        p90_ms=percentile(measurement.e2e_ms, 90),
        layers_sum_ms=layers_sum,
        coverage=coverage,
        session_ms=measurement.session_ms,
        peak_rss_mb=measurement.peak_rss_mb,
        kernel_overhead_us=None if measurement.kernel_overhead_ms is None else measurement.kernel_overhead_ms * 1000.0,
    )
    return Profile(backend=measurement.backend, runs=runs, warmup=warmup, total=totals, layers=layers,
                   precision=precision, target=target)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where the OS cannot say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux

