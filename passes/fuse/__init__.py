"""The ``fuse`` pass family: exact, backend-aware graph rewrites (see fuse_pass.py)."""

from onnxsmith.passes.fuse.fuse_pass import FusePass

__all__ = ["FusePass"]
