"""Live progress of a pipeline on stderr: a spinner while a pass runs, one line when it ends."""

from __future__ import annotations

from onnxsmith.cli.console import stderr
from onnxsmith.model import Model
from onnxsmith.pass_base import Pass
from onnxsmith.report import PassRecord


class ProgressInstrument:
    """Pipeline instrument that renders each pass as it runs (stderr, so --json stays clean)."""

    def __init__(self) -> None:
        self._status = None

    def before_pass(self, pass_: Pass, model: Model) -> None:
        self._status = stderr.status(f"running {pass_}", spinner="dots")
        self._status.start()

    def close(self) -> None:
        """Stop the spinner (also when a pass failed)."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def after_pass(self, pass_: Pass, model: Model, record: PassRecord) -> None:
        self.close()
        # a lossy pass whose budget metric did not move (top1 unchanged) is not "exact"
        drift = f"drift {record.drift:.2e}" if record.drift else "exact" if record.exact else "lossy, drift 0"
        changed = "" if record.modified else "  [dim](no change)[/dim]"
        stderr.print(
            f"[green]✓[/green] {str(pass_):<28} {record.seconds:7.2f}s  "
            f"nodes {record.nodes_before:>5} → {record.nodes_after:<5}  {drift}{changed}"
        )
