"""The Ray executor: the same per-model work as Ray tasks, on a local Ray or a cluster.

Each task runs the model in a worker process on its node (:class:`Isolator`, as locally),
so timeouts, the memory limit and crash isolation behave the same everywhere. The ledger
stays with the driver. Tasks write artifacts to the driver's OUTDIR path: on a cluster
that path must be shared storage mounted at the same place on every node, and onnxsmith
must be installed on every node.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from onnxsmith.batch.isolation import Isolator
from onnxsmith.batch.jobs import Job
from onnxsmith.batch.outcome import Outcome
from onnxsmith.batch.worker import WorkerSettings
from onnxsmith.errors import InputError

__all__ = ["RayExecutor"]

_POLL_S = 1.0  # ray.wait blocks in C; wake up this often so Ctrl-C and SIGTERM get through


def _run_on_node(job: Job, settings: WorkerSettings, log_dir: str) -> Outcome:
    """The Ray task: one model in an isolated worker process on whichever node runs it."""
    return Isolator(settings, Path(log_dir)).run(job)


class RayExecutor:
    """Submits one Ray task per model and collects outcomes.

    A task asks Ray for one CPU, or for the ``resources.cpus`` its recipe names, and its
    model's sessions use that many intra-op threads. A local Ray started here gets
    ``workers`` CPUs (default: this machine's), raised to the largest request so every model
    can be scheduled; on a cluster, a model asking more CPUs than its largest node has fails
    at once instead of waiting forever.
    """

    def __init__(self, settings: WorkerSettings, log_dir: Path, workers: int | None, address: str | None,
                 largest_request: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--executor ray needs Ray installed", "pip install 'onnxsmith[ray]'") from None
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=max(workers or os.cpu_count() or 1, largest_request), include_dashboard=False,
                             log_to_driver=False)
            except ConnectionError as e:
                raise InputError(f"cannot reach the Ray cluster at {address}: {e}", "check --ray-address (e.g. ray://host:10001 or auto)") from None
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.largest_node = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
        self.slots = max(1, min(workers, cluster_cpus) if workers else cluster_cpus)
        self._settings = settings
        self._log_dir = str(log_dir)
        self._task = ray.remote(max_retries=0)(_run_on_node)
        self._running: dict[Any, Job] = {}
        self._refused: deque[tuple[Job, Outcome]] = deque()

    def submit(self, job: Job) -> None:
        cpus = job.cpus or 1
        if cpus > self.largest_node:
            self._refused.append((job, Outcome(
                "failed", f"its recipe asks for {cpus} CPUs (resources.cpus) but the largest Ray node has {self.largest_node:g}")))
            return
        settings = replace(self._settings, threads=cpus)
        self._running[self._task.options(num_cpus=cpus).remote(job, settings, self._log_dir)] = job

    def next_done(self) -> tuple[Job, Outcome]:
        """Block until a task finishes; a task Ray lost (worker or node died) is a transient failure."""
        if self._refused:
            return self._refused.popleft()
        ready: list[Any] = []
        while not ready:
            ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=_POLL_S)
        job = self._running.pop(ready[0])
        try:
            return job, self._ray.get(ready[0])
        except self._ray.exceptions.RayError as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            return job, Outcome("failed", f"ray: {type(e).__name__}: {first}", transient=True)

    def close(self) -> None:
        """Cancel what still runs (its worker processes die with their Ray workers); stop our Ray."""
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns_ray:
            self._ray.shutdown()
