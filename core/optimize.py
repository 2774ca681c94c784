"""``optimize``: load, run the recipe's pipeline, check the budget, measure, write.

The library entry point behind ``onnxsmith optimize``; the CLI only parses and renders.
Nothing is written until every check passed, and then atomically: the artifact (with
provenance in its metadata) and ``OUT.report.json`` beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from onnxsmith import __version__
from onnxsmith.backend import Backend, Session, get_backend
from onnxsmith.context import Context
from onnxsmith.costs import CostTable, costs_json, load_costs
from onnxsmith.data import Dataset, ImageOptions, InputSpec, load_dataset, model_inputs, random_dataset, split_dataset
from onnxsmith.errors import AccuracyBudgetExceeded, DataError, InputError, OnnxsmithError, RecipeError, first_line
from onnxsmith.gates import check_gates, gate_rows
from onnxsmith.graph_stats import graph_stats
from onnxsmith.latency import MIN_ROUNDS, LatencyStats, consistently_faster, measure_interleaved, speedup_summary
from onnxsmith.measure import Measurements
from onnxsmith.metrics import OutputDrift, compare_outputs, load_metric
from onnxsmith.model import INFERENCE_PRECISION_KEY, Model
from onnxsmith.modelio import EXTERNAL_DATA_THRESHOLD, hash_files, model_bytes, save_onnx, write_text_atomic
from onnxsmith.pass_base import Pass
from onnxsmith.paths_guard import Read, Write, refuse_overlap
from onnxsmith.pipeline import DumpInstrument, Instrument, Pipeline, PipelineResult
from onnxsmith.profile_compare import compare_profiles
from onnxsmith.recipe import Recipe
from onnxsmith.report import OutputReport, PassRecord, Report, Summary
from onnxsmith.runtime import Outputs
from onnxsmith.shape_inference import relax_contradicted_output_shapes
from onnxsmith.sources import is_torch_factory, load_source, source_reads
from onnxsmith.task_choice import AUTO, DRIFT, MetricChoice, choose_metric
from onnxsmith.task_metrics import MASK_INPUT, has_padding

__all__ = ["Built", "OptimizeOptions", "Prepared", "build", "optimize", "planned_paths", "prepare", "report_path_for", "write"]

logger = logging.getLogger(__name__)

RANDOM_EVAL_SAMPLES = 4
AS_IS = "as is"  # the original compiled with the runtime's defaults, beside the artifact in the timing
PROFILE_BUDGET_S = 10.0  # the per-layer profiles before and after, together: fewer runs on slow models


@dataclass
class OptimizeOptions:
    """Settings of one run that are not part of the recipe (they do not change the artifact)."""

    input_shapes: list[tuple[int, ...]] | None = None
    latency_rounds: int = 15
    profile_runs: int = 0  # > 0: profile on the backend before and after (up to this many runs), into the report's ``profile``
    instruments: tuple[Instrument, ...] = ()
    save_costs: Path | None = None  # write the per-layer int8 costs measured here (costs.py)


def report_path_for(output: Path) -> Path:
    """``out/model.onnx`` -> ``out/model.report.json``."""
    return output.with_name(output.stem + ".report.json")


@dataclass
class Prepared:
    """A loaded model with its data, the original outputs and the metric its budget is on:
    what every pipeline run on it shares (``--auto`` runs several)."""

    source: str
    model: Model
    calibration: Dataset | None
    evaluation: Dataset
    reference: list
    choice: MetricChoice
    measure: Measurements
    costs: CostTable | None


@dataclass
class Built:
    """One pipeline's result on a copy of the prepared model, verified on its backend."""

    recipe: Recipe
    model: Model
    backend: Backend
    result: PipelineResult
    runtime: dict[str, object] | None  # the runtime precision's drift (bf16/fp16 targets)
    drift: float


def optimize(source: str, output: str | Path, recipe: Recipe, options: OptimizeOptions | None = None) -> Report:
    """Run ``recipe`` on the model at ``source`` and write the artifact to ``output``."""
    options = options or OptimizeOptions()
    output = Path(output)
    if recipe.gates.min_speedup is not None and not options.latency_rounds:
        raise RecipeError("--min-speedup needs the timing, and --latency-rounds is 0", "give --latency-rounds 9 or more")
    recipe.check_calibration()
    prepared = prepare(source, output, recipe, options, [recipe])
    built = build(prepared, recipe, options.instruments)
    budget = recipe.accuracy.max_drift
    if budget is not None and built.drift > budget:
        raise AccuracyBudgetExceeded(
            f"{_drift_name(prepared.choice.name)} {built.drift:.4g} exceeds the budget max_drift={budget:g}"
            f"{' with the runtime in ' + built.runtime['precision'] if built.runtime else ''}; nothing was written",
            "relax accuracy.max_drift, or drop or tune the lossy passes",
            report=write(prepared, built, output, options, save=False),
        )
    report = write(prepared, built, output, options)
    check_gates(report)
    return report


def prepare(source: str, output: Path, recipe: Recipe, options: OptimizeOptions, recipes: list[Recipe]) -> Prepared:
    """Check the paths, load ``source``, split its data, run the original on the evaluation
    feeds and choose the metric; ``recipes``: every recipe that will run on it (their passes
    may pin input dims); ``output``: where the artifact will go (checked before any work)."""
    _refuse_overwriting_input(source, output, recipe, options)
    passes, costs = _checked_recipe(recipe, recipes)
    model = load_source(source, options.input_shapes)
    calibration, evaluation, data = _datasets(recipe, model_inputs(model.ir), options.input_shapes, _pinned(passes))
    measure = Measurements()
    reference = _reference_outputs(measure, model, evaluation)
    model.notes.extend(relax_contradicted_output_shapes(model.ir, reference))
    choice = choose_metric(recipe.accuracy.metric, recipe.accuracy.max_drift, model.ir, reference, evaluation.feeds())
    short = choice.shortfall(reference)
    if (short is not None and data is not None and calibration is not None and len(data) > len(evaluation)
            and recipe.calibration.eval_samples is None):  # a held-out size the user chose is theirs
        judged = _with_calibration_samples(data, evaluation, calibration, short.samples_needed or len(data))
        choice = choice.judged_on_more(len(judged), short)
        evaluation, reference = judged, _reference_outputs(measure, model, judged)
    return Prepared(source, model, calibration, evaluation, reference, choice, measure, costs)


def as_is_session(backend: Backend, model: ir.Model) -> Session | None:
    """``model`` as the backend's runtime compiles it when told nothing, where that differs from
    the target (OpenVINO picks bf16 itself on a CPU that runs it; the target says fp32 unless
    told otherwise): the user's alternative to the artifact, timed beside it. None where it
    does not differ, or where the runtime cannot compile it so (only the baseline is lost)."""
    try:
        session = backend.as_is_session(model)
    except Exception as e:  # noqa: BLE001
        logger.info("%s cannot compile the original with its defaults: %s", backend.name, first_line(e))
        return None
    return session if session is not None and getattr(session, "precision", None) != backend.target.precision else None


def check(source: str, recipe: Recipe, options: OptimizeOptions) -> None:
    """What ``--dry-run`` checks, running nothing: the passes and their options, the metric,
    the cost table, the backend, the model (an ONNX file is loaded; a PyTorch source is not
    exported, which would run its code) and the calibration data against the model's inputs."""
    passes, _ = _checked_recipe(recipe, [recipe])
    if is_torch_factory(source) or Path(source).suffix == ".pt2":
        return
    model = load_source(source, options.input_shapes)
    _datasets(recipe, model_inputs(model.ir), options.input_shapes, _pinned(passes))


def _checked_recipe(recipe: Recipe, recipes: list[Recipe]) -> tuple[list[Pass], CostTable | None]:
    """Every pass of ``recipes`` (a bad pass or option fails before the model is loaded), the
    recipe's metric, cost table and backend checked; the passes and the cost table."""
    passes = [p for r in recipes for p in r.build_passes()]
    if recipe.accuracy.metric not in (None, AUTO):
        load_metric(recipe.accuracy.metric)
    costs = load_costs(recipe.target.costs) if recipe.target.costs else None
    if costs is not None and costs.backend != recipe.backend:
        raise RecipeError(f"the cost table {costs.source} was measured on backend '{costs.backend}', not '{recipe.backend}'",
                          f"use --backend {costs.backend}, or save costs on the deployment machine with this backend")
    get_backend(recipe.backend, recipe.target.load(costs))  # an unknown or unavailable backend fails here too
    return passes, costs


def _pinned(passes: list[Pass]) -> dict[str, tuple[int | None, ...]]:
    """Input dims the passes pin (a pass that needs a static shape), by input name."""
    return {name: shape for p in passes for name, shape in p.input_shapes().items()}


def _with_calibration_samples(data: Dataset, evaluation: Dataset, calibration: Dataset, needed: int) -> Dataset:
    """The held-out samples and as many calibration ones as it takes to reach ``needed`` samples
    (all where there are fewer), in the data's order: a counting metric's judgement, bounded
    so a large --calib does not multiply the cost of every guard probe."""
    index = {data.position(i): i for i in range(len(data))}
    held = [index[evaluation.position(i)] for i in range(len(evaluation))]
    extra = [index[calibration.position(i)] for i in range(min(len(calibration), needed - len(held)))]
    return data.take(sorted(held + extra))


def build(prepared: Prepared, recipe: Recipe, instruments: tuple[Instrument, ...] = ()) -> Built:
    """Run ``recipe``'s passes on a copy of the prepared model, on the backend of its target."""
    backend = get_backend(recipe.backend, recipe.target.load(prepared.costs))
    original = prepared.model
    model = dataclasses.replace(original, ir=original.ir.clone(), origin=copy.deepcopy(original.origin))
    ctx = Context(backend=backend, calibration=prepared.calibration, evaluation=prepared.evaluation, reference=prepared.reference,
                  seed=recipe.seed, max_drift=prepared.choice.budget, metric=prepared.choice.metric, measure=prepared.measure,
                  costs=prepared.costs)
    result = Pipeline(recipe.build_passes(), instruments=instruments).run(model, ctx)
    runtime = _runtime_precision(ctx, model)
    drift = max(result.drift, runtime["drift"]) if runtime else result.drift
    return Built(recipe, model, backend, result, runtime, drift)


def write(prepared: Prepared, built: Built, output: Path, options: OptimizeOptions, *,
          latency: dict[str, float | None] | None = None, auto: dict[str, object] | None = None, save: bool = True) -> Report:
    """Time (unless ``latency`` is given), profile, stamp and write ``built``'s artifact and its
    report; with ``save`` off, only make the report (of a model that will not be written: the
    CLI prints it with --json when the accuracy gate fails)."""
    model, backend, result, recipe = built.model, built.backend, built.result, built.recipe
    original, evaluation, measure = prepared.model, prepared.evaluation, prepared.measure
    timed = None
    if latency is None:
        latency = {"before": None, "after": None, "speedup": None}
        if options.latency_rounds:
            sessions = {"before": backend.create_session(original.ir), "after": measure.session(model.ir, backend)}
            as_is = as_is_session(backend, original.ir)
            if as_is is not None:
                sessions[AS_IS] = as_is
            timed = measure_interleaved(sessions, evaluation.feeds()[0], rounds=options.latency_rounds)
            latency = speedup_summary(timed["before"], timed["after"])
            if as_is is not None:
                latency["as_is"] = {"precision": as_is.precision, **speedup_summary(timed.pop(AS_IS), timed["after"])}

    resolved = recipe.resolved()
    model.stamp_provenance(__version__, _portable(resolved))
    model.ir.metadata_props[INFERENCE_PRECISION_KEY] = backend.target.precision
    profile = None
    runs = _profile_runs(options.profile_runs, latency)
    if runs:  # after stamping: the artifact's origin map names its layers
        profile_before = backend.profile(original.ir, evaluation.feeds(), runs=runs)
        profile_after = backend.profile(model.ir, evaluation.feeds(), runs=runs)
        compared = compare_profiles(profile_before, profile_after, sqnr={}, other=str(original.source or prepared.source),
                                    latency=(timed["before"], timed["after"]) if timed else None)
        profile = {"before": profile_before.to_dict(), "after": compared.to_dict()}
    external = model.used_external_data or model_bytes(model.ir) >= EXTERNAL_DATA_THRESHOLD
    written = save_onnx(model.ir, output, external_data=external) if save else []

    stats_before, stats_after = graph_stats(original.ir), graph_stats(model.ir)
    report = Report(
        tool_version=__version__,
        source={
            "path": str(original.source) if original.source else prepared.source,
            "sha256": original.sha256,
            "format": "onnx" if original.source is not None and original.source.suffix == ".onnx" else "torch",
        },
        backend=backend.name,
        target=backend.describe_target(),
        recipe=resolved,
        passes=result.records,
        summary=Summary(
            nodes={"before": stats_before.nodes, "after": stats_after.nodes},
            params={"before": stats_before.params, "after": stats_after.params},
            bytes={"before": _size(original.source, original.data_files),
                   "after": sum(p.stat().st_size for p in written) if save else model_bytes(model.ir)},
            latency_ms=latency,
            drift=built.drift,
            outputs={name: _output_report(d) for name, d in result.outputs.items()},
            runtime_precision=built.runtime,
        ),
        data={
            "calibration": prepared.calibration.describe() if prepared.calibration else None,
            "evaluation": evaluation.describe(),
        },
        artifact={"path": str(output), "files": [str(p) for p in written], "external_data": external} if save else {},
        warnings=[*backend.target.warnings(), *prepared.model.notes, *_warnings(evaluation, prepared.reference, result.records, prepared.choice),
                  *_speed_warning(result.records, timed, backend.name), *_rounds_warning(latency),
                  *(_as_is_warning(latency, backend.name) if auto is None else [])],  # --auto's hint says it, with why
        profile=profile,
        accuracy=prepared.choice.describe(),
        auto=auto,
    )
    report.gates = gate_rows(recipe.gates, recipe.accuracy.max_drift, report) or None
    if not save:
        return report
    write_text_atomic(report_path_for(output), report.to_json())
    if options.save_costs is not None:
        rows = [row for record in result.records for row in record.layers if "float_ms" in row]
        if not rows:
            logger.warning("--save-costs: no pass timed layers on this machine (int8 with speed=measured does); nothing written")
        else:
            write_text_atomic(options.save_costs, costs_json(backend.target.host or backend.target.cpu, backend.name, rows))
    return report


def _portable(resolved: dict) -> dict:
    """The recipe as the artifact records it: the files it read (calibration data, cost table)
    by name and content hash instead of by this machine's path."""
    portable = copy.deepcopy(resolved)
    for section, key in (("calibration", "data"), ("target", "costs")):
        value = portable[section].get(key)
        if value in (None, "random"):
            continue
        path = Path(value)
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        portable[section][key] = path.name
        portable[section][f"{key}_sha256"] = hash_files(files)
    return portable


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
    except OnnxsmithError:  # the run's time limit: its own message says what to do
        raise
    except Exception as e:  # onnxruntime raises its own Fail/InvalidArgument types
        shapes = ", ".join(f"{k} {_describe_feed(v)}" for k, v in evaluation.feeds()[0].items())
        first = first_line(e)
        fix = ("give real sizes for its dynamic dims with --input-shape (or data with --calib)" if evaluation.random
               else "check that the data matches what the model expects")
        raise DataError(f"the original model fails on the evaluation feeds ({shapes}): {first}", fix) from None


def _describe_feed(value: object) -> str:
    if isinstance(value, list):
        return f"sequence of {len(value)}" + (f" x {'x'.join(map(str, value[0].shape))}" if value else "")
    return "x".join(map(str, value.shape))


def _refuse_overwriting_input(source: str, output: Path, recipe: Recipe, options: OptimizeOptions) -> None:
    reads, writes, folders = planned_paths(source, output, recipe, options)
    refuse_overlap(reads, writes, folders=folders)
    if output.suffix != ".onnx":
        raise InputError(f"output path {output} does not end in .onnx", "name the artifact something.onnx")


def planned_paths(source: str, output: Path | None, recipe: Recipe, options: OptimizeOptions) -> tuple[list[Read], list[Write], list[Write]]:
    """What a run reads (the model and its external data, calibration data, cost table),
    the files it may write (artifact, its data file, report, costs) and the folders it
    writes into (``--dump-dir``), for :func:`onnxsmith.paths_guard.refuse_overlap`."""
    reads: list[Read] = source_reads(source, "the input model")
    if recipe.calibration.data not in (None, "random"):
        reads.append(("the calibration data", recipe.calibration.data))
    if recipe.target.costs:
        reads.append(("the cost table", recipe.target.costs))
    writes: list[Write] = []
    if output is not None:
        writes += [("the output", output, "choose another -o path"),
                   ("the output's data file", output.with_name(output.name + ".data"), "choose another -o name"),
                   ("the report", report_path_for(output), "choose another -o name")]
    if options.save_costs is not None:
        writes.append(("the --save-costs file", options.save_costs, "choose another --save-costs path"))
    folders: list[Write] = [("the --dump-dir folder", i.folder, "give --dump-dir a folder of its own")
                            for i in options.instruments if isinstance(i, DumpInstrument)]
    return reads, writes, folders


def _datasets(
    recipe: Recipe,
    inputs: list[InputSpec],
    input_shapes: list[tuple[int, ...]] | None,
    pinned: dict[str, tuple[int | None, ...]],
) -> tuple[Dataset | None, Dataset, Dataset | None]:
    """(calibration or None, held-out evaluation, all the data given or None) from the
    recipe's calibration settings.

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
        return None, random_dataset(inputs, samples=RANDOM_EVAL_SAMPLES, shapes=shapes, seed=recipe.seed), None
    if spec.data == "random":
        data = random_dataset(inputs, samples=spec.samples or 16, shapes=shapes, seed=recipe.seed)
    else:
        images = ImageOptions(size=spec.image_size, mean=spec.mean, std=spec.std, layout=spec.layout, color=spec.color)
        data = load_dataset(spec.data, inputs, samples=spec.samples, images=images)
    if len(data) == 0:
        raise DataError(f"calibration data {spec.data} holds no samples", "give at least one sample")
    return (*split_dataset(data, eval_samples=spec.eval_samples, seed=recipe.seed), data)


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


def _profile_runs(requested: int, latency: dict[str, object]) -> int:
    """Runs for each per-layer profile: ``requested``, fewer where the measured latency says the
    two profiles would take longer than PROFILE_BUDGET_S (a profiled run costs about two)."""
    if not requested or latency.get("before") is None:
        return requested
    seconds_per_run = 2 * (latency["before"] + latency["after"]) / 1000
    return max(1, min(requested, int(PROFILE_BUDGET_S / seconds_per_run)))


def _rounds_warning(latency: dict[str, object]) -> list[str]:
    """Too few timing rounds to call any speedup a change: say so beside the number."""
    rounds = latency.get("rounds")
    if latency.get("speedup") is None or rounds is None or rounds >= MIN_ROUNDS:
        return []
    return [f"--latency-rounds {rounds} is too few to tell a speedup from the machine's noise "
            f"({latency['speedup']:.2f}x here); give {MIN_ROUNDS} or more"]


def _as_is_warning(latency: dict[str, object], backend: str) -> list[str]:
    """The runtime's own defaults run the original faster than the artifact runs (in most rounds): say so."""
    as_is = latency.get("as_is")
    if not as_is or as_is["verdict"] != "slower":
        return []
    return [f"{backend} with its own defaults ({as_is['precision']} on this CPU) runs the original model faster than this "
            f"artifact runs ({as_is['speedup']:.2f}x of its speed): try --inference-precision {as_is['precision']} (lossy, "
            "measured like any pass), or --auto, which also tries it"]


def _speed_warning(records: list[PassRecord], timed: dict[str, LatencyStats] | None, backend: str) -> list[str]:
    """A lossy artifact that is not faster than the original on the backend (in most rounds of
    the interleaved timing) costs accuracy for nothing: say so, with what to try instead."""
    lossy = [r.name for r in records if r.modified and not r.exact]
    if not lossy or timed is None or consistently_faster(timed["after"], timed["before"]):
        return []
    speedup = timed["before"].median_ms / timed["after"].median_ms
    return [(f"the lossy pass(es) {', '.join(lossy)} left the model no faster on {backend} ({speedup:.2f}x, not faster in "
             f"most of {timed['after'].rounds} rounds): the artifact loses accuracy for no speed here; try --auto, or drop them")]


def _warnings(evaluation: Dataset, reference: list[Outputs], records: list[PassRecord], choice: MetricChoice) -> list[str]:
    warnings = []
    metric = choice.name
    lossy = any(r.modified and not r.exact for r in records)
    short = choice.shortfall(reference) if lossy else None
    if short is not None:
        more = f"give at least {short.samples_needed} samples" if short.samples_needed else f"give samples with {short.needed} {short.unit}"
        limit = f"up to {3 / short.units:.0%} of new {short.unit} may still change" if short.units else "nothing shows what new ones do"
        warnings.append(f"{short.samples} samples ({short.units} {short.unit}) cannot show that the {metric} budget {choice.budget:g} "
                        f"holds: with no {short.one} changed, {limit}; {more} (a larger --calib)")
    if evaluation.random:
        warnings.append(
            "evaluation used RANDOM inputs: drift and accuracy numbers do not describe real data; pass --calib PATH"
        )
    warnings.extend(n for n in evaluation.notes if not n.startswith("random data"))
    if metric == DRIFT and lossy and has_padding(evaluation.feeds()):
        warnings.append(f"the default drift judged padded tokens too ({MASK_INPUT} has zeros); for sentence embeddings, "
                        "budget the task: --metric embedding-cosine --max-drift 0.01 (cosine >= 0.99)")
    for record in records:
        warnings.extend(f"pass '{record.name}': {w}" for w in record.warnings)
        if not record.modified:
            warnings.append(f"pass '{record.name}' changed nothing")
    return warnings


def _drift_name(metric: str) -> str:
    return "drift" if metric == "drift" else f"{metric} drift"
