"""A layer's inputs as the rows its weight multiplies: im2col patches of a Conv, rows of a MatMul.

``rows`` picks output positions (or input rows), at most ``limit``; ``patches`` gathers, for
those positions only, the input values each one multiplies with the weight, channel-major like
the weight's flattening (``[Cin, kh, kw]``). Only 2-D convolutions (strides, dilations, pads
and ``auto_pad``) are handled; the caller refits nothing else.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsmith.passes.prune.channel_graph import WeightLayer, const_array

__all__ = ["patches", "rows"]


def rows(layer: WeightLayer, x: np.ndarray, rng: np.random.Generator, limit: int) -> np.ndarray:
    """Flat indices of the output positions (or input rows) to use, at most ``limit``."""
    if layer.kind == "conv":
        n, _, *spatial = x.shape
        total = n * int(np.prod(_out_size(layer.node, spatial, const_array(layer.node.inputs[1]).shape[2:])))
    else:
        total = int(np.prod(x.shape[:-1]))
    if total <= limit:
        return np.arange(total)
    return np.sort(rng.choice(total, limit, replace=False))


def patches(layer: WeightLayer, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[rows, K] float32: im2col patches at the chosen output positions (channel-major, like W)."""
    if layer.kind != "conv":
        return x.reshape(-1, x.shape[-1])[rows].astype(np.float32)
    node = layer.node
    kernel = tuple(const_array(node.inputs[1]).shape[2:])
    attrs = _geometry(node, x.shape[2:], kernel)
    strides, dilations, pads = attrs
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h, out_w = _out_size(node, x.shape[2:], kernel, attrs)
    n_idx, rest = np.divmod(rows, out_h * out_w)
    oh, ow = np.divmod(rest, out_w)
    taps = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            taps.append(padded[n_idx, :, oh * strides[0] + i * dilations[0], ow * strides[1] + j * dilations[1]])
    return np.stack(taps, axis=2).reshape(len(rows), -1).astype(np.float32)


def _geometry(node: ir.Node, spatial, kernel) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, pads as [top, left, bottom, right]) of a 2-D convolution."""
    strides = _ints(node, "strides") or [1, 1]
    dilations = _ints(node, "dilations") or [1, 1]
    pads = _ints(node, "pads") or [0, 0, 0, 0]
    auto = node.attributes.get("auto_pad")
    mode = auto.value if auto is not None else "NOTSET"
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for a in range(2):
            out = -(-spatial[a] // strides[a])
            total = max((out - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1 - spatial[a], 0)
            small, big = total // 2, total - total // 2
            pads[a], pads[a + 2] = (small, big) if mode == "SAME_UPPER" else (big, small)
    elif mode == "VALID":
        pads = [0, 0, 0, 0]
    return strides, dilations, pads


def _out_size(node: ir.Node, spatial, kernel, attrs=None) -> tuple[int, int]:
    strides, dilations, pads = attrs or _geometry(node, spatial, kernel)
    return tuple(
        (spatial[a] + pads[a] + pads[a + 2] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1 for a in range(2)
    )


def _ints(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return None if attr is None else [int(v) for v in attr.value]
