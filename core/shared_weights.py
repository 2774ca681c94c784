"""Reference sessions of big models that read our weights in place instead of copying them.

An ONNX Runtime session loads its own copy of every initializer, and a reference session
(optimizations off) of a 2 GB model written to a temporary file for it held the model three
times at once: our tensors, the file's pages, the session's buffers (peak RSS 3.5x the
model for ``cleanup``). Here the session's model file carries no weight data: each big
initializer points at an empty placeholder file and is handed to the session with
``SessionOptions.add_initializer`` as an OrtValue over our own array (memory-mapped for
weights still in the model's external data), which ONNX Runtime uses without a copy.
Prepacking is turned off for such sessions, as it would copy the weights again; they check
outputs, they are not timed.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxsmith.modelio import model_bytes, reads_external_files

__all__ = ["MIN_SHARED_BYTES", "SHARE_FROM_MODEL_BYTES", "sharing_pays", "weights_shared_source"]

SHARE_FROM_MODEL_BYTES = 256 * 1024 * 1024  # below this a copy per session costs little
MIN_SHARED_BYTES = 1024 * 1024  # smaller initializers travel in the model file as usual
_PLACEHOLDER = "shared-weights.placeholder"
# numpy dtypes an OrtValue can wrap as they are (bfloat16, float8 and int4 tensors are copied)
_SHAREABLE = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8, ir.DataType.UINT8,
                        ir.DataType.INT16, ir.DataType.UINT16, ir.DataType.INT32, ir.DataType.UINT32, ir.DataType.INT64,
                        ir.DataType.UINT64, ir.DataType.BOOL})


def sharing_pays(model: ir.Model) -> bool:
    """Whether a reference session of ``model`` should read its weights in place: they are
    big, or still in the model's external data files."""
    return reads_external_files(model) or model_bytes(model) >= SHARE_FROM_MODEL_BYTES


@contextlib.contextmanager
def weights_shared_source(model: ir.Model) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yield a temporary model file without the big initializers' data, and those
    initializers' arrays by name (views of our tensors, not copies) for ``add_initializer``.
    ``model`` is unchanged when the block ends."""
    shared: dict[str, np.ndarray] = {}
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    with tempfile.TemporaryDirectory(prefix="onnxsmith-session-") as tmp:
        (Path(tmp) / _PLACEHOLDER).touch()  # never read: every tensor pointing at it is given by add_initializer
        try:
            for name, value in model.graph.initializers.items():
                tensor = value.const_value
                if tensor is None:
                    continue
                array = np.asarray(tensor.numpy()) if tensor.dtype in _SHAREABLE and tensor.nbytes >= MIN_SHARED_BYTES else None
                if array is None or not array.flags.c_contiguous:
                    if isinstance(tensor, ir.ExternalTensor):  # its file is not beside the temporary model: inline it
                        swapped.append((value, tensor))
                        value.const_value = ir.Tensor(tensor.numpy(), name=name)
                    continue
                shared[name] = array
                swapped.append((value, tensor))
                value.const_value = ir.ExternalTensor(_PLACEHOLDER, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                                                      name=name, base_dir=tmp)
            target = Path(tmp) / "model.onnx"
            target.write_bytes(ir.serde.serialize_model(model).SerializeToString())
        finally:
            for value, tensor in swapped:
                value.const_value = tensor
        yield str(target), shared
