"""The local executor: up to N models at once on this machine, each in its own worker process."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from onnxsmith.batch.isolation import Isolator
from onnxsmith.batch.jobs import Job
from onnxsmith.batch.outcome import Outcome
from onnxsmith.batch.worker import WorkerSettings

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """One driver thread per running model waits on its worker process (threads only wait)."""

    def __init__(self, settings: WorkerSettings, log_dir: Path, workers: int) -> None:
        self.slots = workers
        self._isolator = Isolator(settings, log_dir)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxsmith-batch")
        self._running: dict[Future[Outcome], Job] = {}

    def submit(self, job: Job) -> None:
        self._running[self._pool.submit(self._isolator.run, job)] = job

    def next_done(self) -> tuple[Job, Outcome]:
        """Block until a model finishes; return it with its outcome."""
        done, _ = wait(self._running, return_when=FIRST_COMPLETED)
        future = done.pop()
        return self._running.pop(future), future.result()

    def close(self) -> None:
        """Kill what still runs and wait for the driver threads to notice."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._isolator.kill_all()
        self._pool.shutdown(wait=True)
