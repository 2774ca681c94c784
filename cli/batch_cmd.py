"""``onnxsmith batch SOURCE -o OUTDIR``: convert a folder or manifest of models, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from onnxsmith.cli.options import BackendOpt, JsonFlag, PrecisionOpt, PresetOpt, TargetOpt


def batch(
    source: Annotated[Path, typer.Argument(help="A folder (every *.onnx under it) or a manifest (.yaml/.csv).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the artifacts (mirroring SOURCE), ledger and summaries.", show_default=False)],
    passes: Annotated[str | None, typer.Option("--passes", "-p", help='Pipeline for every model, e.g. "cleanup,fuse" (default: cleanup).')] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="A YAML or JSON recipe; flags given here override it.")] = None,
    preset: PresetOpt = None,
    backend: BackendOpt = None,
    target: TargetOpt = None,
    inference_precision: PrecisionOpt = None,
    calib: Annotated[str | None, typer.Option("--calib", help="Calibration and evaluation data for every model (a manifest can set its own).")] = None,
    max_drift: Annotated[float | None, typer.Option("--max-drift", help="A model whose output drift exceeds this fails.")] = None,
    min_speedup: Annotated[float | None, typer.Option("--min-speedup", help="A model whose artifact is not this many times faster than the original in most of at least 9 interleaved rounds fails (its artifact is still written).")] = None,
    max_size: Annotated[str | None, typer.Option("--max-size", help="A model whose artifact exceeds this size, e.g. 25MB, fails (its artifact is still written).")] = None,
    executor: Annotated[Literal["local", "ray"], typer.Option("--executor", help="Worker processes here, or Ray tasks.")] = "local",
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="Models at once (default: the CPU count; Ray: the cluster's CPUs).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="An existing Ray cluster (default: start a local Ray).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds one model may take (0: no limit).")] = 3600.0,
    memory_limit: Annotated[int | None, typer.Option("--memory-limit", min=0, help="MiB of address space per worker (default: RAM / workers; 0: no limit).")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Extra attempts for a worker that crashed or was lost.")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Skip models the ledger has done with the same model and recipe.")] = True,
    latency_rounds: Annotated[int, typer.Option("--latency-rounds", min=0, help="Interleaved timing rounds per model (0 skips timing).")] = 15,
    allow_failures: Annotated[bool, typer.Option("--allow-failures", help="Exit 0 even when some models failed (else exit 6).")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Convert every model of SOURCE with one recipe: isolated workers, a resumable ledger, a summary."""
    import signal

    from onnxsmith.batch import BatchOptions, run_batch, summary_markdown
    from onnxsmith.cli.batch_view import BatchProgress, batch_summary
    from onnxsmith.cli.console import print_json
    from onnxsmith.cli.step_summary import append_step_summary, step_summary_writes
    from onnxsmith.errors import BATCH_FAILURES_EXIT
    from onnxsmith.recipe import recipe_from_flags

    batch_recipe = recipe_from_flags(recipe, preset, passes=passes, backend=backend,
                                     calibration={"data": calib}, accuracy={"max_drift": max_drift},
                                     gates={"min_speedup": min_speedup, "max_size": max_size},
                                     target={"cpu": target, "precision": inference_precision})
    options = BatchOptions(executor=executor, workers=workers, timeout_s=timeout or None, memory_mb=memory_limit,
                           retries=retries, resume=resume, latency_rounds=latency_rounds, ray_address=ray_address)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the batch as Ctrl-C does
    with BatchProgress() as progress:
        summary = run_batch(source, output, batch_recipe, options, progress, reads=(("the recipe", recipe),) if recipe else (),
                            writes=tuple(step_summary_writes()))
    passes = ",".join(e if isinstance(e, str) else next(iter(e)) for e in batch_recipe.passes)
    append_step_summary(summary_markdown(summary.to_dict(), heading="###", passes=passes))
    if json_output:
        print_json(summary.to_dict())
    else:
        batch_summary(summary)
    if summary.counts["failed"] and not allow_failures:
        raise typer.Exit(BATCH_FAILURES_EXIT)
