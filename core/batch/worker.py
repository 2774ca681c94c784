"""The worker process's side: bind its life to the batch, cap its memory, convert one model.

Runs in a child process started by :mod:`onnxsmith.batch.isolation`. Whatever the model
does (raise, hang, crash, allocate without end) stays in this process; the driver learns
the result from the single :class:`Outcome` sent back, or from the process's death.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from onnxsmith.batch.jobs import Job
from onnxsmith.batch.outcome import Outcome, numbers_from_summary
from onnxsmith.errors import OnnxsmithError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import validate_recipe
from onnxsmith.runtime import session_threads

__all__ = ["WorkerSettings", "child_main", "convert"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """Per-model limits and run options, the same for every model of a batch."""

    timeout_s: float | None = None
    memory_mb: int | None = None
    latency_rounds: int = 15
    threads: int = 0  # intra-op threads of the model's sessions unless its recipe asks (0: one per core)


def child_main(job: Job, settings: WorkerSettings, conn: Connection, lifeline: Connection, log_path: Path) -> None:
    """Entry point of a worker process: set up, convert ``job``, send the outcome, exit."""
    _die_with_driver(lifeline)
    _redirect_output(log_path)
    if settings.memory_mb:
        _limit_memory(settings.memory_mb)
    conn.send(convert(job, settings))
    conn.close()


def convert(job: Job, settings: WorkerSettings) -> Outcome:
    """Run ``optimize`` on one model; every error the model can cause becomes a failed Outcome.

    Its ONNX Runtime sessions use the recipe's ``resources.cpus`` intra-op threads, else the
    batch's share of the machine (``settings.threads``)."""
    try:
        recipe = validate_recipe(job.recipe, where=job.key)
        options = OptimizeOptions(input_shapes=list(job.input_shapes) or None, latency_rounds=settings.latency_rounds)
        with session_threads(job.cpus or settings.threads):
            report = optimize(job.source, job.output, recipe, options)
    except OnnxsmithError as e:  # a failed gate carries the report it wrote: the row keeps its numbers
        numbers = numbers_from_summary(e.report.to_dict()["summary"]) if e.report is not None else {}
        return Outcome("failed", e.one_line(), numbers=numbers)
    except MemoryError:
        return Outcome("failed", f"out of memory: the model needs more than the {settings.memory_mb} MiB limit (--memory-limit)")
    except Exception as e:  # a bug in onnxsmith or a library; the batch goes on and says which
        logger.exception("converting %s failed", job.key)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return Outcome("failed", f"internal error: {type(e).__name__}: {first}")
    return Outcome("ok", numbers=numbers_from_summary(report.to_dict()["summary"]))


def _die_with_driver(lifeline: Connection) -> None:
    """Never outlive the batch: a SIGKILLed driver must not leave workers writing files.

    Only the driver holds the other end of ``lifeline`` and never writes to it, so a read
    returns exactly when the driver is gone, however it died. (PR_SET_PDEATHSIG would not
    do: a worker's parent is the fork server, which lives as long as any worker does.)
    """

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv()
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="onnxsmith-lifeline").start()


def _redirect_output(log_path: Path) -> None:
    """Send the worker's stdout/stderr (C libraries' too) to its log file, off the progress bar."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)


def _limit_memory(memory_mb: int) -> None:
    """Cap the address space, so a runaway model fails with MemoryError instead of taking the machine."""
    import resource

    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing model must not fill the disk with cores
