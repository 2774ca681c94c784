"""``onnxsmith target``: the CPU this machine is, the named CPUs, and a target file to build with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxsmith.cli.options import JsonFlag


def target(
    save: Annotated[Path | None, typer.Option("--save", help="Write this machine's CPU as a target file, for "
                                              "`--target FILE` on a build machine of another CPU.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Show this machine's CPU (model, ISA features) and the named CPUs --target accepts."""
    from rich.markup import escape

    from onnxsmith.cli.console import folding_table, print_json, stderr, stdout
    from onnxsmith.modelio import write_text_atomic
    from onnxsmith.target import PRESETS, load_target, save_target

    host = load_target()
    if save is not None:
        write_text_atomic(save, save_target(host))
        stderr.print(f"wrote {escape(str(save))}: build for this CPU elsewhere with --target {escape(str(save))}")
    rows = [{"name": "host", **host.cpu.to_dict()}, *({"name": name, **cpu.to_dict()} for name, cpu in PRESETS.items())]
    if json_output:
        print_json(rows)
        return
    table = folding_table("--target", "ISA", "int8 dot", "u8s8 saturates", "bf16", "CPU")
    for row, cpu in zip(rows, [host.cpu, *PRESETS.values()], strict=True):
        table.add_row(row["name"], cpu.isa, _yes(cpu.int8_dot), _yes(cpu.u8s8_saturates), _yes(cpu.native_bf16), escape(cpu.model))
    stdout.print(table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"
