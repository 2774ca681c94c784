"""ONNX Runtime sessions from in-memory models, and running them over a dataset.

Shared by the pipeline's verification, the latency measurement and the backends, so that
session options are set in one place.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxsmith.errors import InputError
from onnxsmith.modelio import session_source
from onnxsmith.shared_weights import sharing_pays, weights_shared_source

__all__ = ["RUN_TIMEOUT_S", "Outputs", "make_session", "run_all", "run_time_limit", "save_runtime_graph", "session_threads"]

RUN_TIMEOUT_S = 600.0  # one run of a model on one input; a Loop that never ends must not hang a CI job

Outputs = dict[str, np.ndarray]

_THREADS: ContextVar[int] = ContextVar("onnxsmith_session_threads", default=0)
_RUN_TIMEOUT: ContextVar[float] = ContextVar("onnxsmith_run_timeout", default=RUN_TIMEOUT_S)


@contextlib.contextmanager
def run_time_limit(seconds: float) -> Iterator[None]:
    """Within this block, every run of a session made here stops after ``seconds`` (0: no limit)."""
    token = _RUN_TIMEOUT.set(seconds)
    try:
        yield
    finally:
        _RUN_TIMEOUT.reset(token)


class _Watchdog:
    """One thread for the process that sets ONNX Runtime's terminate flag on runs past their
    deadline (checked four times a second; a run costs a dict entry, not a thread)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """No runs, no thread (also in a forked child, which inherits neither the thread nor the runs)."""
        self._runs: dict[int, tuple[float, ort.RunOptions]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, options: ort.RunOptions, deadline: float) -> None:
        with self._lock:
            self._runs[id(options)] = (deadline, options)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="onnxsmith-run-watchdog")
                self._thread.start()

    def release(self, options: ort.RunOptions) -> None:
        with self._lock:
            self._runs.pop(id(options), None)

    def _loop(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                for deadline, options in self._runs.values():
                    if now > deadline:
                        options.terminate = True


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # a forked worker has no watchdog thread, whatever its parent had
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


class LimitedSession:
    """An InferenceSession whose every run stops after a time limit, as an input error: a model
    whose Loop never ends would otherwise hang the run (and a CI job) for good."""

    def __init__(self, session: ort.InferenceSession, limit_s: float) -> None:
        self._session, self._limit_s = session, limit_s
        self._options = ort.RunOptions()
        self._options.log_severity_level = 4  # the stop is reported as an error of ours, not logged by ONNX Runtime

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any], run_options: ort.RunOptions | None = None) -> list:
        options = run_options or self._options
        _WATCHDOG.watch(options, time.monotonic() + self._limit_s)
        try:
            return self._session.run(output_names, input_feed, options)
        except Exception:
            if options.terminate:
                options.terminate = False
                raise InputError(f"the model ran longer than {self._limit_s:g} s on one input and was stopped (a Loop that never ends?)",
                                 "check the model, or raise --run-timeout") from None
            raise
        finally:
            _WATCHDOG.release(options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


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
    lean: bool = False,
) -> ort.InferenceSession | LimitedSession:
    """An InferenceSession for ``model``.

    ``optimize=False`` turns ONNX Runtime's own graph optimizations off: the reference
    for exact passes, so the runtime cannot apply the same fusion and hide a broken one.
    ``lean``: a session whose outputs are checked, not timed; for a big model it trades
    speed for memory (``_lean_options``). Every run stops after the ``run_time_limit``
    (RUN_TIMEOUT_S unless a caller sets one).
    """
    options = session_options or ort.SessionOptions()
    options.log_severity_level = 3
    # Idle intra-op threads spin by default; with two sessions timed interleaved on few
    # cores, one session's spinning threads slow the other (identical models measured up
    # to 1.5x apart on 2 cores). Sessions here are for checking and comparing, not serving.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    share = (lean or not optimize) and sharing_pays(model)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif share:
        _lean_options(options)
    threads = threads or _THREADS.get()
    if threads:
        options.intra_op_num_threads = threads
    if share:
        session = _session_reading_weights_in_place(model, options, providers)
    else:
        with session_source(model) as source:
            session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
    limit = _RUN_TIMEOUT.get()
    return LimitedSession(session, limit) if limit else session


def _lean_options(options: ort.SessionOptions) -> None:
    """Options for a big model's checking session, which reads our weights in place: the
    extended level (its fusions, integer QDQ kernels included, are the ones that change
    results; the layout level reads initializers from the model file, which holds none),
    without the arena, which keeps each run's largest buffers (the float copies an fp16
    model's weight Casts make), and in priority order, so a weight's Cast runs just before
    its reader instead of all of them first. For a 1 GB fp16 model of two MatMuls, the peak
    of creating the session and running it: 2.2 GB, against 5.6 GB with the arena and the
    default order (at the basic level), and 4.9 GB more than the model for an optimized
    session of its own copy."""
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.enable_cpu_mem_arena = False
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED


def _session_reading_weights_in_place(model: ir.Model, options: ort.SessionOptions,
                                      providers: Sequence[str | tuple[str, dict]]) -> ort.InferenceSession:
    """A session of a big model that reads our weight arrays instead of copying them
    (shared_weights.py); the session keeps the arrays and their OrtValues alive."""
    options.add_session_config_entry("session.disable_prepacking", "1")
    with weights_shared_source(model) as (path, arrays):
        values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in arrays.items()}
        for name, value in values.items():
            options.add_initializer(name, value)
        session = ort.InferenceSession(path, sess_options=options, providers=list(providers))
    session.onnxsmith_shared_weights = (arrays, values)
    return session


def run_all(session: ort.InferenceSession, feeds: Iterable[dict[str, np.ndarray]]) -> list[Outputs]:
    """Run every feed; return each run's outputs by name."""
    names = [o.name for o in session.get_outputs()]
    return [named_outputs(session, names, feed) for feed in feeds]


def named_outputs(session: ort.InferenceSession | LimitedSession, names: list[str], feed: dict[str, Any]) -> Outputs:
    """One run's ``names`` outputs by name, each one array: a sequence output comes back as its
    elements' values laid end to end and an absent optional as an empty array, so the metrics
    compare every output the same way (a changed element shape changes the length)."""
    return {name: one_array(value) for name, value in zip(names, session.run(names, feed), strict=True)}


def one_array(value: Any) -> np.ndarray:
    """A run's output as one array (see ``named_outputs``)."""
    if value is None:
        return np.zeros(0, np.float32)
    if isinstance(value, list):
        parts = [one_array(v).ravel() for v in value]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return value


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
