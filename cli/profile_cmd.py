"""``onnxsmith profile MODEL``: per-layer times on a backend, in five formats."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from onnxsmith.cli.options import BackendOpt, PrecisionOpt, RunTimeoutOpt, TargetOpt, ThreadsOpt


class Format(str, Enum):
    table = "table"
    json = "json"
    md = "md"
    csv = "csv"
    html = "html"


def profile(
    model: Annotated[str, typer.Argument(help="An .onnx file (or a PyTorch source, as for optimize).", show_default=False)],
    backend: BackendOpt = None,
    target: TargetOpt = None,
    threads: ThreadsOpt = None,
    inference_precision: PrecisionOpt = None,
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Timed runs (median and p90 are over these).")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", "-w", min=0, help="Untimed runs first.")] = 3,
    calib: Annotated[str | None, typer.Option("--calib", help="Inputs to run: .npz or folder (default: random, see --input-shape).")] = None,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="Input shape, e.g. 1x3x224x224; repeat per input.")] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="Another model (e.g. the original): per-layer before/after and SQNR.")] = None,
    sqnr_threshold: Annotated[float, typer.Option("--sqnr-threshold", help="With --compare: the first layer below this SQNR (dB) is reported.")] = 30.0,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    run_timeout: RunTimeoutOpt = 600.0,
) -> None:
    """Profile MODEL layer by layer: time, share, FLOPs, bytes, precision, named by the original layers."""
    import json

    from onnxsmith import __version__
    from onnxsmith.ceilings import machine_ceilings
    from onnxsmith.cli import render_profile
    from onnxsmith.cli.console import stderr
    from onnxsmith.cli.step_summary import append_step_summary
    from onnxsmith.cli.render_html import html_page
    from onnxsmith.modelio import write_text_atomic
    from onnxsmith.paths_guard import refuse_overlap
    from onnxsmith.profile_run import ProfileOptions, profile_model
    from onnxsmith.report import SCHEMA_VERSION
    from onnxsmith.runtime import run_time_limit
    from onnxsmith.sources import parse_shape, source_reads

    options = ProfileOptions(
        backend=backend or "cpu", runs=runs, warmup=warmup, calib=calib,
        input_shapes=[parse_shape(s) for s in input_shape or []] or None,
        compare=compare, threshold_db=sqnr_threshold, target=target, threads=threads or 0, precision=inference_precision,
    )
    if output is not None:  # before the profiling, not after it: the page must not land on an input, or nowhere
        reads = [*source_reads(model, "the model"), *(source_reads(compare, "the --compare model") if compare else []),
                 *([("the calibration data", calib)] if calib else [])]
        refuse_overlap(reads, [("the profile", output, "choose another -o path")])
    with run_time_limit(run_timeout):
        data = profile_model(model, options).to_dict()
    append_step_summary(render_profile.markdown(data, Path(model).name))
    if fmt is Format.table and output is None:
        render_profile.table(data)
        return
    texts = {
        Format.json: lambda: json.dumps({"schema_version": SCHEMA_VERSION, "tool_version": __version__, "source": model,
                                         "profile": data}, indent=2, allow_nan=False) + "\n",
        Format.md: lambda: render_profile.markdown(data, Path(model).name),
        Format.csv: lambda: render_profile.csv_text(data),
        Format.html: lambda: html_page(data, f"onnxsmith profile: {Path(model).name} on {data['backend']}",
                                       machine_ceilings(threads or 0)),
        Format.table: lambda: render_profile.markdown(data, Path(model).name),  # a table written to a file is its Markdown
    }
    text = texts[fmt]()
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(output, text)
        stderr.print(f"wrote {output}")

