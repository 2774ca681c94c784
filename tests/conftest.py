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


def real_model_or_skip(name: str) -> Path:
    """The real model ``name`` of DESIGN.md (tests/realmodels.py) or of the zoo (tests/zoo.py),
    fetched once into the cache. Where it cannot be had the test is skipped, except on CI
    (``CI`` set), where it fails."""
    from realmodels import RealModelUnavailable, real_model
    from zoo import ZOO, zoo_model

    try:
        return zoo_model(name) if name in ZOO else real_model(name)
    except RealModelUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"real model '{name}' is unavailable on CI: {e}")
        pytest.skip(f"real model '{name}' is unavailable (set CI to make this a failure): {e}")


def sentence_embeddings(model_path: Path | str, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Unit-length mean-pooled embeddings (over the attention mask's tokens) of a sentence
    encoder's first output, on ONNX Runtime CPU: [sentences, dim]. Rows' dot products are cosines."""
    hidden = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, batch)[0]
    mask = batch["attention_mask"][..., None].astype(np.float64)
    pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def fixture_feeds(name: str, count: int = 4) -> list[dict[str, np.ndarray]]:
    """The first ``count`` samples of fixtures/NAME.npz, each with batch 1."""
    with np.load(FIXTURES / f"{name}.npz") as npz:
        return [{k: npz[k][i : i + 1] for k in npz.files} for i in range(count)]


@pytest.fixture
def cli():
    return run_cli
