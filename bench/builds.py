"""Build the artifacts of bench/run.py: each in its own process (bench/anchors.py), a few
at a time, and tell which artifacts are the same graph.

A child's wall time and its ``ru_maxrss`` / CPU time (from ``os.wait4``) are the tool's own
numbers. With ``workers > 1`` builds share the machine with each other (and with the
scoring of finished ones), so wall times include that load; CPU times do not.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anchors
from rows import Row

__all__ = ["Job", "available_mb", "build", "content_key", "file_mb", "one_line", "run_builds"]

ANCHORS = Path(__file__).with_name("anchors.py")


@dataclass(frozen=True)
class Job:
    model: str
    recipe: anchors.Recipe
    src: Path
    out: Path  # where the artifact goes (the runtime recipe writes none)
    calib: Path
    estimate_s: float  # expected run time, to start the longest builds first
    peak_mb: float  # expected peak memory, to keep builds running together within the memory


def file_mb(path: Path) -> float:
    """The artifact's size, external data files beside it included."""
    extra = set(path.parent.glob(path.name + "*.data")) | set(path.parent.glob(path.stem + ".data"))
    return (path.stat().st_size + sum(p.stat().st_size for p in extra)) / 1e6


def content_key(path: Path) -> str:
    """A hash of the model's graph, opsets and weights, leaving out what does not change a
    run: metadata_props (onnxsmith's provenance), producer, doc strings. Two artifacts
    with the same key compute the same outputs at the same speed."""
    import onnx

    model = onnx.load(str(path))  # external data included
    del model.metadata_props[:]
    model.producer_name = model.producer_version = model.doc_string = model.graph.doc_string = ""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


class _Children:
    """The child processes running now, so an interrupted run can stop them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def remove(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            for proc in self._procs:
                if proc.returncode is None:  # not poll(): the waiting thread reaps it
                    try:
                        proc.kill()
                    except ProcessLookupError:
                        pass


def build(job: Job, timeout: float, children: _Children | None = None) -> Row:
    """Run anchors.py for ``job`` in a child process; time it and read its peak memory."""
    recipe = job.recipe
    row = Row(recipe.key, recipe.tool, recipe.label, recipe.kind, recipe.ours)
    log = job.out.with_suffix(".log")
    cmd = [sys.executable, str(ANCHORS), recipe.key, str(job.src), str(job.out), str(job.calib)]
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if children:
            children.add(proc)
        try:
            status, usage = _wait(proc, timeout)
        finally:
            if children:
                children.remove(proc)
    row.tool_s = time.perf_counter() - start
    row.peak_mb = usage.ru_maxrss / 1024 if usage else None
    row.tool_cpu_s = usage.ru_utime + usage.ru_stime if usage else None
    text = log.read_text(errors="replace")
    if status is None:
        row.status, row.error = "timed out", f"stopped after {timeout:.0f} s"
    elif status != 0:
        row.status, row.error = "failed", _error_line(text)
    elif "ANCHOR-RESULT " not in text:
        row.status, row.error = "failed", "printed no result"
    else:
        result = json.loads(text.rsplit("ANCHOR-RESULT ", 1)[1].splitlines()[0])
        row.notes.extend(result.get("notes", []))
        row.phases = result.get("phases", {})
        if recipe.kind == "runtime":
            row.size_mb = file_mb(job.src)
        elif job.out.is_file():
            row.size_mb = file_mb(job.out)
        else:
            row.status, row.error = "failed", "wrote no model"
    return row


def run_builds(jobs: list[Job], *, workers: int, timeout: float, on_done: Callable[[Job, Row], None],
               memory_mb: float | None = None) -> float:
    """Build every job, up to ``workers`` at a time, the longest expected first, and call
    ``on_done`` in this thread as each one finishes (while the others go on). A job starts
    only when its expected peak memory fits in ``memory_mb`` (default: 80% of the memory
    available now) beside those running; one that never fits runs alone. Returns the wall
    seconds."""
    start = time.perf_counter()
    budget = memory_mb if memory_mb is not None else 0.8 * available_mb()
    children = _Children()
    waiting = sorted(jobs, key=lambda j: -j.estimate_s)
    running: dict[Job, float] = {}  # job -> when it started
    finished: queue.Queue[tuple[Job, Row | BaseException]] = queue.Queue()

    def work(job: Job) -> None:
        try:
            finished.put((job, build(job, timeout, children)))
        except BaseException as e:  # handed to the main thread
            finished.put((job, e))

    try:
        while waiting or running:
            while len(running) < max(1, workers):
                job = _next_fitting(waiting, running, budget)
                if job is None:
                    break
                waiting.remove(job)
                running[job] = time.perf_counter()
                threading.Thread(target=work, args=(job,), daemon=True).start()
            job, row = finished.get()
            del running[job]
            if isinstance(row, BaseException):
                raise row
            on_done(job, row)
    except BaseException:
        children.kill_all()
        raise
    return time.perf_counter() - start


def _next_fitting(waiting: list[Job], running: dict[Job, float], budget: float) -> Job | None:
    """The next job to start beside the running ones (``running``: job -> its start time).

    The first waiting job (the longest) when its expected peak memory fits beside them; else
    a later one that fits and is expected to end before the running ones do, so the first
    one, waiting for memory, starts no later for it (backfilling). Any job when none runs.
    """
    if not waiting or not running:
        return waiting[0] if waiting else None
    used = sum(j.peak_mb for j in running)
    if used + waiting[0].peak_mb <= budget:
        return waiting[0]
    now = time.perf_counter()
    horizon = max(j.estimate_s - (now - started) for j, started in running.items())
    return next((j for j in waiting[1:] if used + j.peak_mb <= budget and j.estimate_s <= horizon), None)


def available_mb() -> float:
    """MemAvailable from /proc/meminfo, in MB (4 GB where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 4096.0


def _wait(proc: subprocess.Popen, timeout: float):
    """(exit status or None when killed at ``timeout``, the child's rusage)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return None, usage
        time.sleep(0.05)


def _error_line(log: str) -> str:
    """The last line of a traceback (``SomeError: message``), or the last line printed."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Fail", "Exceeded", "Invalid")) or "Error" in head.rsplit(".", 1)[-1]:
            return one_line(line)
    return one_line(lines[-1]) if lines else "failed without output"


def one_line(text: str, limit: int = 220) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."
