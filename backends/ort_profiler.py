"""Profiling with ONNX Runtime's own trace (``SessionOptions.enable_profiling``).

The trace is a JSON array of Chrome-trace events: per kernel execution a ``Node`` event
``<node>_kernel_time`` (duration, op name, provider, input/output shapes), and per
``session.run`` a ``model_run`` event written after its kernels. It grows by about 1 KB per
kernel per run, so it is read as a stream, one event at a time, never loaded whole.

The session also saves the graph it really ran (``optimized_model_filepath``, weights in a
side file that is never read): it gives each runtime node's domain, its output tensor names
(what fused nodes keep of the original graph) and which inputs are weights.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.flops import TensorInfo
from onnxsmith.profile import KernelRun, Measurement, peak_rss_mb
from onnxsmith.runtime import make_session

__all__ = ["RuntimeGraph", "iter_trace_events", "kernel_runs_from_trace", "profile_session"]

logger = logging.getLogger(__name__)

_KERNEL_SUFFIX = "_kernel_time"
_READ_CHUNK = 1 << 16
# Kernels ONNX Runtime inserts to convert layouts or move data between devices: not layers of the model.
_LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost"})


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


@dataclass
class RuntimeGraph:
    """What the runtime graph says about a node: domain, outputs, weights, consumers."""

    domain: dict[str, str]
    op: dict[str, str]
    outputs: dict[str, list[str]]
    params: dict[str, int]
    consumers: dict[str, list[str]]  # tensor -> nodes reading it


def _runtime_graph(path: Path) -> RuntimeGraph:
    proto = onnx.load(str(path), load_external_data=False)
    sizes = {t.name: math.prod(t.dims) for t in proto.graph.initializer}
    graph = RuntimeGraph({}, {}, {}, {}, {})
    for node in proto.graph.node:
        graph.domain[node.name] = node.domain
        graph.op[node.name] = node.op_type
        graph.outputs[node.name] = [o for o in node.output if o]
        graph.params[node.name] = sum(sizes.get(i, 0) for i in node.input)
        for name in node.input:
            graph.consumers.setdefault(name, []).append(node.name)
    return graph


def kernel_runs_from_trace(stream: TextIO, *, warmup: int, graph: RuntimeGraph | None = None) -> tuple[list[KernelRun], int]:
    """Per kernel, its time in every run after the first ``warmup``; and the number of timed runs.

    A kernel that ran several times in one run (inside a Loop) has its times summed.
    """
    kernels: dict[str, KernelRun] = {}
    current: dict[str, float] = {}
    run = 0
    for event in iter_trace_events(stream):
        name = event.get("name", "")
        if event.get("cat") == "Session" and name == "model_run":
            if run >= warmup:
                timed = run - warmup
                for node, ms in current.items():
                    kernels[node].times_ms.extend([0.0] * (timed - len(kernels[node].times_ms)))
                    kernels[node].times_ms.append(ms)
            current = {}
            run += 1
            continue
        if event.get("cat") != "Node" or not name.endswith(_KERNEL_SUFFIX):
            continue
        node = name[: -len(_KERNEL_SUFFIX)]
        if node not in kernels:
            kernels[node] = _kernel(node, event.get("args", {}), graph)
        current[node] = current.get(node, 0.0) + event["dur"] / 1000.0
    timed = max(run - warmup, 0)
    for kernel in kernels.values():
        kernel.times_ms.extend([0.0] * (timed - len(kernel.times_ms)))
    return list(kernels.values()), timed


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
        inputs=_tensors(args.get("input_type_shape", [])),
        outputs=_tensors(args.get("output_type_shape", [])),
        params=graph.params.get(node, 0) if graph else 0,
        times_ms=[],
        seeds=seeds,
        fallback_seeds=fallback,
    )


def _tensors(entries: list[dict[str, list[int]]]) -> list[TensorInfo]:
    """``[{"float": [1, 3, 32, 32]}, ...]`` -> TensorInfo list (an empty shape is a scalar)."""
    return [TensorInfo(tuple(int(d) for d in shape), dtype) for entry in entries for dtype, shape in entry.items()]


def profile_session(
    model: ir.Model,
    feeds: list[dict[str, np.ndarray]],
    *,
    backend: str,
    providers: Sequence[str | tuple[str, dict]],
    runs: int,
    warmup: int,
) -> Measurement:
    """Run ``model`` ``warmup + runs`` times in a profiled session and read its trace."""
    with tempfile.TemporaryDirectory(prefix="onnxsmith-profile-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "trace")
        options.optimized_model_filepath = str(Path(tmp) / "runtime.onnx")
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "runtime.onnx.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        start = time.perf_counter()
        session = make_session(model, providers=providers, session_options=options)
        session_ms = (time.perf_counter() - start) * 1000.0
        e2e: list[float] = []
        for i in range(warmup + runs):
            feed = feeds[i % len(feeds)]
            start = time.perf_counter()
            session.run(None, feed)
            if i >= warmup:
                e2e.append((time.perf_counter() - start) * 1000.0)
        trace = Path(session.end_profiling())
        peak = peak_rss_mb()
        graph = _runtime_graph(Path(tmp) / "runtime.onnx") if (Path(tmp) / "runtime.onnx").exists() else None
        with open(trace, encoding="utf-8") as stream:
            kernels, timed = kernel_runs_from_trace(stream, warmup=warmup, graph=graph)
        trace.unlink(missing_ok=True)
    if timed != runs:
        logger.warning("the trace holds %d timed runs, expected %d", timed, runs)
    return Measurement(backend=backend, kernels=kernels, e2e_ms=e2e, session_ms=session_ms, peak_rss_mb=peak)
