"""CI gates on a written artifact: minimum speedup and maximum size (recipe ``gates``).

The accuracy gate, ``accuracy.max_drift``, is checked before anything is written (a model
outside its budget is never written); these two are checked on the artifact as written, so
a failed one leaves the artifact and its report in place for the CI job to inspect, and
the CLI exits with ``GateFailed.exit_code``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxsmith.errors import GateFailed
from onnxsmith.latency import MIN_ROUNDS

if TYPE_CHECKING:
    from onnxsmith.recipe import GatesSpec
    from onnxsmith.report import Report

__all__ = ["check_gates", "gate_rows"]


def gate_rows(gates: GatesSpec, max_drift: float | None, report: Report) -> list[dict]:
    """One row per gate the recipe sets: its name, limit, the measured value and whether it held."""
    summary = report.summary
    rows = []
    if max_drift is not None:
        rows.append({"gate": "max_drift", "limit": max_drift, "value": summary.drift, "passed": summary.drift <= max_drift})
    if gates.min_speedup is not None:
        rows.append(_speedup_row(gates.min_speedup, summary.latency_ms))
    if gates.max_size is not None:
        size = summary.bytes["after"]
        rows.append({"gate": "max_size", "limit": gates.max_size, "value": size, "passed": size <= gates.max_size})
    return rows


def _speedup_row(limit: float, latency: dict) -> dict:
    """The speedup gate holds when the artifact reached ``limit`` in most interleaved rounds
    (the per-round ratios' 25th percentile, the same test that calls a ratio "faster"), over
    at least MIN_ROUNDS rounds: a median that reached it within the noise does not pass."""
    speedup, spread, rounds = latency.get("speedup"), latency.get("speedup_iqr"), latency.get("rounds", 0)
    held = spread[0] if spread else None
    passed = speedup is not None and held is not None and rounds >= MIN_ROUNDS and speedup >= limit and held >= limit
    return {"gate": "min_speedup", "limit": limit, "value": speedup, "held_in_most_rounds": held, "rounds": rounds,
            "passed": passed}


def check_gates(report: Report) -> None:
    """Raise ``GateFailed`` (carrying ``report``) when a row of ``report.gates`` failed."""
    failed = [row for row in report.gates or [] if not row["passed"]]
    if not failed:
        return
    problems = "; ".join(_describe(row) for row in failed)
    raise GateFailed(f"gate failed: {problems}; the artifact and its report were written",
                     "read the report's gates and summary, then relax the gate or change the recipe", report=report)


def _describe(row: dict) -> str:
    if row["gate"] == "min_speedup":
        if row["value"] is None:
            return f"speedup not measured for --min-speedup {row['limit']:g}"
        if row["rounds"] < MIN_ROUNDS:
            return (f"speedup {row['value']:.2f}x over {row['rounds']} rounds is too few to hold --min-speedup "
                    f"{row['limit']:g}: time with --latency-rounds {MIN_ROUNDS} or more")
        return (f"speedup {row['value']:.2f}x (at least {row['held_in_most_rounds']:.2f}x in 3 of 4 rounds) "
                f"is below --min-speedup {row['limit']:g}")
    if row["gate"] == "max_size":
        return f"size {row['value']} bytes exceeds --max-size {row['limit']} bytes"
    return f"drift {row['value']:.4g} exceeds --max-drift {row['limit']:g}"
