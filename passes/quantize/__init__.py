"""The ``quantize`` pass family (see quantize_pass.py)."""

from onnxsmith.passes.quantize.quantize_pass import QuantizePass

__all__ = ["QuantizePass"]
