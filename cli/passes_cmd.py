"""``onnxsmith passes [NAME]``: the registered passes with their options and defaults."""

from __future__ import annotations

from typing import Annotated

import typer

from onnxsmith.cli.options import JsonFlag


def passes(
    name: Annotated[str | None, typer.Argument(help="One pass to show (default: all of them).", show_default=False)] = None,
    json_output: JsonFlag = False,
) -> None:
    """List every pass (or the one NAME), its options with defaults, a one-line description and its rules."""
    from dataclasses import asdict

    from onnxsmith.cli import render
    from onnxsmith.cli.console import print_json
    from onnxsmith.errors import RecipeError
    from onnxsmith.registry import pass_infos

    infos = pass_infos()
    if name is not None:
        infos = [info for info in infos if info.name == name]
        if not infos:
            raise RecipeError(f"unknown pass '{name}'", f"choose one of: {', '.join(i.name for i in pass_infos())}")
    if json_output:
        print_json([asdict(i) for i in infos])
    else:
        render.pass_list(infos)
