"""Option definitions shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")]
ModelArg = Annotated[Path, typer.Argument(help="An .onnx file (external data is found beside it).", show_default=False)]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="Target runtime backend (default: cpu, or the recipe's).")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A shipped recipe by name: fast, int8, ... (`onnxsmith recipe presets` lists them).")]
TargetOpt = Annotated[str | None, typer.Option(
    "--target", help="The CPU to build for: host (default), avx2, avx512-vnni, avx512-vnni-bf16, amx, arm64, or a file "
                     "from `onnxsmith target --save` on the deployment machine.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=0, help="The runtime's intra-op threads on the target (0: one per core).")]
PrecisionOpt = Annotated[str | None, typer.Option(
    "--inference-precision", help="The runtime's whole-model precision: fp32 (default), or bf16/fp16 where the backend "
                                  "runs them (OpenVINO); a lossy choice whose drift is measured.")]
RunTimeoutOpt = Annotated[float, typer.Option("--run-timeout", min=0, help="Seconds one run of the model on one input may take before it is stopped as an input error (0: no limit).")]
