"""Scales, zero points and integer data of int8 QDQ tensors, as ONNX Runtime's quantizer computes them.

ONNX Runtime's integer kernels take these numbers as written, so qdq_writer.py must compute
the very ones ``onnxruntime.quantization`` does (quant_utils.py, base_quantizer.py,
qdq_quantizer.py) for its models to give the same outputs. The rules, for 8-bit types:

1. Integer range: uint8 0..255, int8 -128..127; symmetric int8 -127..127; reduced range (7-bit
   weights, for x86 without VNNI where u8 x s8 products saturate) uint8 0..127, int8 -64..64.
2. A real range [low, high] is widened to hold 0, so that 0 is exact; symmetric makes it
   [-m, m] with m = max(|low|, |high|). scale = (high - low) / (qmax - qmin) in float64,
   stored as float32; zero point = round(qmin - low / scale), or the middle of the integer
   range when symmetric (0 for int8). A scale below float32's smallest normal becomes 1,
   with zero point 0.
3. Data: q = clip(round(x / scale) + zero point) in float32, rounding half to even, clipped
   to the type's full range.
4. Per channel: rules 2 and 3 on each slice along the channel axis.
5. Bias: int32 with zero point 0 and scale = input scale x weight scale, divided and rounded
   in float64. Where that scale would push |bias / scale| past int32, the weight's scale is
   raised first, to 1.0001 x what the bias needs (TensorFlow Lite does the same); a bias that
   still does not fit cannot be written. Gemm's bias is beta x C, and beta becomes 1 (ONNX
   Runtime puts beta into the scale instead, and its model then drops beta from the sum).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["IntType", "QuantParams", "fit_weight_scale", "quantize", "quantize_bias", "range_params", "weight_params"]

_INT32 = np.iinfo(np.int32)
_INT32_SPAN = float(_INT32.max) - float(_INT32.min + 1)  # the span ONNX Runtime sizes bias scales by
_BIAS_MARGIN = 1.0001


@dataclass(frozen=True)
class IntType:
    """An 8-bit integer type and how a real range maps onto it (rule 1)."""

    dtype: type[np.integer]  # np.int8 or np.uint8
    symmetric: bool
    reduce_range: bool = False

    def bounds(self) -> tuple[int, int]:
        if self.reduce_range:
            return (0, 127) if self.dtype == np.uint8 else (-64, 64)
        if self.symmetric and self.dtype == np.int8:
            return -127, 127
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)


@dataclass(frozen=True)
class QuantParams:
    """float32 scale and zero point, shaped () per tensor or (C,) per channel along ``axis``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None


def range_params(low: float | np.ndarray, high: float | np.ndarray, kind: IntType) -> QuantParams:
    """Rule 2 for a range, or elementwise for arrays of lows and highs."""
    qmin, qmax = kind.bounds()
    low = np.minimum(np.asarray(low, dtype=np.float32), np.float32(0))
    high = np.maximum(np.asarray(high, dtype=np.float32), np.float32(0))
    if kind.symmetric:
        high = np.maximum(np.abs(low), np.abs(high))
        low = -high
    scale = (high.astype(np.float64) - low.astype(np.float64)) / float(qmax - qmin)
    flat = scale < np.finfo(np.float32).tiny
    if kind.symmetric:
        zero_point = np.full(scale.shape, np.round((qmin + qmax) / 2.0))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            zero_point = np.round(qmin - low / scale)
    return QuantParams(np.where(flat, 1.0, scale).astype(np.float32), np.where(flat, 0, zero_point).astype(kind.dtype))


def weight_params(weight: np.ndarray, kind: IntType, axis: int | None) -> QuantParams:
    """Rule 2 on a constant's own range: the whole tensor, or each slice along ``axis`` (rule 4)."""
    if axis is None:
        return range_params(weight.min(), weight.max(), kind)
    others = tuple(i for i in range(weight.ndim) if i != axis)
    return replace(range_params(weight.min(axis=others), weight.max(axis=others), kind), axis=axis)


def quantize(data: np.ndarray, params: QuantParams) -> np.ndarray:
    """Rule 3: ``data`` as integers of the zero point's type."""
    scale, zero_point = _along_axis(params, data.ndim)
    info = np.iinfo(params.zero_point.dtype)
    rounded = np.round(data.astype(np.float32) / scale) + zero_point
    return np.clip(rounded, info.min, info.max).astype(params.zero_point.dtype)


def fit_weight_scale(bias: np.ndarray, input_scale: np.ndarray, weight: QuantParams) -> QuantParams:
    """``weight`` with its scale raised where input scale x weight scale is too small for ``bias``
    to fit int32 (rule 5); per channel, ``bias`` holds one value per channel. The float32 and
    float64 steps are ONNX Runtime's, so the raised scales are bit for bit the same."""
    candidate = np.float64(input_scale) * weight.scale.astype(np.float64)
    if weight.axis is None:
        extreme = max(abs(min(np.float64(bias.min()), 0.0)), abs(max(np.float64(bias.max()), 0.0)))
        needed = np.float64(_BIAS_MARGIN * (2.0 * extreme) / _INT32_SPAN)
    else:
        needed = np.float32(_BIAS_MARGIN) * (np.float32(2.0) * np.abs(bias.astype(np.float32))) / np.float64(_INT32_SPAN)
    raise_ = (candidate < needed) & (candidate > 0.0)
    if not np.any(raise_):
        return weight
    with np.errstate(divide="ignore", invalid="ignore"):
        raised = (weight.scale.astype(np.float64) * (needed / candidate)).astype(np.float32)
    return replace(weight, scale=np.where(raise_, raised, weight.scale).astype(np.float32))


def quantize_bias(bias: np.ndarray, input_scale: np.ndarray, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(int32 bias, its float32 scale) by rule 5, or None when a value does not fit int32."""
    scale = (np.float32(input_scale) * weight_scale).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.round(bias.astype(np.float64) / scale.astype(np.float64))
    if not np.all(np.isfinite(steps)) or np.any(np.abs(steps) > _INT32.max):
        return None
    return steps.astype(np.int32), scale


def _along_axis(params: QuantParams, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point shaped to broadcast over data of ``rank`` dimensions."""
    if params.axis is None:
        return params.scale, params.zero_point
    shape = [1] * rank
    shape[params.axis] = -1
    return params.scale.reshape(shape), params.zero_point.reshape(shape)
