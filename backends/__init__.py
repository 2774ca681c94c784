"""Runtime backends; importing this package registers them (see the entry point in pyproject)."""

from onnxsmith.backends import onnxruntime_cpu

__all__ = ["onnxruntime_cpu"]
