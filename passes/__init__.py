"""Pass families; importing this package registers them (see the entry point in pyproject)."""

from onnxsmith.passes import cleanup, fuse, lowrank, opset, ort_bake, prune, quantize, shapes, smooth

__all__ = ["cleanup", "fuse", "lowrank", "opset", "ort_bake", "prune", "quantize", "shapes", "smooth"]
