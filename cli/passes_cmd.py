"""``onnxsmith passes``: every registered pass with its options and defaults."""

from __future__ import annotations

from onnxsmith.cli.options import JsonFlag


def passes(json_output: JsonFlag = False) -> None:
    """List every pass, its options with defaults, and a one-line description."""
    from dataclasses import asdict

    from onnxsmith.cli import render
    from onnxsmith.cli.console import print_json
    from onnxsmith.registry import pass_infos

    infos = pass_infos()
    if json_output:
        print_json([asdict(i) for i in infos])
    else:
        render.pass_list(infos)
