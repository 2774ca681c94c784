"""Writing int8 QDQ models with ONNX Runtime's own QDQ quantizer, fed our calibration ranges.

ONNX Runtime fuses ``DequantizeLinear -> op -> QuantizeLinear`` into integer kernels only
for the exact shapes its QDQ selectors expect (shared scales through Concat/pooling,
int32 bias with scale = input scale x weight scale, per-channel axes per op type...).
Its QDQQuantizer writes exactly those shapes, so we use it for the rewrite and bring our
own ranges (calibration.py), op selection and exclusions.

Per-channel weights need ai.onnx opset >= 13 (DequantizeLinear's ``axis``). ONNX
Runtime's ``quantize_static`` writes an invalid model for older opsets (PP-OCRv4 det and
rec are opset 12); we convert the model to opset 13 first.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxruntime.quantization import CalibrationMethod, QDQQuantizer, QuantType, TensorData, TensorsData

from onnxsmith.passes.quantize.calibration import TensorRange

__all__ = ["MIN_PER_CHANNEL_OPSET", "quantize_qdq", "upgrade_for_per_channel"]

logger = logging.getLogger(__name__)

MIN_PER_CHANNEL_OPSET = 13


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
    op_types: list[str],
    exclude: list[str],
    per_channel: bool,
    activations: str,
    reduce_range: bool = False,
    float_output_ops: list[str] = (),
    weights: str = "int8",
) -> ir.Model:
    """``model`` with int8 QDQ around the chosen ops; nodes named in ``exclude`` stay float."""
    proto = onnx.shape_inference.infer_shapes(ir.to_proto(model))
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {name: TensorData(lowest=np.float32(r.low), highest=np.float32(r.high)) for name, r in ranges.items()},
    )
    quantizer = QDQQuantizer(
        proto,
        per_channel,
        reduce_range,  # 7-bit weights: u8 x s8 products saturate int16 pairs on x86 without VNNI
        QuantType.QInt8 if weights == "int8" else QuantType.QUInt8,
        QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
        tensors,
        None,
        exclude,
        op_types,
        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True,
                       "OpTypesToExcludeOutputQuantization": list(float_output_ops)},
    )
    quantized = ir.from_proto(quantizer.quantize_model())
    common_passes.TopologicalSortPass()(quantized)  # the quantizer appends Q/DQ nodes at the end
    return quantized
