"""This machine's roofline ceilings: peak fp32 compute (GFLOP/s) and memory bandwidth (GB/s), measured.

A roofline needs the two limits of the CPU the layers ran on. Neither is derived from a
table of CPU models or a constant tuned on one machine: both are measured here, in about
half a second, once per process (and per thread count):

1. Compute: an fp32 MatMul on ONNX Runtime's CPU provider (MLAS, the GEMM its Conv, MatMul
   and Gemm kernels run on), n x n by n x n for n = 512 (and 1024 on more than eight
   cores), with the profile's intra-op threads; the fastest run, 2*n^3 FLOPs.
2. Memory: a copy from one buffer to another, together four times the last-level cache
   (each 32 to 128 MiB), split over the same threads (and on one thread, which is faster on some shared VMs);
   the fastest run. Bytes counted as STREAM counts them: read once plus written once, the way
   the profile counts a layer's bytes (its inputs plus its outputs).

On a shared machine both are the best of a few short runs, so they are what the machine
did at its best during the probe; a layer can pass the memory ceiling when its tensors
stay in cache.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxsmith.target import detect_cpu

__all__ = ["Ceilings", "machine_ceilings"]

log = logging.getLogger(__name__)

GEMM_SIZES = (512, 1024)  # 1024 only above MANY_CORES, where a 512 GEMM leaves cores idle
MANY_CORES = 8
PROBE_SECONDS = 0.08  # per GEMM size and per copy mode: runs are repeated until this is spent
MIN_COPY_BYTES, MAX_COPY_BYTES = 32 << 20, 128 << 20  # per buffer: touching fresh pages is slow on some VMs


@dataclass(frozen=True)
class Ceilings:
    """The two roofs of a roofline, with how each was measured (said on the plot)."""

    peak_gflops: float  # fp32 GFLOP/s
    bandwidth_gbs: float  # GB/s (1e9 bytes)
    compute_how: str
    memory_how: str
    machine: str  # the CPU they were measured on: model, ISA, cores

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the two ceilings meet."""
        return self.peak_gflops / self.bandwidth_gbs


@functools.lru_cache(maxsize=4)
def machine_ceilings(threads: int = 0) -> Ceilings:
    """Measure this machine's fp32 GEMM peak and copy bandwidth on ``threads`` threads (0: the
    runtime's default, one per core); cached for the life of the process."""
    cpu = detect_cpu()
    workers = threads or os.cpu_count() or 1
    gflops, size = _gemm_peak(threads)
    bandwidth, nbytes, used = _copy_bandwidth(workers)
    thread_words = f"{threads} threads" if threads else "default threads"
    ceilings = Ceilings(
        peak_gflops=gflops, bandwidth_gbs=bandwidth,
        compute_how=f"fp32 MatMul {size}x{size}x{size} on ONNX Runtime (MLAS), {thread_words}",
        memory_how=f"copy of {nbytes >> 20} MiB on {used} thread{'s' if used > 1 else ''} (bytes read + written)",
        machine=f"{cpu.model} ({cpu.isa}, {cpu.cores or '?'} cores)",
    )
    log.info("machine ceilings: %.1f GFLOP/s, %.1f GB/s", gflops, bandwidth)
    return ceilings


def _gemm_peak(threads: int) -> tuple[float, int]:
    """The best fp32 GFLOP/s of ORT's MatMul over GEMM_SIZES, and the size that reached it."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    best, best_size = 0.0, GEMM_SIZES[0]
    rng = np.random.default_rng(0)
    for n in GEMM_SIZES if (os.cpu_count() or 1) > MANY_CORES else GEMM_SIZES[:1]:
        weight = rng.standard_normal((n, n), dtype=np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "ceiling_gemm",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
            [numpy_helper.from_array(weight, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, onnx.IR_VERSION, 10)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"a": rng.standard_normal((n, n), dtype=np.float32)}
        session.run(None, feed)  # warm-up: packing, thread pool start
        seconds = _fastest(functools.partial(session.run, None, feed))
        gflops = 2 * n**3 / seconds / 1e9
        if gflops > best:
            best, best_size = gflops, n
    return best, best_size


def _copy_bandwidth(workers: int) -> tuple[float, int, int]:
    """The best copy bandwidth in GB/s, the buffer size, and the number of threads that reached it."""
    llc = _last_level_cache_bytes()
    nbytes = min(max(2 * llc, MIN_COPY_BYTES), MAX_COPY_BYTES)
    both = np.ones(nbytes // 2, dtype=np.float32)  # one allocation, touched here: the timed copies pay no page faults
    src, dst = both[: nbytes // 4], both[nbytes // 4:]
    best, best_workers = 0.0, 1
    for count in sorted({workers, 1}, reverse=True):
        bounds = np.linspace(0, src.size, count + 1, dtype=np.int64)
        slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        with ThreadPoolExecutor(count) as pool:
            copy = functools.partial(_copy_in_parts, pool, src, dst, slices)
            copy()
            seconds = _fastest(copy)
        gbs = 2 * nbytes / seconds / 1e9
        if gbs > best:
            best, best_workers = gbs, count
    return best, nbytes, best_workers


def _copy_in_parts(pool: ThreadPoolExecutor, src: np.ndarray, dst: np.ndarray, slices: list[slice]) -> None:
    """``dst[:] = src``, one slice per thread (numpy lets go of the GIL while it copies)."""
    list(pool.map(lambda part: np.copyto(dst[part], src[part]), slices))


def _fastest(run: Callable[[], object], budget: float = PROBE_SECONDS, min_runs: int = 3, max_runs: int = 50) -> float:
    """The shortest wall time of ``run`` over repeated calls (at least min_runs, until budget is spent)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < min_runs or (spent < budget and runs < max_runs):
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best


def _last_level_cache_bytes() -> int:
    """The size of the largest cache of CPU 0 as Linux's sysfs reports it (0 where it cannot say)."""
    largest = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
        digits = text.rstrip("KkMmGg")
        if digits.isdigit():
            largest = max(largest, int(digits) * scale)
    return largest
