"""Per-layer int8 costs measured on the deployment machine, to build for it on another one.

``onnxsmith optimize ... --save-costs costs.json`` on the deployment machine writes what the
int8 pass measured there (each layer's float and int8 time and their noise) with that CPU;
``--costs costs.json`` on a CI runner of another CPU makes the int8 pass decide from that
table instead of timing the runner, and makes that CPU the target. With the same table the
decision is the same on every run, so reruns are byte-identical again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxsmith.errors import RecipeError
from onnxsmith.target import CpuTarget, cpu_from_data, read_data_file

__all__ = ["CostTable", "LayerCosts", "costs_json", "load_costs"]

MAX_COSTS_BYTES = 8 << 20
SCHEMA = 1


@dataclass(frozen=True)
class LayerCosts:
    float_ms: float
    int8_ms: float
    noise_ms: float


@dataclass(frozen=True)
class CostTable:
    source: str  # the file it was read from
    cpu: CpuTarget
    backend: str
    layers: dict[str, LayerCosts]


def costs_json(cpu: CpuTarget, backend: str, rows: list[dict[str, Any]]) -> str:
    """The file ``--save-costs`` writes: the CPU and backend measured on, and per layer row
    (an int8 pass's report rows that carry ``float_ms``) its times."""
    layers = {row["layer"]: {"float_ms": row["float_ms"], "int8_ms": row["int8_ms"], "noise_ms": row["noise_ms"]}
              for row in rows if "float_ms" in row}
    return json.dumps({"schema": SCHEMA, "cpu": cpu.to_dict(), "backend": backend, "layers": layers}, indent=2) + "\n"


def load_costs(path: str | Path) -> CostTable:
    """The cost table in ``path``; the file is data, checked field by field."""
    fix = "give --costs a file written by `onnxsmith optimize ... --save-costs FILE` on the deployment machine"
    data = read_data_file(Path(path), MAX_COSTS_BYTES, "cost table", fix, json_only=True)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("layers"), dict) \
            or not isinstance(data.get("backend"), str):
        raise RecipeError(f"cost table {path} lacks schema {SCHEMA}, 'backend' or 'layers'", fix)
    layers = {}
    for name, entry in data["layers"].items():
        values = [entry.get(k) if isinstance(entry, dict) else None for k in ("float_ms", "int8_ms", "noise_ms")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values):
            raise RecipeError(f"cost table {path}: layer '{str(name)[:80]}' needs float_ms, int8_ms, noise_ms >= 0", fix)
        layers[str(name)] = LayerCosts(*map(float, values))
    return CostTable(str(path), cpu_from_data(data, f"cost table {path}", fix), data["backend"], layers)
