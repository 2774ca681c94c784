"""``run_batch``: convert every model of a folder or manifest, resumably, with one recipe.

The driver owns OUTDIR while it runs (an exclusive lock), the ledger, and the schedule:
it hands at most ``slots`` models to the executor, records each final outcome in one
ledger transaction, and retries transient failures. On start and at the end it removes
temporary files that killed workers left in OUTDIR, so an interrupted batch never leaves
a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from onnxsmith.batch.jobs import Job, discover_jobs, model_size
from onnxsmith.batch.ledger import LEDGER_NAME, Ledger
from onnxsmith.batch.outcome import NUMBER_KEYS, Outcome
from onnxsmith.batch.summary import SUMMARY_FILES, BatchSummary, ModelResult, write_summaries
from onnxsmith.batch.worker import WorkerSettings
from onnxsmith.errors import InputError, OnnxsmithError
from onnxsmith.optimize import report_path_for
from onnxsmith.paths_guard import Read, Write, refuse_escape, refuse_overlap
from onnxsmith.recipe import Recipe
from onnxsmith.sources import source_files
from onnxsmith.target import physical_memory_bytes

__all__ = ["BatchEvents", "BatchInterrupted", "BatchOptions", "run_batch"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".batch.lock"
LOG_DIR = "logs"
TEMP_PREFIX = ".onnxsmith-"  # what modelio's atomic writes name their temporary files


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch; none of these change the artifacts (the recipe does)."""

    executor: Literal["local", "ray"] = "local"
    workers: int | None = None  # local: CPU count; ray: the cluster's CPUs
    timeout_s: float | None = 3600.0
    memory_mb: int | None = None  # None: physical memory / workers; 0: no limit
    retries: int = 1
    resume: bool = True
    latency_rounds: int = 15
    ray_address: str | None = None


class BatchEvents(Protocol):
    """Progress callbacks, called on the driver's main thread."""

    def planned(self, total: int, skipped: int) -> None: ...

    def started(self, job: Job, attempt: int) -> None: ...

    def finished(self, result: ModelResult) -> None: ...


class Executor(Protocol):
    slots: int

    def submit(self, job: Job) -> None: ...

    def next_done(self) -> tuple[Job, Outcome]: ...

    def close(self) -> None: ...


class BatchInterrupted(OnnxsmithError):
    """Ctrl-C or SIGTERM stopped the batch; finished models are in the ledger."""

    exit_code = 130


def run_batch(source: Path, outdir: Path, recipe: Recipe, options: BatchOptions, events: BatchEvents | None = None,
              *, reads: tuple[Read, ...] = (), writes: tuple[Write, ...] = ()) -> BatchSummary:
    """Convert every model under ``source`` (a folder or a manifest) into ``outdir``;
    ``reads``: other files the caller read (its recipe), which the batch must not overwrite;
    ``writes``: files the caller writes outside OUTDIR (a CI step summary), checked with the batch's."""
    jobs = discover_jobs(source, outdir, recipe)
    _refuse_unsafe_writes(jobs, source, outdir, reads, writes)
    outdir.mkdir(parents=True, exist_ok=True)
    with _exclusive(outdir):
        _remove_temporaries(outdir)
        ledger = Ledger(outdir / LEDGER_NAME)
        try:
            stale = ledger.interrupt_running("the batch stopped while this model was running")
            if stale:
                logger.warning("%d model(s) were running when the previous batch stopped; they run again", stale)
            summary = _Schedule(jobs, ledger, options, outdir, events).run()
        finally:
            ledger.close()
            _remove_temporaries(outdir)
            _remove_empty_dirs(outdir / LOG_DIR)
        write_summaries(summary, outdir)
    return summary


class _Schedule:
    """The driver loop of one batch: skip what is done, keep the executor's slots full, record."""

    def __init__(self, jobs: list[Job], ledger: Ledger, options: BatchOptions, outdir: Path, events: BatchEvents | None) -> None:
        self.jobs, self.ledger, self.options, self.outdir, self.events = jobs, ledger, options, outdir, events
        self.results: dict[str, ModelResult] = {}
        self.attempts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def run(self) -> BatchSummary:
        start = time.monotonic()
        todo = deque(job for job in self.jobs if not self._skip(job))
        planned = len(todo)
        if self.events:
            self.events.planned(len(self.jobs), len(self.jobs) - planned)
        if todo:
            executor = self._executor(todo)
            if executor.slots > 1:
                todo = deque(_largest_first(todo))
            try:
                self._drive(executor, todo)
            except KeyboardInterrupt:
                self.ledger.interrupt_running("interrupted (Ctrl-C or SIGTERM)")
                done = sum(r.status != "skipped" for r in self.results.values())
                raise BatchInterrupted(
                    f"interrupted with {done} of {planned} models finished",
                    f"run the same command again to finish the rest (ledger: {self.ledger.path})",
                ) from None
            finally:
                executor.close()
        return BatchSummary(outdir=str(self.outdir), executor=self.options.executor, seconds=time.monotonic() - start,
                            models=[self.results[job.key] for job in self.jobs])

    def _skip(self, job: Job) -> bool:
        if not (self.options.resume and self.ledger.is_done(job) and job.output.is_file()):
            return False
        row = self.ledger.row(job.key) or {}
        self.results[job.key] = ModelResult(job.key, job.source, "skipped", seconds=row.get("seconds"), attempts=row.get("attempts", 0),
                                            numbers={k: row.get(k) for k in NUMBER_KEYS})
        return True

    def _drive(self, executor: Executor, todo: deque[Job]) -> None:
        in_flight = 0
        while todo or in_flight:
            while todo and in_flight < executor.slots:
                job = todo.popleft()
                attempt = self.attempts[job.key] = self.attempts.get(job.key, 0) + 1
                self.ledger.mark_running(job, attempt)
                executor.submit(job)
                in_flight += 1
                if self.events:
                    self.events.started(job, attempt)
            job, outcome = executor.next_done()
            in_flight -= 1
            self.seconds[job.key] = self.seconds.get(job.key, 0.0) + outcome.seconds
            if outcome.transient and self.attempts[job.key] <= self.options.retries:
                logger.warning("%s: %s; retrying (attempt %d)", job.key, outcome.error, self.attempts[job.key] + 1)
                todo.appendleft(job)
                continue
            self.ledger.record(job, outcome, self.seconds[job.key])
            result = ModelResult(job.key, job.source, outcome.status, outcome.error, self.seconds[job.key],
                                 self.attempts[job.key], dict(outcome.numbers))
            self.results[job.key] = result
            if self.events:
                self.events.finished(result)

    def _executor(self, jobs: deque[Job]) -> Executor:
        """The executor for this batch, and what each worker may use.

        Locally, N workers share the machine's cores: each model's ONNX Runtime sessions get
        cores / N intra-op threads (one worker: ONNX Runtime's default, a thread per core),
        so two workers on two cores do not run four busy threads. On Ray a task has one CPU,
        so one thread. A recipe's ``resources.cpus`` overrides both for its models.
        """
        options = self.options
        workers = options.workers
        cpus = _usable_cpus()
        memory_mb = options.memory_mb
        if memory_mb is None:
            memory_mb = _physical_memory_mb() // (workers or cpus)
        settings = WorkerSettings(timeout_s=options.timeout_s, memory_mb=memory_mb or None, latency_rounds=options.latency_rounds)
        log_dir = self.outdir / LOG_DIR
        if options.executor == "ray":
            from onnxsmith.batch.ray_executor import RayExecutor

            largest = max((job.cpus or 1 for job in jobs), default=1)
            return RayExecutor(replace(settings, threads=1), log_dir, workers, options.ray_address, largest_request=largest)
        from onnxsmith.batch.local import LocalExecutor

        slots = workers or cpus
        threads = 0 if slots == 1 else max(1, cpus // slots)
        return LocalExecutor(replace(settings, threads=threads), log_dir, slots)


def _refuse_unsafe_writes(jobs: list[Job], source: Path, outdir: Path, reads: tuple[Read, ...],
                          outside: tuple[Write, ...] = ()) -> None:
    """Before any model runs: no planned write (artifact, its data file, report, log; ledger,
    lock, summaries; the caller's ``outside`` OUTDIR) may land on a file any entry reads (its
    model, external data, calibration data, cost table; the manifest) or on another entry's,
    nor leave OUTDIR through a symbolic link in it, nor fail to be written. The whole batch
    is refused, as for a bad manifest entry."""
    all_reads: list[Read] = [*reads, *([("the manifest", source)] if source.is_file() else [])]
    writes: list[Write] = []
    for job in jobs:
        files = source_files(job.source, check=False)
        all_reads += [("the model", f) for f in files[:1]]
        all_reads += [(f"the external data file of the model {job.source}", f) for f in files[1:]]
        data, costs = (job.recipe.get("calibration") or {}).get("data"), (job.recipe.get("target") or {}).get("costs")
        if data not in (None, "random"):
            all_reads.append(("the calibration data", data))
        if costs:
            all_reads.append(("the cost table", costs))
        fix = f"give the entry of {job.source} another `output`"
        writes += [("the output", job.output, fix),
                   ("the output's data file", job.output.with_name(job.output.name + ".data"), fix),
                   ("the report", report_path_for(job.output), fix),
                   ("the log", outdir / LOG_DIR / (job.key + ".log"), fix)]
    fix = "choose another -o folder"
    writes += [(f"the batch's {name}", outdir / name, fix) for name in (LEDGER_NAME, LEDGER_NAME + "-wal", LEDGER_NAME + "-shm", LOCK_NAME, *SUMMARY_FILES)]
    refuse_escape(outdir, [(what, path) for what, path, _ in [*writes, ("the log folder", outdir / LOG_DIR, fix)]])
    refuse_overlap(all_reads, [*writes, *outside])  # after: its writability probe must not follow a link out of OUTDIR


@contextlib.contextmanager
def _exclusive(outdir: Path) -> Iterator[None]:
    """Hold OUTDIR for this batch alone; the kernel drops the lock however the batch dies."""
    with open(outdir / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another batch is writing to {outdir}", "wait for it to finish, or choose another -o folder") from None
        yield


def _largest_first(jobs: Iterable[Job]) -> list[Job]:
    """Jobs ordered by model size, largest first, for several workers: the long models start
    early and the short ones fill the gaps, so no worker idles at the end waiting on one big model
    (longest-processing-time-first scheduling; the model's bytes stand in for its work). One
    worker keeps the listed order: there the order does not change the total time."""
    return sorted(jobs, key=lambda job: model_size(job.source), reverse=True)


def _remove_temporaries(outdir: Path) -> None:
    """Delete what killed workers left mid-write (only ever temporary files; artifacts are renamed in whole)."""
    for path in sorted(outdir.rglob(TEMP_PREFIX + "*"), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _remove_empty_dirs(root: Path) -> None:
    """Drop log folders left empty (logs are kept only for models that failed with output)."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _physical_memory_mb() -> int:
    return physical_memory_bytes() // (1024 * 1024)
