"""ONNX Runtime sessions from in-memory models, and running them over a dataset.

Shared by the pipeline's verification, the latency measurement and the backends, so that
session options are set in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.modelio import session_source

__all__ = ["Outputs", "make_session", "run_all", "save_runtime_graph", "session_threads"]

Outputs = dict[str, np.ndarray]

_THREADS: ContextVar[int] = ContextVar("onnxsmith_session_threads", default=0)


@contextlib.contextmanager
def session_threads(count: int) -> Iterator[None]:
    """Within this block, sessions made here use ``count`` intra-op threads unless a caller
    asks otherwise (0: ONNX Runtime's default, one per core). A batch worker converts its
    model inside one, so N workers on N cores do not each start a thread per core."""
    token = _THREADS.set(count)
    try:
        yield
    finally:
        _THREADS.reset(token)


def make_session(
    model: ir.Model,
    *,
    optimize: bool = True,
    providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
    threads: int = 0,
    session_options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An InferenceSession for ``model``.

    ``optimize=False`` turns ONNX Runtime's own graph optimizations off: the reference
    for exact passes, so the runtime cannot apply the same fusion and hide a broken one.
    """
    options = session_options or ort.SessionOptions()
    options.log_severity_level = 3
    # Idle intra-op threads spin by default; with two sessions timed interleaved on few
    # cores, one session's spinning threads slow the other (identical models measured up
    # to 1.5x apart on 2 cores). Sessions here are for checking and comparing, not serving.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    threads = threads or _THREADS.get()
    if threads:
        options.intra_op_num_threads = threads
    with session_source(model) as source:
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))


def run_all(session: ort.InferenceSession, feeds: Iterable[dict[str, np.ndarray]]) -> list[Outputs]:
    """Run every feed; return each run's outputs by name."""
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]


def save_runtime_graph(
    model: ir.Model, target: Path, *, providers: Sequence[str | tuple[str, dict]], level: ort.GraphOptimizationLevel
) -> None:
    """Let ONNX Runtime optimize ``model`` for ``providers`` at ``level`` and save the graph it
    would run to ``target`` (weights over 1 GiB go to ``<target>.data``)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", target.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", str(1 << 30))
    make_session(model, providers=providers, session_options=options)
