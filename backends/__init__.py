"""Runtime backends; importing this package registers them (see the entry point in pyproject)."""

from onnxsmith.backends import onnxruntime_cpu, onnxruntime_eps, openvino_backend

__all__ = ["onnxruntime_cpu", "onnxruntime_eps", "openvino_backend"]
