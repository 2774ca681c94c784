"""Option definitions shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")]
ModelArg = Annotated[Path, typer.Argument(help="An .onnx file (external data is found beside it).", show_default=False)]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="Target runtime backend (default: cpu, or the recipe's).")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A shipped recipe by name: fast, int8, ... (`onnxsmith recipe presets` lists them).")]
