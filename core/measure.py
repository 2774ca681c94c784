"""The measurement service: run a model with chosen tensors exposed, stream them in bounded
chunks through typed reducers, cache by full digests, and keep sessions and outputs.

Every pass that needs intermediate tensors (calibration, bias correction, the guard, GPTQ,
smooth, channel statistics, layer error, refit) and the pipeline's verification ask
``ctx.measure`` instead of building their own session loops:

- ``reduce(model, {tensor: statistic}, feeds)``: per tensor the statistic's result
  (statistics.py: MinMax, Histogram, ChannelSums, Hessian, AbsMaxRows, Shape), cached by
  the model's digest (every node, attribute and weight byte), the feeds' digest and the
  statistic, so a pass that changed weights in place is never served a stale result.
- ``compare(reference, candidate, tensors, feeds)``: per tensor the (noise, signal) energy
  of the candidate's values against the reference's (the guard's sensitivity, SQNR).
- ``stream``/``paired``: the arrays themselves, one feed and one bounded chunk at a time,
  for folds no statistic covers (refit's normal equations, a layer's shadow error).
- ``outputs(model, feeds, backend)`` and ``session(model, backend)``: a model's outputs as
  a backend computes them, and the session itself, kept (a few, least recently used first
  out) so the guard's last probe, the pipeline's check and the latency timing share them;
  a big model's outputs come from a session of its own that reads our weights in place
  (runtime.make_session's ``lean``), not from the one it is timed in.

Tensors are exposed one way: made graph outputs of the model for the time it takes to
serialize it into a session, in chunks whose outputs for one feed stay under ``max_bytes``
(sizes from ONNX shape inference with the feed's shapes).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsmith.blas import one_blas_thread
from onnxsmith.graph_stats import all_nodes
from onnxsmith.runtime import Outputs, make_session, named_outputs
from onnxsmith.shared_weights import sharing_pays
from onnxsmith.statistics import ErrorEnergy, PairedStatistic, Statistic

if TYPE_CHECKING:
    from onnxsmith.backend import Backend, Session

__all__ = ["MAX_CHUNK_BYTES", "Feeds", "Measurements", "chunk_tensors", "exposed", "feeds_digest", "model_digest", "tensor_bytes"]

MAX_CHUNK_BYTES = 256 << 20  # one feed's exposed tensors in one session
KEPT_SESSIONS = 1  # each holds a copy of the weights (MiniLM: 4 kept sessions cost 400 MB of peak memory)
KEPT_OUTPUTS = 8

Feeds = list[dict[str, np.ndarray]]


class Measurements:
    """The one way to read a model's tensors on data (module docstring). ``counts`` says how
    often it built a session, ran one, and was answered from its caches."""

    def __init__(self, *, max_bytes: int = MAX_CHUNK_BYTES) -> None:
        self.max_bytes = max_bytes
        self.counts: Counter[str] = Counter()
        self._results: dict[Hashable, Any] = {}
        self._sessions: OrderedDict[Hashable, Any] = OrderedDict()
        self._outputs: OrderedDict[Hashable, list[Outputs]] = OrderedDict()
        self._sizes: dict[Hashable, dict[str, int | None]] = {}  # the last model's tensor sizes

    # --- reductions ---------------------------------------------------------------------

    def reduce(self, model: ir.Model, requests: Mapping[str, Statistic], feeds: Feeds, *, optimize: bool = False
               ) -> dict[str, Any]:
        """``requests[tensor] = statistic`` -> ``{tensor: statistic's result}`` over every feed.
        ``optimize``: read the tensors from a session with ONNX Runtime's graph optimizations
        on (faster on convolution models; the exposed tensors are kept, their values equal
        within float rounding)."""
        prefix = (model_digest(model), feeds_digest(feeds))
        result = {}
        missing: dict[str, Statistic] = {}
        for name, statistic in requests.items():
            key = (*prefix, name, statistic)
            if key in self._results:
                self.counts["cached"] += 1
                result[name] = self._results[key]
            else:
                missing[name] = statistic
        for chunk in self._chunks(model, list(missing), feeds):
            session = self._exposed_session(model, chunk, optimize=optimize)
            folds = {name: missing[name].accumulator() for name in chunk}
            for sweep in range(max(missing[name].sweeps for name in chunk)):
                names = [name for name in chunk if missing[name].sweeps > sweep]
                for feed in feeds:
                    self.counts["runs"] += 1
                    arrays = session.run(names, feed)
                    with one_blas_thread():
                        for name, array in zip(names, arrays, strict=True):
                            folds[name].add(np.asarray(array), sweep)
            for name in chunk:
                result[name] = self._results[(*prefix, name, missing[name])] = folds[name].result()
        return result

    def compare(self, reference: ir.Model, candidate: ir.Model, tensors: list[str], feeds: Feeds, *,
                statistic: PairedStatistic = ErrorEnergy(), backend: Backend | None = None) -> dict[str, Any]:
        """Per tensor both models compute, ``statistic`` of (reference's, candidate's) values
        over ``feeds`` (default: (noise, signal) energies); on ``backend``'s sessions if given."""
        prefix = (model_digest(reference), model_digest(candidate), feeds_digest(feeds), statistic, _name(backend))
        result = {}
        missing = []
        for name in dict.fromkeys(tensors):
            if (*prefix, name) in self._results:
                self.counts["cached"] += 1
                result[name] = self._results[(*prefix, name)]
            else:
                missing.append(name)
        folds = {name: statistic.accumulator() for name in missing}
        for _, ref, got in self.paired(reference, candidate, missing, feeds, backend=backend):
            with one_blas_thread():
                for name, array in ref.items():
                    folds[name].add(array, got[name])
        for name in missing:
            result[name] = self._results[(*prefix, name)] = folds[name].result()
        return result

    def memo(self, kind: str, model: ir.Model, feeds: Feeds, compute: Callable[[], Any], *extra: Hashable) -> Any:
        """A result derived from measurements (calibration ranges, a distortion table), cached
        like a statistic: by ``kind``, the model's and feeds' digests and ``extra``."""
        key = (kind, model_digest(model), feeds_digest(feeds), *extra)
        if key in self._results:
            self.counts["cached"] += 1
            return self._results[key]
        value = self._results[key] = compute()
        return value

    # --- the arrays themselves ----------------------------------------------------------

    def stream(self, model: ir.Model, names: list[str], feeds: Feeds, *, optimize: bool = False
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Per chunk of ``names``, per feed: (feed index, {name: array}); nothing kept between yields."""
        for chunk in self._chunks(model, names, feeds):
            session = self._exposed_session(model, chunk, optimize=optimize)
            for index, feed in enumerate(feeds):
                self.counts["runs"] += 1
                yield index, dict(zip(chunk, session.run(chunk, feed), strict=True))

    def paired(self, first: ir.Model, second: ir.Model, names: list[str], feeds: Feeds, *, backend: Backend | None = None,
               optimize: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Like ``stream``, for two models that share the tensor ``names``: per chunk, per feed,
        (feed index, first's arrays, second's arrays). Each model's chunk takes half the bytes."""
        for chunk in self._chunks(first, names, feeds, self.max_bytes // 2):
            a = self._exposed_session(first, chunk, backend=backend, optimize=optimize)
            b = self._exposed_session(second, chunk, backend=backend, optimize=optimize)
            for index, feed in enumerate(feeds):
                self.counts["runs"] += 2
                yield (index, dict(zip(chunk, a.run(chunk, feed), strict=True)),
                       dict(zip(chunk, b.run(chunk, feed), strict=True)))

    # --- whole models: sessions and outputs ---------------------------------------------

    def session(self, model: ir.Model, backend: Backend | None = None) -> Session:
        """A session of ``model`` on ``backend`` (its graph optimizations on), or without one
        an ONNX Runtime CPU session with optimizations off (the reference, so the runtime
        cannot hide a broken rewrite by redoing it); kept for reuse."""
        return self._session(model, model_digest(model), backend)

    def outputs(self, model: ir.Model, feeds: Feeds, backend: Backend | None = None) -> list[Outputs]:
        """``model``'s outputs on every feed, as ``session(model, backend)`` computes them; kept."""
        digest = model_digest(model)

        def compute() -> list[Outputs]:
            session = self._session(model, digest, backend, checking=True)
            names = [v.name for v in model.graph.outputs]
            self.counts["runs"] += len(feeds)
            return [named_outputs(session, names, feed) for feed in feeds]

        key = ("outputs", digest, feeds_digest(feeds), _name(backend))
        return self._kept(self._outputs, key, KEPT_OUTPUTS, compute)

    def release_sessions(self) -> None:
        """Let go of the kept sessions (the pipeline does before each pass): a pass's own
        sessions then do not stack on top of the last check's."""
        self._sessions.clear()

    # --- internals ----------------------------------------------------------------------

    def _session(self, model: ir.Model, digest: str, backend: Backend | None, *, checking: bool = False) -> Session:
        checking = checking and sharing_pays(model)  # only a big model's checking session differs from its timed one

        def create() -> Session:
            self.counts["sessions"] += 1
            if backend is None:
                return make_session(model, optimize=False)
            return backend.create_session(model, checking=checking)

        return self._kept(self._sessions, ("session", digest, _name(backend), checking), KEPT_SESSIONS, create)

    def _exposed_session(self, model: ir.Model, names: list[str], *, optimize: bool = False,
                         backend: Backend | None = None) -> Session:
        self.counts["sessions"] += 1
        with exposed(model, names):
            if backend is not None:
                return backend.create_session(model)
            return make_session(model, optimize=optimize)

    def _chunks(self, model: ir.Model, names: list[str], feeds: Feeds, max_bytes: int | None = None) -> list[list[str]]:
        if not names or not feeds:
            return []
        # Sizes bound memory, they decide no result: keyed by the model object, its tensors'
        # names and the feed's shapes, not a digest of its weights, which refit changes every wave.
        shapes = tuple(sorted((k, np.shape(v)) for k, v in feeds[0].items()))
        key = ("tensor-bytes", id(model), tuple(v.name for node in model.graph for v in node.outputs), shapes)
        if key not in self._sizes:
            self._sizes.clear()
            self._sizes[key] = tensor_bytes(model, feeds[0])
        return chunk_tensors(names, self._sizes[key], max_bytes or self.max_bytes)

    def _kept(self, store: OrderedDict, key: Hashable, limit: int, compute: Callable[[], Any]) -> Any:
        if key in store:
            self.counts["cached"] += 1
            store.move_to_end(key)
            return store[key]
        value = compute()
        store[key] = value
        while len(store) > limit:
            store.popitem(last=False)
        return value


def _name(backend: Backend | None) -> str:
    if backend is None:
        return "reference"
    target = backend.target
    return f"{backend.name}:{target.precision}:{target.threads}"


@contextlib.contextmanager
def exposed(model: ir.Model, names: list[str]) -> Iterator[ir.Model]:
    """``model`` with the tensors ``names`` among its graph outputs, for as long as the block
    runs (long enough to serialize it into a session); restored after, even on error."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    saved = list(model.graph.outputs)
    present = {v.name for v in saved}
    missing = [n for n in names if n not in values and n not in present]
    if missing:
        raise KeyError(f"tensor(s) not in the model's main graph: {', '.join(missing[:5])}")
    model.graph.outputs.extend(values[n] for n in dict.fromkeys(names) if n not in present)
    try:
        yield model
    finally:
        model.graph.outputs.clear()
        model.graph.outputs.extend(saved)


def model_digest(model: ir.Model) -> str:
    """A digest of everything that decides a model's tensors: every node (subgraphs too) with
    its inputs, outputs and attributes, and every byte of every initializer (one still in an
    external data file by its file region: the file is read-only to us)."""
    digest = hashlib.sha256()
    for value in model.graph.inputs:
        digest.update(f"in:{value.name}:{value.dtype}:{value.shape}".encode())
    for node in all_nodes(model):
        inputs = [v.name if v is not None else "" for v in node.inputs]
        outputs = [v.name for v in node.outputs]
        digest.update(f"{node.domain}:{node.op_type}:{node.name}:{inputs}:{outputs}".encode())
        for name, attr in node.attributes.items():
            digest.update(name.encode())
            if attr.type == ir.AttributeType.TENSOR:
                digest.update(np.ascontiguousarray(attr.value.numpy()).tobytes())
            elif attr.type not in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):  # subgraphs: walked by all_nodes
                digest.update(repr(attr.value).encode())
    for name, value in model.graph.initializers.items():
        digest.update(name.encode())
        tensor = value.const_value
        if tensor is None:
            continue
        digest.update(f"{tensor.dtype}:{tensor.shape}".encode())
        if isinstance(tensor, ir.ExternalTensor):  # a read-only file region: where it is names it (no 2 GB read)
            digest.update(f"{tensor.path}:{tensor.offset}:{tensor.length}".encode())
        elif isinstance(tensor, ir.Tensor) and tensor.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
            digest.update(np.ascontiguousarray(tensor.numpy()).view(np.uint8))  # the array's own bytes, not a copy
        else:
            digest.update(tensor.tobytes())
    return digest.hexdigest()


def feeds_digest(feeds: Feeds) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name, array in sorted(feed.items()):
            array = np.asarray(array)
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def chunk_tensors(names: list[str], sizes: Mapping[str, int | None], max_bytes: int = MAX_CHUNK_BYTES) -> list[list[str]]:
    """``names`` in order, grouped so each group's tensors take at most ``max_bytes`` by
    ``sizes`` (tensor_bytes); a tensor larger than that is a group of its own, and an
    unknown size counts as the largest known."""
    known = [sizes[n] for n in names if sizes.get(n) is not None]
    fallback = max(known, default=max_bytes // 16)
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in dict.fromkeys(names):
        size = sizes.get(name) or fallback
        if current and used + size > max_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        chunks.append(current)
    return chunks


def tensor_bytes(model: ir.Model, feed: dict[str, np.ndarray]) -> dict[str, int | None]:
    """Bytes of every main-graph tensor for ``feed`` (ONNX shape inference with the feed's
    shapes; None where it cannot tell)."""
    proto = ir.to_proto(model)
    for initializer in proto.graph.initializer:  # inference needs their shapes, not their floats (100x faster on MiniLM)
        if initializer.data_type != onnx.TensorProto.INT64 and len(initializer.raw_data) > 4096:
            initializer.ClearField("raw_data")
    for value in proto.graph.input:
        if value.name in feed:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, np.shape(feed[value.name]), strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # shape inference is a size estimate here, never a reason to fail
        inferred = proto
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    sizes: dict[str, int | None] = {}
    for name in [v.name for v in model.graph.inputs] + [v.name for node in model.graph for v in node.outputs]:
        info = infos.get(name)
        dims = info.type.tensor_type.shape.dim if info is not None else None
        if not dims and dims is not None and info.type.tensor_type.HasField("shape"):
            sizes[name] = 4
        elif dims and all(d.HasField("dim_value") for d in dims):
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type or 1).itemsize
            sizes[name] = int(np.prod([d.dim_value for d in dims])) * itemsize
        else:
            sizes[name] = None
    return sizes
