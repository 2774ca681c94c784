"""``onnxsmith backends``: every backend, whether it is usable here, and why not."""

from __future__ import annotations

from onnxsmith.cli.options import JsonFlag


def backends(json_output: JsonFlag = False) -> None:
    """List the runtime backends, available or not (with the reason), and what each runs fast."""
    from rich.markup import escape

    from onnxsmith.backend import available_backends
    from onnxsmith.cli.console import folding_table, print_json, stdout

    rows = []
    for name, cls in available_backends().items():
        backend = cls()
        ok, why = backend.available()
        caps = backend.capabilities
        rows.append({
            "name": name,
            "description": cls.description,
            "available": ok,
            "reason": why,
            "precisions": list(caps.precisions),
            "quant_format": caps.quant_format,
            "int8_ops": list(caps.int8_ops),
            "gains_from_nm_sparsity": caps.gains_from_nm_sparsity,
            "ops": len(caps.ops),
            "notes": list(caps.notes),
        })
    if json_output:
        print_json(rows)
        return
    table = folding_table("backend", "available", "precisions", "quant", "N:M", "ops", "what it is / why not")
    for row in rows:
        table.add_row(row["name"], "yes" if row["available"] else "[red]no[/red]", ", ".join(row["precisions"]), row["quant_format"],
                      "yes" if row["gains_from_nm_sparsity"] else "-", str(row["ops"]),
                      escape(row["description"] if row["available"] else row["reason"]))
    stdout.print(table)
