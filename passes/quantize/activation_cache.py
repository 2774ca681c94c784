"""Keys for the activation statistics passes keep in ``ctx.activations``.

A statistic of a tensor (its Hessian for GPTQ, its per-channel max for smooth) is valid
for one graph, its weights and the feeds it was collected on; a pass that changed any of
them upstream (smooth rescales weights in place) must not be served a stale one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_ir as ir

__all__ = ["activation_key"]


def activation_key(kind: str, model: ir.Model, tensors: list[str], feeds: list[dict[str, np.ndarray]]) -> str:
    """A key naming ``kind`` of statistic of ``tensors`` in ``model`` over ``feeds``."""
    digest = hashlib.sha256(repr((kind, tuple(tensors))).encode())
    for node in model.graph:
        inputs = [v.name if v is not None else "" for v in node.inputs]
        digest.update(f"{node.domain}:{node.op_type}:{node.name}:{inputs}".encode())
    for value in model.graph.initializers.values():
        digest.update(value.name.encode())
        if value.const_value is not None:
            digest.update(value.const_value.tobytes())
    for feed in feeds:
        for name, array in sorted(feed.items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return f"{kind}:{digest.hexdigest()}"
