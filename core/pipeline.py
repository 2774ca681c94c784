"""The pipeline: run passes in order, verify the model after each, record what happened.

After every pass: the ONNX checker, then the outputs on the evaluation feeds compared with
the original model's. An exact pass runs on ONNX Runtime CPU with its own graph
optimizations off (so it cannot mask a broken rewrite) and must stay within the pass's
``rtol``/``atol``; a lossy pass records its drift, measured on the target backend's own
session (optimizations on), since that is where integer kernels run. Sessions and outputs
come from the context's measurement service, which the passes share. Anything else a user may want around a
pass (progress, IR dumps) is an Instrument, in the manner of TVM's pass instruments.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import onnx
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.errors import OnnxsmithError, PassFailure, first_line
from onnxsmith.graph_stats import count_nodes
from onnxsmith.metrics import OutputDrift, check_reference, compare_outputs, within_tolerance
from onnxsmith.model import Model
from onnxsmith.modelio import model_bytes, reads_external_files, save_onnx
from onnxsmith.opset_forms import legalize_opset_forms
from onnxsmith.pass_base import Pass
from onnxsmith.report import PassRecord
from onnxsmith.runtime import Outputs
from onnxsmith.shared_weights import SHARE_FROM_MODEL_BYTES

__all__ = ["DumpInstrument", "Instrument", "Pipeline", "PipelineResult"]

logger = logging.getLogger(__name__)

# Above this many bytes of weights, ONNX's checker (which needs the whole model as one
# protobuf, a copy of every weight) is skipped: loading the model in ONNX Runtime checks it.
CHECKER_MAX_BYTES = SHARE_FROM_MODEL_BYTES


class Instrument(Protocol):
    """Hooks around each pass; an instrument observes and must not change the model."""

    def before_pass(self, pass_: Pass, model: Model) -> None: ...

    def after_pass(self, pass_: Pass, model: Model, record: PassRecord) -> None: ...


class DumpInstrument:
    """Writes the model after every pass to ``folder/NN-name.onnx`` (``--dump-dir``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.index = 0

    def before_pass(self, pass_: Pass, model: Model) -> None:
        pass

    def after_pass(self, pass_: Pass, model: Model, record: PassRecord) -> None:
        self.index += 1
        save_onnx(model.ir, self.folder / f"{self.index:02d}-{pass_.name}.onnx")


class PipelineResult:
    """The records of every pass and the final comparison with the original outputs."""

    def __init__(self, records: list[PassRecord], outputs: dict[str, OutputDrift], drift: float) -> None:
        self.records = records
        self.outputs = outputs
        self.drift = drift  # ctx.metric of the final model


class Pipeline:
    def __init__(self, passes: list[Pass], *, instruments: list[Instrument] | tuple[Instrument, ...] = ()) -> None:
        self.passes = passes
        self.instruments = list(instruments)

    def run(self, model: Model, ctx: Context) -> PipelineResult:
        """Run every pass on ``model`` (replacing ``model.ir`` as passes return new models)."""
        if ctx.evaluation is None or ctx.reference is None:
            raise ValueError("the pipeline needs ctx.evaluation and ctx.reference to verify passes")
        check_reference(ctx.reference, ctx.evaluation.describe_sample)
        records: list[PassRecord] = []
        outputs = compare_outputs(ctx.reference, ctx.reference)
        final_drift = 0.0
        for pass_ in self.passes:  # before the first pass runs: a late pass must not fail for data after minutes of work
            if pass_.requires_calibration():
                ctx.require_calibration(pass_.name)
        for pass_ in self.passes:
            for instrument in self.instruments:
                instrument.before_pass(pass_, model)
            nodes_before = count_nodes(model.ir)
            ctx.measure.release_sessions()
            start = time.perf_counter()
            try:
                result = pass_.apply(model.ir, ctx)
            except OnnxsmithError:
                raise
            except Exception as e:
                logger.debug("pass %s raised", pass_.name, exc_info=True)
                raise PassFailure(
                    f"pass '{pass_.name}' failed: {type(e).__name__}: {first_line(e)}",
                    "leave it out of the pipeline, or rerun with --debug and report the traceback",
                ) from e
            seconds = time.perf_counter() - start
            model.ir = result.model
            stuck = legalize_opset_forms(model.ir)  # a rewriter may have built a node in a newer opset's form
            if stuck:
                raise PassFailure(
                    f"pass '{pass_.name}' built {', '.join(stuck[:3])} in a form opset {model.ir.opset_imports['']} does not define "
                    "(a non-constant axes/split input, or an attribute of a later opset)",
                    "upgrade the opset first: put opset{version=13} before it in the pipeline",
                )
            model.origin.update(model.ir, pass_.name)
            got = self.verify(pass_, model, ctx)
            outputs, final_drift = compare_outputs(ctx.reference, got), ctx.drift(got)
            record = PassRecord(
                name=pass_.name,
                params=pass_.params(),
                seconds=seconds,
                nodes_before=nodes_before,
                nodes_after=count_nodes(model.ir),
                modified=result.modified,
                exact=pass_.exact,
                drift=final_drift,
                counts=result.counts,
                notes=result.notes,
                warnings=result.warnings,
                layers=result.layers,
            )
            records.append(record)
            for instrument in self.instruments:
                instrument.after_pass(pass_, model, record)
        return PipelineResult(records, outputs, final_drift)

    def verify(self, pass_: Pass, model: Model, ctx: Context) -> list[Outputs]:
        """Check the model after ``pass_``; its outputs on the evaluation feeds, or PassFailure
        naming the pass and the check. Outputs come from ``ctx.measure``, so a lossy pass's
        guard that already ran the final model on these feeds is not run again."""
        feeds = ctx.evaluation.feeds()
        lossy_on_target = not pass_.exact and ctx.backend is not None
        try:
            if model_bytes(model.ir) < CHECKER_MAX_BYTES and not reads_external_files(model.ir):
                onnx.checker.check_model(ir.to_proto(model.ir))  # bigger ones: loading them in ONNX Runtime is the check
            if lossy_on_target:  # the drift as the target computes it (its kernels, its optimizations)
                got = ctx.measure.outputs(model.ir, feeds, ctx.backend)
            else:
                got = ctx.measure.outputs(model.ir, feeds)  # ORT CPU, optimizations off
                if ctx.backend is not None and ctx.backend.name != "cpu":
                    ctx.measure.session(model.ir, ctx.backend)  # the target backend must load it too
        except Exception as e:
            first = first_line(e, 300)
            raise PassFailure(
                f"pass '{pass_.name}' produced a model that does not load: {first}",
                "leave the pass out and report the problem with --debug output",
            ) from e
        if pass_.exact:
            problem = within_tolerance(ctx.reference, got, rtol=pass_.rtol, atol=pass_.atol)
            if problem:
                raise PassFailure(
                    f"pass '{pass_.name}' should keep outputs unchanged but {problem}",
                    "leave the pass out and report the model",
                )
        return got
