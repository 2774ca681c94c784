"""Writing int8 QDQ models from our calibration ranges, op selection and exclusions.

The graph is written by qdq_writer.py, in the node units ONNX Runtime's QDQ selectors fuse
into integer kernels (the shapes its QDQQuantizer writes, without its crashes on real
models). ``write_qdq`` also says which layers it left float and why; ``quantize_qdq`` keeps
the model only, and logs them.

Per-channel weights need ai.onnx opset >= 13 (DequantizeLinear's ``axis``); PP-OCRv4 det and
rec are opset 12, so we convert the model to opset 13 first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx
import onnx.version_converter
import onnx_ir as ir

from onnxsmith.passes.quantize.calibration import TensorRange
from onnxsmith.passes.quantize.qdq_writer import MIN_PER_CHANNEL_OPSET, QdqResult, write_qdq

__all__ = ["MIN_PER_CHANNEL_OPSET", "QdqResult", "quantize_qdq", "upgrade_for_per_channel", "write_qdq"]

logger = logging.getLogger(__name__)


def upgrade_for_per_channel(model: ir.Model) -> tuple[ir.Model, int | None]:
    """The model at opset >= 13 (converted if needed) and the opset it came from, if converted."""
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if opset >= MIN_PER_CHANNEL_OPSET:
        return model, None
    converted = onnx.version_converter.convert_version(ir.to_proto(model), MIN_PER_CHANNEL_OPSET)
    return ir.from_proto(converted), opset


def quantize_qdq(
    model: ir.Model,
    ranges: dict[str, TensorRange],
    *,
    op_types: Sequence[str],
    exclude: Sequence[str],
    per_channel: bool,
    activations: str,
    reduce_range: bool = False,
    float_output_ops: Sequence[str] = (),
    weights: str = "int8",
    integer_hard_activations: bool = False,
) -> QdqResult:
    """``model`` with int8 QDQ around the chosen ops; nodes named in ``exclude``, and those that
    cannot be written (``skipped``, with the reason; also logged), stay float. ``reduce_range``:
    7-bit weights, for x86 without VNNI, where u8 x s8 products saturate int16 pairs."""
    result = write_qdq(model, ranges, op_types=op_types, exclude=exclude, per_channel=per_channel,
                       activations=activations, reduce_range=reduce_range, float_output_ops=float_output_ops,
                       weights=weights, integer_hard_activations=integer_hard_activations)
    for name, reason in result.skipped.items():
        logger.info("int8 QDQ: %s stays float: %s", name, reason)
    return result
