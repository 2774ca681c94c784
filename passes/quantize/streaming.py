"""Reading intermediate tensors over many feeds without holding them: bounded chunks, one feed at a time.

Marking every tensor of a big model as an output at once, or keeping every feed's
activations, runs out of memory (PP-OCRv4 det at 736x736: 17.5 GB when the guard kept the
activations of 12 feeds of two models). Here tensors are grouped into chunks whose outputs
for one feed stay under ``max_bytes`` (sizes from ONNX shape inference on the feed's
shapes), one session per chunk, and the caller folds each feed's arrays into running
statistics before the next feed runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir

from onnxsmith.runtime import make_session, with_outputs

__all__ = ["MAX_CHUNK_BYTES", "chunk_tensors", "paired_outputs", "stream_outputs"]

MAX_CHUNK_BYTES = 256 << 20  # one feed's outputs of one session


def chunk_tensors(model: ir.Model, names: list[str], feed: dict[str, np.ndarray], max_bytes: int = MAX_CHUNK_BYTES) -> list[list[str]]:
    """``names`` in order, grouped so each group's tensors for ``feed`` take at most ``max_bytes``
    (a tensor larger than that is a group of its own; unknown sizes count as the largest known)."""
    sizes = _tensor_bytes(model, names, feed)
    known = [s for s in sizes.values() if s is not None]
    fallback = max(known, default=max_bytes // 16)
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in names:
        size = sizes.get(name) or fallback
        if current and used + size > max_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        chunks.append(current)
    return chunks


def stream_outputs(
    model: ir.Model, names: list[str], feeds: list[dict[str, np.ndarray]], max_bytes: int = MAX_CHUNK_BYTES
) -> Iterator[dict[str, np.ndarray]]:
    """Per chunk of ``names``, per feed: {name: array}. Nothing is kept between yields."""
    if not names or not feeds:
        return
    for chunk in chunk_tensors(model, names, feeds[0], max_bytes):
        session = make_session(with_outputs(model, chunk), optimize=False)
        for feed in feeds:
            yield dict(zip(chunk, session.run(chunk, feed), strict=True))
        del session


def paired_outputs(
    first: ir.Model, second: ir.Model, names: list[str], feeds: list[dict[str, np.ndarray]], max_bytes: int = MAX_CHUNK_BYTES
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Like stream_outputs, for two models that share the tensor ``names``: per chunk, per feed,
    (first's arrays, second's arrays). Chunks take half of ``max_bytes`` each."""
    if not names or not feeds:
        return
    for chunk in chunk_tensors(first, names, feeds[0], max_bytes // 2):
        a = make_session(with_outputs(first, chunk), optimize=False)
        b = make_session(with_outputs(second, chunk), optimize=False)
        for feed in feeds:
            yield (dict(zip(chunk, a.run(chunk, feed), strict=True)), dict(zip(chunk, b.run(chunk, feed), strict=True)))
        del a, b


def _tensor_bytes(model: ir.Model, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, int | None]:
    """Bytes of each named float tensor for ``feed`` (ONNX shape inference with the feed's shapes)."""
    proto = ir.to_proto(model)
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
    for name in names:
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
