"""Batch conversion of model zoos: parallel, resumable, isolated, locally or on Ray.

``run_batch(source, outdir, recipe, BatchOptions(...))`` is the library entry point behind
``onnxsmith batch``. The pieces: :mod:`.jobs` (what to convert), :mod:`.ledger` (what is
done), :mod:`.worker` and :mod:`.isolation` (one model in one process), :mod:`.local` and
:mod:`.ray_executor` (where those processes run), :mod:`.summary` (what came of it).
"""

from onnxsmith.batch.runner import BatchEvents, BatchInterrupted, BatchOptions, run_batch
from onnxsmith.batch.summary import BatchSummary, ModelResult, summary_markdown

__all__ = ["BatchEvents", "BatchInterrupted", "BatchOptions", "BatchSummary", "ModelResult", "run_batch", "summary_markdown"]
