"""The records bench/run.py keeps: one Row per recipe on a model, one ModelResult per model,
and docs/bench_results.json, where they are stored between runs (report_md.py reads it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ModelResult", "Row", "load_results", "previous_runs", "to_json"]


@dataclass
class Row:
    """One recipe on one model."""

    key: str
    tool: str
    label: str
    kind: str
    ours: bool
    status: str = "ok"  # ok | failed | timed out | not available
    error: str = ""
    tool_s: float | None = None
    tool_cpu_s: float | None = None  # user + system CPU time of the tool's process
    peak_mb: float | None = None
    size_mb: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    passed: bool | None = None
    ms: float | None = None
    fp32_ms: float | None = None  # the fp32 model in the same interleaved run
    same_as: str | None = None  # "fp32" or another row's key: the same graph, scored and timed once
    phases: dict[str, float] = field(default_factory=dict)  # onnxsmith: seconds per pass, and "other"
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.ms if self.ms and self.fp32_ms else None


@dataclass
class ModelResult:
    model: str
    metric: str
    metric_text: str
    bound: float
    data: str
    calibration: int
    evaluation: int
    timed_shape: str
    fp32_ms: float
    fp32_mb: float
    aa_ratio: float
    rounds: int
    quick: bool
    phases: dict[str, float]  # seconds: data, tools (sum of wall), tools_cpu, scoring, timing
    rows: list[Row]


def to_json(result: ModelResult) -> dict:
    data = asdict(result)
    for row, raw in zip(result.rows, data["rows"], strict=True):
        raw["speedup"] = row.speedup
    return data


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load_results(path: Path) -> dict[str, dict]:
    """Per model, the result dict of the last run that measured it."""
    return _read(path).get("models", {})


def previous_runs(path: Path, names: set[str]) -> dict[str, dict]:
    """Per model in ``names``, the facts of the run that measured it (command, date, machine)."""
    return {n: r for n, r in _read(path).get("runs", {}).items() if n in names}
