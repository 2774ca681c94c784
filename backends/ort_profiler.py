"""Profiling with ONNX Runtime's own trace (``SessionOptions.enable_profiling``).

The trace is a JSON array of Chrome-trace events: per kernel execution a ``Node`` event
``<node>_kernel_time`` (duration, op name, provider, input/output shapes), and per
``session.run`` a ``model_run`` event written after its kernels. It grows by about 1 KB per
kernel per run, so it is read as a stream, one event at a time, never loaded whole.

The session also saves the graph it really ran (``optimized_model_filepath``, weights in a
side file that is never read): it gives each runtime node's domain, its output tensor names
(what fused nodes keep of the original graph) and which inputs are weights.

Profiling is not free, and ONNX Runtime charges part of its cost to the kernels: a kernel
event's clock starts before the profiler formats the kernel's input shapes and stops
after it sized its outputs, about 4 microseconds per kernel on a 2-core x86 machine, while
a Reshape really costs well under one. A kernel that hands work to the intra-op thread
pool pays more, 5 to 20 microseconds per parallel section (about 5 on a 2-core EPYC), for the pool's
per-thread scheduling statistics (the event's ``thread_scheduling_stats``). On a model of
200 small kernels that nearly doubles its latency. ``OverheadProbe`` measures both costs
on chains of trivial kernels, serial and parallel, alongside every profile, and each
kernel event has the cost of its kind subtracted. The per-section cost comes from a
parallel Add whose time spreads by tens of microseconds from sample to sample on a shared
machine, so it is the median of paired samples (profiled and plain run back to back), and
it is taken off only where it stands out of that noise (twice its standard error). On a
2-core EPYC, over 16 probes, that cut the spread of the estimate from 3.8 to 2.9 us (it sits
near 5 us); the layer sum of a 1.5 ms model still swings with the machine between runs.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.flops import TensorInfo
from onnxsmith.profile import KernelRun, Measurement, peak_rss_mb
from onnxsmith.runtime import make_session
from onnxsmith.shared_weights import sharing_pays

__all__ = ["Estimate", "OverheadProbe", "ProfilerOverhead", "RuntimeGraph", "TraceRuns", "iter_trace_events", "kernel_runs_from_trace",
           "median_estimate", "profile_session", "section_overhead"]

logger = logging.getLogger(__name__)

_KERNEL_SUFFIX = "_kernel_time"
_READ_CHUNK = 1 << 16
# Kernels ONNX Runtime inserts to convert layouts or move data between devices: not layers of the model.
_LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost"})
_CALIBRATION_NODES = 64
_CALIBRATION_RUNS = 40
# Elements of the parallel probe's tensors: the smallest power of two at which ONNX Runtime 1.31
# splits an Add over its thread pool on a 2-core x86 machine (2**16 still runs serially).
_PARALLEL_PROBE_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class ProfilerOverhead:
    """What the profiler adds inside one kernel event: ``serial_ms`` for every event, plus
    ``section_ms`` for each parallel section the kernel ran on the thread pool."""

    serial_ms: float = 0.0
    section_ms: float = 0.0

    def of(self, args: dict[str, Any]) -> float:
        """The overhead inside a kernel event with these ``args``."""
        return self.serial_ms + parallel_sections(args) * self.section_ms


def parallel_sections(args: dict[str, Any]) -> int:
    """How many parallel sections a kernel event ran on the intra-op thread pool."""
    stats = args.get("thread_scheduling_stats") or {}
    return len((stats.get("main_thread") or {}).get("block_size") or [])


def iter_trace_events(stream: TextIO) -> Iterator[dict[str, Any]]:
    """The events of a JSON-array trace, decoded one at a time from ``stream``."""
    decoder = json.JSONDecoder()
    buffer = ""
    started = False
    eof = False
    while True:
        buffer = buffer.lstrip(" \t\r\n,")
        if not started and buffer.startswith("["):
            buffer, started = buffer[1:].lstrip(), True
        if buffer.startswith("]"):
            return
        if buffer and started:
            try:
                event, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError:
                if eof:
                    raise
            else:
                yield event
                buffer = buffer[end:]
                continue
        if eof:
            return
        chunk = stream.read(_READ_CHUNK)
        eof = not chunk
        buffer += chunk


_ORT_DTYPE_NAMES = {1: "float", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "double", 16: "bfloat16"}


@dataclass
class RuntimeGraph:
    """What the runtime graph says about a node: domain, outputs, weights, consumers."""

    domain: dict[str, str]
    op: dict[str, str]
    outputs: dict[str, list[str]]
    params: dict[str, int]
    consumers: dict[str, list[str]]  # tensor -> nodes reading it
    inputs: dict[str, list[TensorInfo | None]] = field(default_factory=dict)  # per node input: the initializer's, else None


def _runtime_graph(path: Path) -> RuntimeGraph:
    proto = onnx.load(str(path), load_external_data=False)
    sizes = {t.name: math.prod(t.dims) for t in proto.graph.initializer}
    constants = {t.name: TensorInfo(tuple(t.dims), _ORT_DTYPE_NAMES.get(t.data_type, "float")) for t in proto.graph.initializer}
    graph = RuntimeGraph({}, {}, {}, {}, {})
    for node in proto.graph.node:
        graph.domain[node.name] = node.domain
        graph.op[node.name] = node.op_type
        graph.outputs[node.name] = [o for o in node.output if o]
        graph.params[node.name] = sum(sizes.get(i, 0) for i in node.input)
        graph.inputs[node.name] = [constants.get(i) for i in node.input if i]
        for name in node.input:
            graph.consumers.setdefault(name, []).append(node.name)
    return graph


class TraceRuns(NamedTuple):
    """What a trace says about its timed runs."""

    kernels: list[KernelRun]  # per kernel, its time in every timed run
    timed: int  # how many runs were timed
    mean_overhead_ms: float  # the profiler's cost taken off a timed kernel event, on average
    coverage: list[float]  # per timed run, the share of the run spent in its kernels


def kernel_runs_from_trace(
    stream: TextIO, *, warmup: int, graph: RuntimeGraph | None = None, overhead: ProfilerOverhead | None = None
) -> TraceRuns:
    """Per kernel, its time in every run after the first ``warmup``, and the rest of TraceRuns.

    A kernel that ran several times in one run (inside a Loop) has its times summed.
    ``overhead``, the profiler's own cost inside each kernel event, is taken off every
    event (never below zero). A run's coverage compares its kernels with the ``model_run``
    event around them, both less the overhead taken off: one run, one clock, so it says
    how much of the latency the layers explain and cannot pass 1 (a ratio against the
    plain session's latency mixed two sessions and two estimates, and swung from 0.4 to 3.6
    on a shared machine).
    """
    overhead = overhead or ProfilerOverhead()
    kernels: dict[str, KernelRun] = {}
    current: dict[str, float] = {}
    coverage: list[float] = []
    taken, events = 0.0, 0
    run_taken = 0.0
    run = 0
    for event in iter_trace_events(stream):
        name = event.get("name", "")
        if event.get("cat") == "Session" and name == "model_run":
            if run >= warmup:
                timed = run - warmup
                for node, ms in current.items():
                    kernels[node].times_ms.extend([0.0] * (timed - len(kernels[node].times_ms)))
                    kernels[node].times_ms.append(ms)
                run_ms = event.get("dur", 0) / 1000.0 - run_taken
                if run_ms > 0:
                    coverage.append(min(sum(current.values()) / run_ms, 1.0))
            current, run_taken = {}, 0.0
            run += 1
            continue
        if event.get("cat") != "Node" or not name.endswith(_KERNEL_SUFFIX):
            continue
        node = name[: -len(_KERNEL_SUFFIX)]
        args = event.get("args", {})
        if node not in kernels:
            kernels[node] = _kernel(node, args, graph)
        measured = event["dur"] / 1000.0
        kept = max(measured - overhead.of(args), 0.0)
        current[node] = current.get(node, 0.0) + kept
        run_taken += measured - kept
        if run >= warmup:
            taken, events = taken + measured - kept, events + 1
    timed = max(run - warmup, 0)
    for kernel in kernels.values():
        kernel.times_ms.extend([0.0] * (timed - len(kernel.times_ms)))
    return TraceRuns(list(kernels.values()), timed, taken / events if events else 0.0, coverage)


def _kernel(node: str, args: dict[str, Any], graph: RuntimeGraph | None) -> KernelRun:
    op = args.get("op_name", "?")
    domain = graph.domain.get(node, "") if graph else ""
    outputs = graph.outputs.get(node, []) if graph else []
    seeds = [node, *outputs]
    fallback: list[str] = []
    if op in _LAYOUT_OPS:
        seeds = []  # inserted by the runtime; what it serves is claimed by the kernel it serves
    elif graph:
        # the tensors a kernel's layout conversion hands back to the graph are its results
        # (NCHWc Conv -> ReorderOutput -> the user's tensor)
        seeds += [out for tensor in outputs for consumer in graph.consumers.get(tensor, [])
                  if graph.op.get(consumer) in _LAYOUT_OPS for out in graph.outputs.get(consumer, [])]
        # a kernel writing only runtime tensors is found by what follows it
        frontier = list(outputs)
        for _ in range(3):
            frontier = [out for tensor in frontier for consumer in graph.consumers.get(tensor, []) for out in graph.outputs.get(consumer, [])]
            fallback.extend(frontier)
    return KernelRun(
        node=node,
        op_type=op,
        kernel=f"{domain}::{op}" if domain not in ("", "ai.onnx") else op,
        provider=args.get("provider", "?"),
        inputs=_with_prepacked(_tensors(args.get("input_type_shape", [])), graph.inputs.get(node) if graph else None),
        outputs=_tensors(args.get("output_type_shape", [])),
        params=graph.params.get(node, 0) if graph else 0,
        times_ms=[],
        seeds=seeds,
        fallback_seeds=fallback,
    )


def _with_prepacked(traced: list[TensorInfo], declared: list[TensorInfo | None] | None) -> list[TensorInfo]:
    """The kernel's inputs in the node's order. ORT's trace leaves out the weights a kernel
    pre-packed (a QLinearConv's W): they are put back from the runtime graph where the
    traced entries, read in order, do not have the initializer's shape."""
    if not declared or len(traced) >= len(declared):
        return traced
    out, pending = [], list(traced)
    for constant in declared:
        if constant is not None and (not pending or pending[0].shape != constant.shape) and len(out) + len(pending) < len(declared):
            out.append(constant)
        elif pending:
            out.append(pending.pop(0))
    return out + pending


def _tensors(entries: list[dict[str, list[int]]]) -> list[TensorInfo]:
    """``[{"float": [1, 3, 32, 32]}, ...]`` -> TensorInfo list (an empty shape is a scalar)."""
    return [TensorInfo(tuple(int(d) for d in shape), dtype) for entry in entries for dtype, shape in entry.items()]


class OverheadProbe:
    """Measures what the profiler adds to a kernel event, alongside a real measurement.

    Two chains of trivial kernels, Adds of one element (serial) and of enough elements that
    ONNX Runtime splits each over its thread pool (one parallel section each), run with and
    without the profiler once per ``sample()``, so the estimate sees the same machine state
    as the runs it corrects (a shared machine's speed changes over minutes). For each chain:
    the mean kernel event of a profiled run less the whole per-node cost of a plain run (an
    upper bound of what such a kernel really costs), the median of each over the samples,
    so a run the OS preempted does not count.
    """

    def __init__(self, folder: Path) -> None:
        self._chains = [_ProbeChain(folder, "serial", 1), _ProbeChain(folder, "parallel", _PARALLEL_PROBE_ELEMENTS)]

    def sample(self) -> None:
        for chain in self._chains:
            chain.sample()

    def overhead(self) -> ProfilerOverhead:
        """The estimate; ends the probe (at least ``_CALIBRATION_RUNS`` samples are taken)."""
        serial, parallel = (chain.overhead_ms() for chain in self._chains)
        if parallel is None:  # this machine's pool never split the probe's Adds (one core)
            return ProfilerOverhead(max(serial.ms, 0.0), 0.0)
        section = section_overhead(serial, parallel)
        logger.debug("profiler overhead per kernel event: %.2f us, per parallel section %.2f us (measured %.2f +- %.2f us)",
                     serial.ms * 1000.0, section * 1000.0, (parallel.ms - serial.ms) * 1000.0,
                     math.hypot(serial.error_ms, parallel.error_ms) * 1000.0)
        return ProfilerOverhead(max(serial.ms, 0.0), section)


class Estimate(NamedTuple):
    """A measured cost and the standard error of its median."""

    ms: float
    error_ms: float


def section_overhead(serial: Estimate, parallel: Estimate) -> float:
    """The profiler's cost per parallel section: the parallel probe's event cost less the
    serial one's, where that difference is more than twice its standard error; else 0 (a
    difference within the noise would move every parallel kernel's time by noise)."""
    difference = parallel.ms - serial.ms
    return difference if difference > 2 * math.hypot(serial.error_ms, parallel.error_ms) else 0.0


def median_estimate(values: Sequence[float]) -> Estimate:
    """The median of ``values`` and its standard error (1.2533 sigma / sqrt(n), sigma from the
    median absolute deviation, so a preempted sample does not widen it)."""
    median = statistics.median(values)
    sigma = 1.4826 * statistics.median(abs(v - median) for v in values)
    return Estimate(median, 1.2533 * sigma / math.sqrt(len(values)))


class _ProbeChain:
    """One chain of the probe: a profiled and a plain session of ``x + c + c + ...``."""

    def __init__(self, folder: Path, label: str, elements: int) -> None:
        self._feed = {"x": np.ones((1, elements), np.float32)}
        graph = _trivial_chain(_CALIBRATION_NODES, elements)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / f"calibration-{label}")
        self._profiled = make_session(graph, optimize=False, session_options=options)
        self._plain = make_session(graph, optimize=False)
        self._per_node: list[float] = []

    def sample(self) -> None:
        self._profiled.run(None, self._feed)
        start = time.perf_counter()
        self._plain.run(None, self._feed)
        self._per_node.append((time.perf_counter() - start) * 1000.0 / _CALIBRATION_NODES)

    def overhead_ms(self) -> Estimate | None:
        """Mean event less the plain per-node cost, sample by sample (the two ran back to back),
        as a median and its error; None when no event ran a parallel section though the chain
        meant to (then its number would mean something else)."""
        while len(self._per_node) < _CALIBRATION_RUNS:
            self.sample()
        trace = Path(self._profiled.end_profiling())
        wants_parallel = self._feed["x"].size > 1
        with open(trace, encoding="utf-8") as stream:
            events = [e for e in iter_trace_events(stream) if e.get("cat") == "Node" and e.get("name", "").endswith(_KERNEL_SUFFIX)]
        trace.unlink(missing_ok=True)
        if wants_parallel and not any(parallel_sections(e.get("args", {})) for e in events):
            return None
        per_run = [statistics.fmean(e["dur"] / 1000.0 for e in events[i:i + _CALIBRATION_NODES])
                   for i in range(0, len(events) - _CALIBRATION_NODES + 1, _CALIBRATION_NODES)]
        if not per_run:
            return Estimate(0.0, 0.0)
        return median_estimate([event - node for event, node in zip(per_run, self._per_node)])


def _trivial_chain(length: int, elements: int = 1) -> ir.Model:
    """``x + c + c + ...``: ``length`` Add kernels on tensors of ``elements`` floats."""
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, elements]))
    c = ir.Value(name="c", const_value=ir.tensor(np.ones((1, elements), np.float32)))
    nodes, current = [], x
    for i in range(length):
        node = ir.node("Add", [current, c], name=f"add_{i}")
        nodes.append(node)
        current = node.outputs[0]
    current.name = "y"
    graph = ir.Graph([x], [current], nodes=nodes, initializers=[c], opset_imports={"": 17}, name="calibration")
    return ir.Model(graph, ir_version=9)


def profile_session(
    model: ir.Model,
    feeds: list[dict[str, np.ndarray]],
    *,
    backend: str,
    providers: Sequence[str | tuple[str, dict]],
    runs: int,
    warmup: int,
) -> Measurement:
    """Run ``model`` ``warmup + runs`` times in a profiled session and read its trace.

    End-to-end time comes from a second, plain session run interleaved with the profiled
    one (plain, profiled, profiled, plain, ...): the profiler's own bookkeeping costs about
    10 microseconds per kernel, a fifth of the latency of a small model, and it is not part
    of the model's latency. Both sessions see the same machine noise, and so does the
    :class:`OverheadProbe` sampled after every round, whose estimate is taken off every
    kernel event.

    A big model (one whose checking sessions share its weights, shared_weights.sharing_pays)
    gets the profiled session alone, its end-to-end time included: each session holds its
    own optimized copy of the weights, and at that size a run takes long enough for the
    profiler's microseconds per kernel to vanish in it.
    """
    one_session = sharing_pays(model)
    with tempfile.TemporaryDirectory(prefix="onnxsmith-profile-") as tmp:
        probe = OverheadProbe(Path(tmp))
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "trace")
        options.optimized_model_filepath = str(Path(tmp) / "runtime.onnx")
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "runtime.onnx.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        start = time.perf_counter()
        plain = make_session(model, providers=providers, session_options=options if one_session else None)
        session_ms = (time.perf_counter() - start) * 1000.0
        plain.run(None, feeds[0])
        peak = peak_rss_mb()  # one session and its first run's buffers, not the profiled twin's
        profiled = plain if one_session else make_session(model, providers=providers, session_options=options)
        e2e: list[float] = []
        for i in range(warmup + runs):
            feed = feeds[i % len(feeds)]
            order = (plain,) if one_session else (plain, profiled) if i % 2 == 0 else (profiled, plain)
            for session in order:
                begin = time.perf_counter()
                session.run(None, feed)
                if session is plain and i >= warmup:
                    e2e.append((time.perf_counter() - begin) * 1000.0)
            probe.sample()
        overhead = probe.overhead()
        trace = Path(profiled.end_profiling())
        graph = _runtime_graph(Path(tmp) / "runtime.onnx") if (Path(tmp) / "runtime.onnx").exists() else None
        with open(trace, encoding="utf-8") as stream:
            # one session: its first run, before the loop, is in the trace too
            traced = kernel_runs_from_trace(stream, warmup=warmup + one_session, graph=graph, overhead=overhead)
        trace.unlink(missing_ok=True)
    if traced.timed != runs:
        logger.warning("the trace holds %d timed runs, expected %d", traced.timed, runs)
    return Measurement(backend=backend, kernels=traced.kernels, e2e_ms=e2e, session_ms=session_ms, peak_rss_mb=peak,
                       kernel_overhead_ms=traced.mean_overhead_ms, run_coverage=traced.coverage)
