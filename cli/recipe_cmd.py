"""``onnxsmith recipe schema|presets``: the JSON Schema of recipe files, and the shipped presets."""

from __future__ import annotations

import typer

from onnxsmith.cli.options import JsonFlag

app = typer.Typer(help="Recipe files: their schema, and the presets shipped with onnxsmith.", no_args_is_help=True)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of recipe files, with every registered pass's options."""
    from onnxsmith.cli.console import print_json
    from onnxsmith.recipe import recipe_json_schema

    print_json(recipe_json_schema())


@app.command("presets")
def presets(json_output: JsonFlag = False) -> None:
    """List the shipped presets (`--preset NAME` of optimize and batch): what each is for and its passes."""
    from rich.markup import escape

    from onnxsmith.cli.console import folding_table, print_json, stdout
    from onnxsmith.recipe import available_presets, load_preset

    rows = []
    for name in available_presets():
        recipe = load_preset(name)
        rows.append({"name": name, "description": recipe.description, "pipeline": _pipeline(recipe.passes),
                     "max_drift": recipe.accuracy.max_drift, "recipe": recipe.resolved()})
    if json_output:
        print_json(rows)
        return
    table = folding_table("preset", "pipeline", "max drift", "what it is for")
    for row in rows:
        table.add_row(row["name"], escape(row["pipeline"]), "-" if row["max_drift"] is None else f"{row['max_drift']:g}",
                      escape(row["description"] or ""))
    stdout.print(table)


def _pipeline(passes: list) -> str:
    """The passes as written in the preset, in ``--passes`` syntax."""
    items = []
    for entry in passes:
        if isinstance(entry, str):
            items.append(entry)
            continue
        (name, options), = entry.items()
        spelled = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in (options or {}).items())
        items.append(f"{name}{{{spelled}}}" if spelled else name)
    return ",".join(items)
