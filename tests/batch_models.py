"""PyTorch factories that misbehave, for the batch tests' manifests (``batch_models:NAME``).

Each runs inside a batch worker process, after onnxsmith imported torch to export it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def hang() -> torch.nn.Module:
    """Never returns: the batch's timeout must end it."""
    while True:
        time.sleep(60)


def crash() -> torch.nn.Module:
    """Kills its process without a word, as a segfaulting native library would."""
    os._exit(3)


def hog() -> torch.nn.Module:
    """Asks for 16 GiB of address space: fails under the worker's memory limit."""
    np.empty(16 << 30, dtype=np.uint8)
    return tiny()


def flaky() -> torch.nn.Module:
    """Crashes on the first attempt of a batch (per $BATCH_FLAKY_MARKER), succeeds on the next."""
    marker = Path(os.environ["BATCH_FLAKY_MARKER"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(5)
    return tiny()


def pause() -> torch.nn.Module:
    """With $BATCH_PAUSE_PIDFILE set, writes its pid there and sleeps until killed; else tiny()."""
    pidfile = os.environ.get("BATCH_PAUSE_PIDFILE")
    if pidfile:
        Path(pidfile).write_text(str(os.getpid()))
        hang()
    return tiny()


def _probe(name: str) -> torch.nn.Module:
    """Records, in $BATCH_PROBE_DIR/NAME.json, the intra-op threads an onnxsmith session made
    in this worker gets; with $BATCH_PROBE_HOLD set, then waits (up to 120 s) for the file
    $BATCH_PROBE_DIR/release, so a test can look at the batch while the model runs."""
    import onnx
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from onnxsmith.runtime import make_session

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(proto)
    threads = make_session(ir.from_proto(proto)).get_session_options().intra_op_num_threads
    folder = Path(os.environ["BATCH_PROBE_DIR"])
    (folder / f"{name}.part").write_text(json.dumps({"threads": threads, "pid": os.getpid()}))
    (folder / f"{name}.part").replace(folder / f"{name}.json")
    if os.environ.get("BATCH_PROBE_HOLD"):
        deadline = time.monotonic() + 120
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return tiny()


def probe() -> torch.nn.Module:
    return _probe("probe")


def probe_cpus() -> torch.nn.Module:
    return _probe("probe_cpus")
