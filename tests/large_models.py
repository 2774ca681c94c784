"""A generated model above 2 GB and the peak memory of a command run on it (issue 18), shared
by tests/test_large_model.py and bench/large_model_bench.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["peak_rss_of", "write_large_model"]


def write_large_model(folder: Path, gib: float) -> Path:
    """``folder``/large.onnx: two MatMuls of square float32 weights, ``gib`` GiB of weights in
    all, in external data (a layer of a large transformer, no more), and large.npz, 8 inputs.
    Written by a child process: a child's peak RSS counts its parent's memory at fork time,
    and the 2 GB of protobufs made here would stay in this process."""
    subprocess.run([sys.executable, __file__, str(folder), str(gib)], check=True)
    return folder / "large.onnx"


def _write(folder: Path, gib: float) -> None:
    side = int((gib * 2**30 / 2 / 4) ** 0.5) // 64 * 64
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((side, side), dtype=np.float32) / side**0.5, f"w{i}")
               for i in range(2)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w1"], ["y"], name="mm1")]
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(folder / "large.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="large.onnx.data")
    np.savez(folder / "large.npz", x=rng.standard_normal((8, 1, side), dtype=np.float32))


def peak_rss_of(command: list[str]) -> tuple[int, float, float, str]:
    """Exit code, peak RSS (MiB), wall seconds and stderr of ``command`` run as a child process
    (its peak from the kernel's accounting, os.wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024.0, time.perf_counter() - start, stderr


if __name__ == "__main__":
    _write(Path(sys.argv[1]), float(sys.argv[2]))
