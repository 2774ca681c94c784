"""onnxsmith: optimize ONNX models for the runtime you deploy on.

The package root stays import-light (no onnx, onnxruntime or torch) so that the CLI's
``--help`` answers instantly; import submodules for the library API, e.g.
``from onnxsmith.optimize import optimize``.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("onnxsmith")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
