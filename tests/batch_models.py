"""PyTorch factories that misbehave, for the batch tests' manifests (``batch_models:NAME``).

Each runs inside a batch worker process, after onnxsmith imported torch to export it.
"""

from __future__ import annotations

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
