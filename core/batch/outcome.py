"""What one attempt at one model came to: the message a worker sends back to the driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["NUMBER_KEYS", "Outcome", "numbers_from_summary"]

# The report summary numbers a batch keeps per model (ledger columns, summary fields).
# latency_ratio_p25/p75: the spread of the per-round ratios of the interleaved timing (a ratio without it is not a fact).
NUMBER_KEYS = ("bytes_before", "bytes_after", "latency_before_ms", "latency_after_ms", "latency_ratio", "latency_ratio_p25",
               "latency_ratio_p75", "drift")


@dataclass(frozen=True)
class Outcome:
    """``ok`` with the report's numbers, or ``failed`` with a one-line reason.

    ``transient`` marks failures worth another attempt: the worker died without saying
    why (killed, crashed, its node lost). Errors the model itself causes (bad input, a
    failing pass, a timeout, the memory limit) would only fail again.
    """

    status: Literal["ok", "failed"]
    error: str | None = None
    transient: bool = False
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)


def numbers_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Size, latency ratio (with its spread over the rounds) and drift out of a report's ``summary`` (as in OUT.report.json)."""
    latency = summary.get("latency_ms") or {}
    low, high = latency.get("speedup_iqr") or (None, None)
    return {
        "bytes_before": summary["bytes"].get("before"),
        "bytes_after": summary["bytes"].get("after"),
        "latency_before_ms": latency.get("before"),
        "latency_after_ms": latency.get("after"),
        "latency_ratio": latency.get("speedup"),
        "latency_ratio_p25": low,
        "latency_ratio_p75": high,
        "drift": summary.get("drift"),
    }
