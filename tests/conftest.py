"""Shared test helpers: fixture paths, a real subprocess CLI runner, an independent reference run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench/realmodels.py fetches the real models of DESIGN.md
FIXTURES = ROOT / "fixtures"
FIXTURE_MODELS = ["cnn", "mlp", "transformer", "opset11", "external"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run ``python -m onnxsmith ARGS`` in a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "onnxsmith", *args],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=300,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def ort_outputs(model_path: Path | str, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Outputs of ONNX Runtime CPU with its graph optimizations off: the reference for exact passes."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def fixture_feeds(name: str, count: int = 4) -> list[dict[str, np.ndarray]]:
    """The first ``count`` samples of fixtures/NAME.npz, each with batch 1."""
    with np.load(FIXTURES / f"{name}.npz") as npz:
        return [{k: npz[k][i : i + 1] for k in npz.files} for i in range(count)]


@pytest.fixture
def cli():
    return run_cli
