"""The run report (OUT.report.json): plain dataclasses serialised to versioned JSON.

CI users parse these keys: once released, rename nothing without bumping
SCHEMA_VERSION. Non-finite floats (an SQNR of identical outputs is +inf) are written as
null, since JSON has no infinity. Later issues add a per-layer ``profile``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "OutputReport", "PassRecord", "Report", "Summary", "json_safe"]

SCHEMA_VERSION = 1


@dataclass
class PassRecord:
    """One pass as the pipeline ran it."""

    name: str
    params: dict[str, Any]
    seconds: float
    nodes_before: int
    nodes_after: int
    modified: bool
    exact: bool
    drift: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)  # per-layer records of the pass


@dataclass
class OutputReport:
    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    channel_error: float


@dataclass
class Summary:
    """Before/after numbers: ``{"before": x, "after": y}`` pairs plus per-output drift."""

    nodes: dict[str, int]
    params: dict[str, int]
    bytes: dict[str, int]
    latency_ms: dict[str, Any]  # before, after, speedup; with timing: speedup_iqr, rounds, verdict (latency.speedup_summary)
    drift: float
    outputs: dict[str, OutputReport]
    # with the runtime told to compute in bf16/fp16: {"precision", "drift", "outputs"} of the artifact run that way
    runtime_precision: dict[str, Any] | None = None


@dataclass
class Report:
    tool_version: str
    source: dict[str, Any]
    backend: str
    recipe: dict[str, Any]
    passes: list[PassRecord]
    summary: Summary
    data: dict[str, Any]
    artifact: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    # where the artifact was built to run: backend, CPU (model, ISA, features), threads, precision
    target: dict[str, Any] | None = None
    # the metric the accuracy budget was on (task_choice.py): name, meaning, why, budget and its origin
    accuracy: dict[str, Any] | None = None
    # optimize --auto: the candidate pipelines tried, measured, and the one kept (auto.py)
    auto: dict[str, Any] | None = None
    # the CI gates the recipe set (max_drift, min_speedup, max_size): limit, value, passed (gates.py)
    gates: list[dict[str, Any]] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        ordered = {"schema_version": data.pop("schema_version")}
        ordered.update(data)
        return json_safe(ordered)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None: JSON has no infinity or NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
