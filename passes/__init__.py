"""Pass families; importing this package registers them (see the entry point in pyproject)."""

from onnxsmith.passes import cleanup, fuse, opset, ort_bake, quantize, shapes

__all__ = ["cleanup", "fuse", "opset", "ort_bake", "quantize", "shapes"]
