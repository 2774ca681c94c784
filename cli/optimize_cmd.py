"""``onnxsmith optimize MODEL -o OUT.onnx``: run a pipeline, write the artifact and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxsmith.cli.options import BackendOpt, JsonFlag, PrecisionOpt, PresetOpt, RunTimeoutOpt, TargetOpt, ThreadsOpt


def optimize(
    model: Annotated[str, typer.Argument(help="An .onnx file, a .pt2 archive, or package.module:factory (PyTorch).", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the optimized .onnx (the report goes beside it).")] = None,
    passes: Annotated[str | None, typer.Option("--passes", "-p", help='Pipeline, e.g. "cleanup,fuse" (default: cleanup; `onnxsmith passes` lists the passes).')] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="A YAML or JSON recipe; flags given here override it.")] = None,
    preset: PresetOpt = None,
    backend: BackendOpt = None,
    target: TargetOpt = None,
    threads: ThreadsOpt = None,
    inference_precision: PrecisionOpt = None,
    costs: Annotated[str | None, typer.Option("--costs", help="A per-layer cost table from --save-costs on the deployment machine: int8 decides by it, for its CPU, instead of timing here.")] = None,
    save_costs: Annotated[Path | None, typer.Option("--save-costs", help="Write the per-layer int8 costs measured here, for --costs on a build machine of another CPU.")] = None,
    calib: Annotated[str | None, typer.Option("--calib", help="Calibration and evaluation data: .npz, folder of .npz/.npy/images, or 'random'.")] = None,
    calib_samples: Annotated[int | None, typer.Option("--calib-samples", help="Use at most this many samples.")] = None,
    eval_samples: Annotated[int | None, typer.Option("--eval-samples", help="Samples held out for evaluation (default: a quarter).")] = None,
    image_size: Annotated[str | None, typer.Option("--image-size", help="HxW that calibration images are resized to.")] = None,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="Input shape, e.g. 1x3x224x224; repeat per input, in order.")] = None,
    max_drift: Annotated[float | None, typer.Option("--max-drift", help="Fail (exit 4) when the output drift exceeds this; the artifact is not written.")] = None,
    min_speedup: Annotated[float | None, typer.Option("--min-speedup", help="CI gate: exit 5 when the artifact is not this many times faster than the original on the backend in most of at least 9 interleaved rounds (artifact and report still written).")] = None,
    max_size: Annotated[str | None, typer.Option("--max-size", help="CI gate: exit 5 when the artifact's files exceed this size, e.g. 25MB, 1.5GiB (artifact and report still written).")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="What the accuracy budget is on: auto (default: the task metric the model's signature shows, else drift), drift (per-channel output error), embedding-cosine, top1, ctc-text, detection-f1, or yours as module:function, called as function(reference, candidate[, feeds]) -> float. The report says which and why.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for data splits and random feeds.")] = None,
    latency_rounds: Annotated[int, typer.Option("--latency-rounds", min=0, help="Interleaved timing rounds (0 skips timing).")] = 15,
    profile_runs: Annotated[int, typer.Option("--profile-runs", min=0, help="Profile per layer on the backend before and after, up to this many runs each (fewer where they would take over 10 s), into the report and the summary (0: off).")] = 10,
    auto: Annotated[bool, typer.Option("--auto", help="Try whole candidate pipelines (fuse, opset upgrade, int8, int4, bf16/fp16 runtime...), time each against the original on the backend (at least 9 rounds), keep the fastest within the budget; prints the search table.")] = False,
    auto_candidates: Annotated[str | None, typer.Option("--auto-candidates", help="With --auto: comma-separated candidates to try (default: all but prune, int8-all-ops and int8-rules).")] = None,
    dump_dir: Annotated[Path | None, typer.Option("--dump-dir", help="Write the model after every pass into this folder.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the recipe, the model and the calibration data against its inputs, print the resolved recipe; run nothing.")] = False,
    save_recipe: Annotated[Path | None, typer.Option("--save-recipe", help="Write the recipe these flags imply to a YAML/JSON file.")] = None,
    run_timeout: RunTimeoutOpt = 600.0,
    json_output: JsonFlag = False,
) -> None:
    """Run a pass pipeline on MODEL, verify it after every pass, write OUT.onnx and OUT.report.json."""
    import json

    import yaml

    from onnxsmith.cli import render
    from onnxsmith.cli.console import print_json, stdout
    from onnxsmith.cli.progress import ProgressInstrument
    from onnxsmith.cli.step_summary import step_summary_writes
    from onnxsmith.errors import InputError, OnnxsmithError
    from onnxsmith.modelio import write_text_atomic
    from onnxsmith.optimize import OptimizeOptions, check as check_inputs, optimize as run_optimize, planned_paths
    from onnxsmith.paths_guard import refuse_overlap
    from onnxsmith.pipeline import DumpInstrument
    from onnxsmith.recipe import recipe_from_flags
    from onnxsmith.runtime import run_time_limit
    from onnxsmith.sources import parse_shape

    resolved_recipe = recipe_from_flags(
        recipe, preset, passes=passes, backend=backend, seed=seed,
        calibration={"data": calib, "samples": calib_samples, "eval_samples": eval_samples,
                     "image_size": list(parse_shape(image_size)) if image_size else None},
        accuracy={"max_drift": max_drift, "metric": metric},
        gates={"min_speedup": min_speedup, "max_size": max_size},
        target={"cpu": target, "threads": threads, "precision": inference_precision, "costs": costs},
    )
    resolved = resolved_recipe.resolved()

    instruments = [ProgressInstrument()]
    if dump_dir is not None:
        instruments.append(DumpInstrument(dump_dir))
    options = OptimizeOptions(
        input_shapes=[parse_shape(s) for s in input_shape or []],
        latency_rounds=latency_rounds,
        profile_runs=profile_runs,
        instruments=tuple(instruments),
        save_costs=save_costs,
    )
    reads, writes, folders = planned_paths(model, output, resolved_recipe, options)
    if recipe is not None:
        reads.append(("the recipe", recipe))
    if save_recipe is not None:
        writes.append(("the --save-recipe file", save_recipe, "choose another --save-recipe path"))
    if not dry_run:
        writes += step_summary_writes()
    refuse_overlap(reads, writes, folders=folders)  # before anything is written, --save-recipe included
    if save_recipe is not None:
        text = json.dumps(resolved, indent=2) + "\n" if save_recipe.suffix == ".json" else yaml.safe_dump(resolved, sort_keys=False)
        write_text_atomic(save_recipe, text)
    if dry_run:
        if not auto:  # --auto skips the candidates that need data instead
            resolved_recipe.check_calibration()
        check_inputs(model, resolved_recipe, options)
        if json_output:
            print_json(resolved)
        else:
            stdout.print(yaml.safe_dump(resolved, sort_keys=False), end="", soft_wrap=True, markup=False, highlight=False)
        return
    if output is None:
        raise InputError("no output path given", "add -o OUT.onnx (or --dry-run to only check the recipe)")
    if auto and passes is not None:
        raise InputError("--auto chooses the passes itself, so --passes cannot be given with it", "drop --passes, or drop --auto")
    if auto_candidates is not None and not auto:
        raise InputError("--auto-candidates is given without --auto", "add --auto")

    try:
        with run_time_limit(run_timeout):
            if auto:
                from onnxsmith.auto import DEFAULT_CANDIDATES, auto_optimize

                candidates = tuple(c.strip() for c in auto_candidates.split(",")) if auto_candidates else DEFAULT_CANDIDATES
                report = auto_optimize(model, output, resolved_recipe, options, candidates, on_candidate=render.auto_candidate)
            else:
                report = run_optimize(model, output, resolved_recipe, options)
    except OnnxsmithError as e:
        if e.report is not None:  # a failed gate: CI still gets the numbers, then the error and its exit code
            _show(e.report, output, json_output)
        raise
    finally:
        instruments[0].close()
    _show(report, output, json_output)


def _show(report, output: Path, json_output: bool) -> None:
    """The report on stdout (JSON, or the search table of --auto and the summary), and in the CI step summary."""
    from onnxsmith.cli import render
    from onnxsmith.cli.console import print_json
    from onnxsmith.cli.step_summary import append_step_summary
    from onnxsmith.optimize import report_path_for

    append_step_summary(render.optimize_markdown(report))
    if json_output:
        print_json(report.to_dict())
        return
    if report.auto:
        render.auto_search(report)
    render.optimize_summary(report, report_path_for(output) if report.artifact else None)

