"""Rendering of a batch: a live progress bar over models on stderr, then a summary table on stdout."""

from __future__ import annotations

from types import TracebackType

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from onnxsmith.batch import BatchSummary, ModelResult
from onnxsmith.batch.jobs import Job
from onnxsmith.cli.console import folding_table, stderr, stdout
from onnxsmith.cli.render import human_bytes
from onnxsmith.latency import ratio_with_spread


class BatchProgress:
    """``BatchEvents`` for the terminal: done/total, failed, running, ETA, one line per failure."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/red]  {task.fields[running]} running"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=stderr,
            transient=False,
        )
        self._task = self._progress.add_task("batch", total=None, failed=0, running=0)
        self._failed = 0
        self._running: set[str] = set()
        self._started = False

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._started:
            self._progress.stop()

    def planned(self, total: int, skipped: int) -> None:
        """Start the bar once the batch knows its models (bad input errors come before, bar-less)."""
        self._progress.start()
        self._started = True
        self._progress.update(self._task, total=total, completed=skipped)
        if skipped:
            self._progress.console.print(f"{skipped} of {total} models already done with the same recipe (resume): skipped")

    def started(self, job: Job, attempt: int) -> None:
        self._running.add(job.key)
        self._refresh()

    def finished(self, result: ModelResult) -> None:
        self._running.discard(result.path)
        if result.status == "failed":
            self._failed += 1
            self._progress.console.print(f"[red]✗[/red] {escape(result.path)}: {escape(result.error or '')}")
        self._progress.advance(self._task)
        self._refresh()

    def _refresh(self) -> None:
        self._progress.update(self._task, failed=self._failed, running=len(self._running))


def batch_summary(summary: BatchSummary) -> None:
    """The per-model table and the counts, on stdout."""
    table = folding_table("model", "status", "size before → after", "latency ratio (IQR)", "drift", "seconds",
                          title=f"Batch summary ({summary.outdir})", title_justify="left")
    style = {"ok": "green", "failed": "red", "skipped": "dim"}
    for m in summary.models:
        n = m.numbers
        size = f"{human_bytes(n.get('bytes_before'))} → {human_bytes(n.get('bytes_after'))}" if n.get("bytes_after") is not None else ""
        ratio = ratio_with_spread(n.get("latency_ratio"), n.get("latency_ratio_p25"), n.get("latency_ratio_p75"))
        drift = f"{n['drift']:.3g}" if n.get("drift") is not None else ""
        seconds = f"{m.seconds:.1f}" if m.seconds is not None else ""
        table.add_row(escape(m.path), f"[{style[m.status]}]{m.status}[/]", size, ratio, drift, seconds)
    stdout.print(table)
    for m in summary.models:  # below the table, one per line: a long error in a column wraps over dozens of rows
        if m.error:
            stdout.print(f"[red]failed[/red] {escape(m.path)}: {escape(m.error)}", soft_wrap=True)
    counts = summary.counts
    stdout.print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in {summary.seconds:.1f} s; "
                 f"summary.json/.md/.csv and ledger.sqlite in {escape(summary.outdir)}")
