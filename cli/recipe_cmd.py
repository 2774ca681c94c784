"""``onnxsmith recipe schema``: the JSON Schema of recipe files (for editor autocompletion)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Recipe files: their schema.", no_args_is_help=True)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of recipe files, with every registered pass's options."""
    from onnxsmith.cli.console import print_json
    from onnxsmith.recipe import recipe_json_schema

    print_json(recipe_json_schema())
