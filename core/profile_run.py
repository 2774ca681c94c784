"""``profile``: load a model and its feeds, profile it on a backend, optionally against another.

The library entry point behind ``onnxsmith profile``; the CLI only parses and renders.
With ``compare``, each model is profiled for its per-layer times, then the two are timed
end to end in one interleaved run (other, model, model, other, ... after warm-up, as
every speed comparison here is): that run gives the before/after latency and speedup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxsmith.backend import get_backend
from onnxsmith.data import load_dataset, model_inputs, random_dataset
from onnxsmith.errors import InputError
from onnxsmith.latency import measure_interleaved
from onnxsmith.model import INFERENCE_PRECISION_KEY, Model
from onnxsmith.profile import Profile
from onnxsmith.profile_compare import DEFAULT_THRESHOLD_DB, compare_profiles, tensor_sqnr
from onnxsmith.sources import load_source
from onnxsmith.target import load_target

__all__ = ["ProfileOptions", "profile_model"]

SQNR_FEEDS = 2  # feeds the per-layer SQNR is computed on


@dataclass
class ProfileOptions:
    backend: str = "cpu"
    runs: int = 20
    warmup: int = 3
    calib: str | None = None  # data to feed (default: random, shaped by input_shapes)
    samples: int = 4  # feeds cycled through the runs
    input_shapes: list[tuple[int, ...]] | None = None
    compare: str | None = None  # the model to compare against (the "before")
    threshold_db: float = DEFAULT_THRESHOLD_DB
    seed: int = 0
    target: str | None = None  # the CPU: host, a named CPU or a target file (core/target.py)
    threads: int = 0
    precision: str | None = None  # the runtime's inference precision; None: the artifact's (its metadata), else fp32


def profile_model(source: str, options: ProfileOptions) -> Profile:
    """Profile ``source`` on ``options.backend``; with ``compare``, against that model."""
    if options.runs < 1:
        raise InputError(f"--runs {options.runs}", "profile at least one run")
    model = load_source(source, options.input_shapes)
    precision = options.precision or model.ir.metadata_props.get(INFERENCE_PRECISION_KEY, "fp32")
    backend = get_backend(options.backend, load_target(options.target, threads=options.threads, precision=precision))
    feeds = _feeds(model, options)
    profile = backend.profile(model.ir, feeds, runs=options.runs, warmup=options.warmup)
    if options.compare is None:
        return profile
    other = load_source(options.compare, options.input_shapes)
    before = backend.profile(other.ir, feeds, runs=options.runs, warmup=options.warmup)
    timed = measure_interleaved({"before": backend.create_session(other.ir), "after": backend.create_session(model.ir)},
                                feeds[0], rounds=options.runs, warmup=options.warmup)
    tensors = [layer.tensor for layer in profile.layers if layer.tensor]
    sqnr = tensor_sqnr(backend, other.ir, model.ir, feeds[:SQNR_FEEDS], tensors)
    return compare_profiles(before, profile, sqnr=sqnr, other=options.compare, threshold_db=options.threshold_db,
                            latency=(timed["before"], timed["after"]))


def _feeds(model: Model, options: ProfileOptions) -> list[dict[str, np.ndarray]]:
    inputs = model_inputs(model.ir)
    if options.calib and options.calib != "random":
        data = load_dataset(options.calib, inputs, samples=options.samples)
    else:
        shapes = {spec.name: shape for spec, shape in zip(inputs, options.input_shapes or [])}
        data = random_dataset(inputs, samples=options.samples, shapes=shapes, seed=options.seed)
    return data.feeds()
