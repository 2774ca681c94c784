"""``onnxsmith inspect MODEL``: what a model holds, as tables or JSON."""

from __future__ import annotations

from onnxsmith.cli.options import JsonFlag, ModelArg


def inspect(model: ModelArg, json_output: JsonFlag = False) -> None:
    """Opsets, inputs/outputs, op histogram, parameters by dtype, external data, provenance."""
    from onnxsmith.cli import render
    from onnxsmith.cli.console import print_json
    from onnxsmith.inspection import inspect_model

    info = inspect_model(model)
    if json_output:
        print_json(info)
    else:
        render.inspection(info)
