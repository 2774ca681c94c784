"""The ``prune`` pass family (see prune_pass.py)."""

from onnxsmith.passes.prune.prune_pass import PrunePass

__all__ = ["PrunePass"]
