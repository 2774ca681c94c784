"""``optimize``: load, run the recipe's pipeline, check the budget, measure, write.

The library entry point behind ``onnxsmith optimize``; the CLI only parses and renders.
Nothing is written until every check passed, and then atomically: the artifact (with
provenance in its metadata) and ``OUT.report.json`` beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from onnxsmith import __version__
from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.costs import costs_json, load_costs
from onnxsmith.data import Dataset, ImageOptions, InputSpec, load_dataset, model_inputs, random_dataset, split_dataset
from onnxsmith.errors import AccuracyBudgetExceeded, DataError, InputError, RecipeError, first_line
from onnxsmith.graph_stats import graph_stats
from onnxsmith.latency import measure_interleaved
from onnxsmith.measure import Measurements
from onnxsmith.metrics import OutputDrift, compare_outputs, load_metric
from onnxsmith.model import INFERENCE_PRECISION_KEY, Model
from onnxsmith.modelio import EXTERNAL_DATA_THRESHOLD, model_bytes, save_onnx, write_text_atomic
from onnxsmith.pipeline import Instrument, Pipeline
from onnxsmith.profile_compare import compare_profiles
from onnxsmith.recipe import Recipe
from onnxsmith.report import OutputReport, PassRecord, Report, Summary
from onnxsmith.sources import load_source
from onnxsmith.task_choice import AUTO, DRIFT, choose_metric
from onnxsmith.task_metrics import MASK_INPUT, has_padding

__all__ = ["OptimizeOptions", "optimize", "report_path_for"]

logger = logging.getLogger(__name__)

RANDOM_EVAL_SAMPLES = 4


@dataclass
class OptimizeOptions:
    """Settings of one run that are not part of the recipe (they do not change the artifact)."""

    input_shapes: list[tuple[int, ...]] | None = None
    latency_rounds: int = 15
    profile_runs: int = 0  # > 0: profile on the backend before and after, into the report's ``profile``
    instruments: tuple[Instrument, ...] = ()
    save_costs: Path | None = None  # write the per-layer int8 costs measured here (costs.py)


def report_path_for(output: Path) -> Path:
    """``out/model.onnx`` -> ``out/model.report.json``."""
    return output.with_name(output.stem + ".report.json")


def optimize(source: str, output: str | Path, recipe: Recipe, options: OptimizeOptions | None = None) -> Report:
    """Run ``recipe`` on the model at ``source`` and write the artifact to ``output``."""
    options = options or OptimizeOptions()
    output = Path(output)
    _refuse_overwriting_input(source, output)
    passes = recipe.build_passes()
    if recipe.accuracy.metric not in (None, AUTO):
        load_metric(recipe.accuracy.metric)  # a bad --metric fails before the model is loaded
    costs = load_costs(recipe.target.costs) if recipe.target.costs else None
    if costs is not None and costs.backend != recipe.backend:
        raise RecipeError(f"the cost table {costs.source} was measured on backend '{costs.backend}', not '{recipe.backend}'",
                          f"use --backend {costs.backend}, or save costs on the deployment machine with this backend")
    backend = get_backend(recipe.backend, recipe.target.load(costs))
    model = load_source(source, options.input_shapes)
    inputs = model_inputs(model.ir)
    pinned = {name: shape for p in passes for name, shape in p.input_shapes().items()}
    calibration, evaluation = _datasets(recipe, inputs, options.input_shapes, pinned)

    stats_before = graph_stats(model.ir)
    measure = Measurements()
    reference = _reference_outputs(measure, model, evaluation)
    budget = recipe.accuracy.max_drift
    choice = choose_metric(recipe.accuracy.metric, budget, model.ir, reference, evaluation.feeds())
    baseline = backend.create_session(model.ir) if options.latency_rounds else None
    profile_before = backend.profile(model.ir, evaluation.feeds(), runs=options.profile_runs) if options.profile_runs else None

    ctx = Context(backend=backend, calibration=calibration, evaluation=evaluation, reference=reference, seed=recipe.seed,
                  max_drift=choice.budget, metric=choice.metric, measure=measure, costs=costs)
    result = Pipeline(passes, instruments=options.instruments).run(model, ctx)
    runtime = _runtime_precision(ctx, model)
    drift = max(result.drift, runtime["drift"]) if runtime else result.drift

    if budget is not None and drift > budget:
        raise AccuracyBudgetExceeded(
            f"{choice.name} drift {drift:.4g} exceeds the budget max_drift={budget:g}"
            f"{' with the runtime in ' + runtime['precision'] if runtime else ''}; nothing was written",
            "relax accuracy.max_drift, or drop or tune the lossy passes",
        )

    latency: dict[str, float | None] = {"before": None, "after": None, "speedup": None}
    timed = None
    if baseline is not None:
        timed = measure_interleaved(
            {"before": baseline, "after": measure.session(model.ir, backend)},
            evaluation.feeds()[0],
            rounds=options.latency_rounds,
        )
        latency = {
            "before": timed["before"].median_ms,
            "after": timed["after"].median_ms,
            "speedup": timed["before"].median_ms / timed["after"].median_ms,
        }

    resolved = recipe.resolved()
    model.stamp_provenance(__version__, resolved)
    model.ir.metadata_props[INFERENCE_PRECISION_KEY] = backend.target.precision
    profile = None
    if profile_before is not None:  # after stamping: the artifact's origin map names its layers
        profile_after = backend.profile(model.ir, evaluation.feeds(), runs=options.profile_runs)
        compared = compare_profiles(profile_before, profile_after, sqnr={}, other=str(model.source or source),
                                    latency=(timed["before"], timed["after"]) if timed else None)
        profile = {"before": profile_before.to_dict(), "after": compared.to_dict()}
    external = model.used_external_data or model_bytes(model.ir) >= EXTERNAL_DATA_THRESHOLD
    written = save_onnx(model.ir, output, external_data=external)

    stats_after = graph_stats(model.ir)
    report = Report(
        tool_version=__version__,
        source={
            "path": str(model.source) if model.source else source,
            "sha256": model.sha256,
            "format": "onnx" if model.source is not None and model.source.suffix == ".onnx" else "torch",
        },
        backend=backend.name,
        target=backend.describe_target(),
        recipe=resolved,
        passes=result.records,
        summary=Summary(
            nodes={"before": stats_before.nodes, "after": stats_after.nodes},
            params={"before": stats_before.params, "after": stats_after.params},
            bytes={"before": _size(model.source, model.data_files), "after": sum(p.stat().st_size for p in written)},
            latency_ms=latency,
            drift=drift,
            outputs={name: _output_report(d) for name, d in result.outputs.items()},
            runtime_precision=runtime,
        ),
        data={
            "calibration": calibration.describe() if calibration else None,
            "evaluation": evaluation.describe(),
        },
        artifact={"path": str(output), "files": [str(p) for p in written], "external_data": external},
        warnings=[*backend.target.warnings(), *_warnings(evaluation, result.records, choice.name)],
        profile=profile,
        accuracy=choice.describe(),
    )
    write_text_atomic(report_path_for(output), report.to_json())
    if options.save_costs is not None:
        rows = [row for record in result.records for row in record.layers if "float_ms" in row]
        if not rows:
            logger.warning("--save-costs: no pass timed layers on this machine (int8 with speed=measured does); nothing written")
        else:
            write_text_atomic(options.save_costs, costs_json(backend.target.host or backend.target.cpu, backend.name, rows))
    return report


def _runtime_precision(ctx: Context, model: Model) -> dict[str, object] | None:
    """With the runtime told to compute in bf16/fp16 (a lossy choice of the target), the final
    model's outputs as the backend computes them in that precision, and their drift."""
    precision = ctx.backend.target.precision
    if precision == "fp32":
        return None
    got = ctx.measure.outputs(model.ir, ctx.evaluation.feeds(), ctx.backend)
    ran = getattr(ctx.measure.session(model.ir, ctx.backend), "precision", precision)
    return {"precision": ran, "drift": ctx.drift(got), "outputs": {n: vars(_output_report(d)) for n, d in compare_outputs(ctx.reference, got).items()}}


def _reference_outputs(measure: Measurements, model: Model, evaluation: Dataset) -> list:
    """The original model's outputs on the evaluation feeds (ONNX Runtime, optimizations off)."""
    try:
        measure.session(model.ir)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        first = first_line(e)
        raise InputError(f"ONNX Runtime cannot load the model: {first}", "check that every op and opset it uses is one ONNX Runtime supports") from None
    try:
        return measure.outputs(model.ir, evaluation.feeds())
    except Exception as e:  # onnxruntime raises its own Fail/InvalidArgument types
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in evaluation.feeds()[0].items())
        first = first_line(e)
        fix = ("give real sizes for its dynamic dims with --input-shape (or data with --calib)" if evaluation.random
               else "check that the data matches what the model expects")
        raise DataError(f"the original model fails on the evaluation feeds ({shapes}): {first}", fix) from None


def _refuse_overwriting_input(source: str, output: Path) -> None:
    src = Path(source)
    if src.exists() and output.exists() and src.resolve() == output.resolve():
        raise InputError(f"the output {output} is the input model", "choose another -o path; onnxsmith never modifies its input")
    if output.suffix != ".onnx":
        raise InputError(f"output path {output} does not end in .onnx", "name the artifact something.onnx")


def _datasets(
    recipe: Recipe,
    inputs: list[InputSpec],
    input_shapes: list[tuple[int, ...]] | None,
    pinned: dict[str, tuple[int | None, ...]],
) -> tuple[Dataset | None, Dataset]:
    """(calibration or None, held-out evaluation) from the recipe's calibration settings.

    Random feeds take their shapes from --input-shape, else from dims a pass pins.
    """
    spec = recipe.calibration
    specs = {spec.name: spec for spec in inputs}
    shapes = {  # a pinned dim counts only where the model's dim is dynamic; the pass checks the rest
        name: tuple(have if isinstance(have, int) else (want or 1) for have, want in zip(specs[name].shape, dims))
        for name, dims in pinned.items()
        if name in specs and len(specs[name].shape) == len(dims)
    }
    shapes.update(_shapes_by_name(inputs, input_shapes))
    if spec.data is None:
        return None, random_dataset(inputs, samples=RANDOM_EVAL_SAMPLES, shapes=shapes, seed=recipe.seed)
    if spec.data == "random":
        data = random_dataset(inputs, samples=spec.samples or 16, shapes=shapes, seed=recipe.seed)
    else:
        images = ImageOptions(size=spec.image_size, mean=spec.mean, std=spec.std, layout=spec.layout, color=spec.color)
        data = load_dataset(spec.data, inputs, samples=spec.samples, images=images)
    if len(data) == 0:
        raise DataError(f"calibration data {spec.data} holds no samples", "give at least one sample")
    return split_dataset(data, eval_samples=spec.eval_samples, seed=recipe.seed)


def _shapes_by_name(inputs: list[InputSpec], input_shapes: list[tuple[int, ...]] | None) -> dict[str, tuple[int, ...]]:
    if not input_shapes:
        return {}
    if len(input_shapes) > len(inputs):
        raise InputError(f"{len(input_shapes)} --input-shape values for a model with {len(inputs)} inputs", "give one shape per input, in order")
    return {spec.name: shape for spec, shape in zip(inputs, input_shapes)}


def _size(source: Path | None, data_files: list[Path]) -> int | None:
    if source is None:
        return None
    return sum(p.stat().st_size for p in [source, *data_files])


def _output_report(d: OutputDrift) -> OutputReport:
    return OutputReport(max_abs=d.max_abs, mean_abs=d.mean_abs, cosine=d.cosine, sqnr_db=d.sqnr_db, channel_error=d.channel_error)


def _warnings(evaluation: Dataset, records: list[PassRecord], metric: str) -> list[str]:
    warnings = []
    if evaluation.random:
        warnings.append(
            "evaluation used RANDOM inputs: drift and accuracy numbers do not describe real data; pass --calib PATH"
        )
    warnings.extend(n for n in evaluation.notes if not n.startswith("random data"))
    if metric == DRIFT and any(r.modified and not r.exact for r in records) and has_padding(evaluation.feeds()):
        warnings.append(f"the default drift judged padded tokens too ({MASK_INPUT} has zeros); for sentence embeddings, "
                        "budget the task: --metric embedding-cosine --max-drift 0.01 (cosine >= 0.99)")
    for record in records:
        warnings.extend(f"pass '{record.name}': {w}" for w in record.warnings)
        if not record.modified:
            warnings.append(f"pass '{record.name}' changed nothing")
    return warnings
