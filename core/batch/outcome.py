"""What one attempt at one model came to: the message a worker sends back to the driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["NUMBER_KEYS", "Outcome", "numbers_from_summary"]

# The report summary numbers a batch keeps per model (ledger columns, summary fields).
NUMBER_KEYS = ("bytes_before", "bytes_after", "latency_before_ms", "latency_after_ms", "latency_ratio", "drift")


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
    """Size, latency ratio and drift out of a report's ``summary`` (as in OUT.report.json)."""
    latency = summary.get("latency_ms") or {}
    return {
        "bytes_before": summary["bytes"].get("before"),
        "bytes_after": summary["bytes"].get("after"),
        "latency_before_ms": latency.get("before"),
        "latency_after_ms": latency.get("after"),
        "latency_ratio": latency.get("speedup"),
        "drift": summary.get("drift"),
    }
