"""The batch's result: per-model rows and counts, written as summary.json, .md and .csv.

summary.json is what CI parses (``counts`` and ``models``); summary.md is meant for a CI
step summary; summary.csv for a spreadsheet. All three hold the same rows.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnxsmith.batch.outcome import NUMBER_KEYS
from onnxsmith.latency import ratio_with_spread
from onnxsmith.modelio import write_text_atomic
from onnxsmith.report import json_safe

__all__ = ["SUMMARY_FILES", "SUMMARY_SCHEMA_VERSION", "BatchSummary", "ModelResult", "summary_markdown", "write_summaries"]

SUMMARY_FILES = ("summary.json", "summary.md", "summary.csv")

SUMMARY_SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")


@dataclass
class ModelResult:
    """One model of the batch. ``skipped``: a resume found it done with the same model and recipe."""

    path: str
    source: str
    status: Literal["ok", "failed", "skipped"]
    error: str | None = None
    seconds: float | None = None
    attempts: int = 0
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "numbers"}
        data.update({k: self.numbers.get(k) for k in NUMBER_KEYS})
        return data


@dataclass
class BatchSummary:
    outdir: str
    executor: str
    seconds: float
    models: list[ModelResult]

    @property
    def counts(self) -> dict[str, int]:
        return {status: sum(m.status == status for m in self.models) for status in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "outdir": self.outdir,
            "executor": self.executor,
            "seconds": self.seconds,
            "counts": self.counts,
            "models": [m.to_dict() for m in self.models],
        })


def write_summaries(summary: BatchSummary, outdir: Path) -> list[Path]:
    """Write OUTDIR/summary.json, summary.md and summary.csv (each atomically)."""
    data = summary.to_dict()
    files = {
        outdir / SUMMARY_FILES[0]: json.dumps(data, indent=2, allow_nan=False) + "\n",
        outdir / SUMMARY_FILES[1]: summary_markdown(data),
        outdir / SUMMARY_FILES[2]: _csv(data["models"]),
    }
    for path, text in files.items():
        write_text_atomic(path, text)
    return list(files)


def summary_markdown(data: dict[str, Any], *, heading: str = "#", passes: str | None = None) -> str:
    """The batch's Markdown (summary.md; a CI step summary with ``heading`` "###" and the recipe's ``passes``)."""
    counts = data["counts"]
    lines = [
        f"{heading} onnxsmith batch: `{data['outdir']}`",
        "",
        *([f"Passes: `{passes}`.", ""] if passes else []),
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped (already done) "
        f"in {data['seconds']:.1f} s, executor `{data['executor']}`.",
        "",
        "| model | status | size before → after | latency ratio (IQR over rounds) | drift | seconds | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in data["models"]:
        size = f"{_num(m['bytes_before'])} → {_num(m['bytes_after'])}" if m["bytes_after"] is not None else ""
        ratio = ratio_with_spread(m["latency_ratio"], m.get("latency_ratio_p25"), m.get("latency_ratio_p75"))
        drift = f"{m['drift']:.3g}" if m["drift"] is not None else ""
        seconds = f"{m['seconds']:.1f}" if m["seconds"] is not None else ""
        error = (m["error"] or "").replace("|", "\\|")
        lines.append(f"| `{m['path']}` | {m['status']} | {size} | {ratio} | {drift} | {seconds} | {error} |")
    return "\n".join(lines) + "\n"


def _csv(models: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "source", "status", "error", "seconds", "attempts", *NUMBER_KEYS],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(models)
    return buffer.getvalue()


def _num(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


