"""One model, one process: start a worker, enforce its timeout, read its outcome or its death.

Workers come from multiprocessing's fork server, which imports onnxsmith once
(``set_forkserver_preload``) and forks a fresh single-threaded copy per model: isolation
without paying the import for every model, and no fork of a driver that runs threads.
Used by both executors: locally, and inside a Ray task on a cluster node.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path

from onnxsmith.batch.jobs import Job
from onnxsmith.batch.outcome import Outcome
from onnxsmith.batch.worker import WorkerSettings, child_main

__all__ = ["Isolator"]

_EXIT_GRACE_S = 10.0  # how long a worker that sent its outcome may take to exit


class Isolator:
    """Runs jobs in worker processes; thread-safe, so an executor can run several at once."""

    def __init__(self, settings: WorkerSettings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self._live: set[BaseProcess] = set()
        self._lock = threading.Lock()
        self._closed = False

    def run(self, job: Job) -> Outcome:
        """Convert ``job`` in its own process; never raises for what the model does."""
        ctx = _context()
        log_path = self.log_dir / (job.key + ".log")
        receiver, sender = ctx.Pipe(duplex=False)
        lifeline_r, lifeline_w = ctx.Pipe(duplex=False)  # EOF in the worker when this process dies
        process = ctx.Process(target=child_main, args=(job, self.settings, sender, lifeline_r, log_path),
                              name=f"onnxsmith-worker {job.key}", daemon=True)
        start = time.monotonic()
        try:
            with self._lock:
                if self._closed:
                    return Outcome("failed", "interrupted before it started")
                process.start()
                self._live.add(process)
            sender.close()
            lifeline_r.close()
            outcome = self._wait(process, receiver, log_path)
        finally:
            for conn in (receiver, sender, lifeline_r, lifeline_w):
                conn.close()
            with self._lock:
                self._live.discard(process)
        if outcome.status == "ok" or _is_empty(log_path):
            log_path.unlink(missing_ok=True)
        return replace(outcome, seconds=time.monotonic() - start)

    def kill_all(self) -> None:
        """SIGKILL every worker still running and start no more (the batch is being interrupted)."""
        with self._lock:
            self._closed = True
            for process in self._live:
                process.kill()

    def _wait(self, process: BaseProcess, receiver: multiprocessing.connection.Connection, log_path: Path) -> Outcome:
        timeout = self.settings.timeout_s
        ready = multiprocessing.connection.wait([receiver, process.sentinel], timeout)
        if not ready:
            process.kill()
            process.join()
            return Outcome("failed", f"timed out after {timeout:g} s (--timeout)")
        if receiver.poll():
            try:
                outcome: Outcome = receiver.recv()
            except EOFError:  # the pipe closed: the worker died before sending
                pass
            else:
                process.join(_EXIT_GRACE_S)
                if process.exitcode is None:
                    process.kill()
                    process.join()
                return outcome
        process.join()
        return Outcome("failed", _death_reason(process.exitcode, log_path), transient=True)


@functools.cache
def _context() -> BaseContext:
    """The fork-server context with onnxsmith preloaded (plain spawn where there is no fork server)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["onnxsmith.batch.worker"])
    return ctx


def _death_reason(exitcode: int | None, log_path: Path) -> str:
    """``worker crashed (killed by SIGSEGV); last output: ...``, from the exit code and log."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        how = f"killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    else:
        how = f"exited with code {exitcode} without a result"
    last = _last_line(log_path)
    return f"worker crashed ({how})" + (f"; last output: {last}" if last else "")


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def _last_line(log_path: Path) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1][:300] if lines else ""
