"""The default recipes on a few models of the real-model zoo (tests/zoo.py; issue 18): the
small ones, each a kind the five real models of realmodels.py are not. bench/zoo_bench.py
runs every recipe on every zoo model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from conftest import real_model_or_skip, run_cli
from zoo import zoo_inputs

pytestmark = pytest.mark.realmodel

# model -> the metric onnxsmith should recognise from its signature, and why the model is here
SMALL_ZOO = {
    "silero_vad": ("drift", "If + LSTM, a 0-d input, recurrent state"),
    "orientation": ("top1", "depthwise convs, Paddle export, a classifier"),
    "ow_embedding": ("drift", "TensorFlow (tf2onnx) NHWC graph"),
    "plcmos": ("drift", "GRU, a 0-d output"),
    "face_detection": ("drift", "a face detector converted from TensorFlow Lite, float16 weights"),
}


@pytest.mark.parametrize("preset", ["fast", "int8"])
@pytest.mark.parametrize("name", sorted(SMALL_ZOO))
def test_a_default_recipe_on_a_zoo_model_writes_an_artifact_within_its_budget(tmp_path, name, preset):
    source = real_model_or_skip(name)
    data = tmp_path / "data.npz"
    np.savez(data, **zoo_inputs(name, 12))
    out = tmp_path / "out.onnx"
    result = run_cli("optimize", str(source), "-o", str(out), "--preset", preset, "--calib", str(data),
                     "--latency-rounds", "0", "--profile-runs", "0", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    accuracy = report["accuracy"]
    assert accuracy["metric"] == SMALL_ZOO[name][0], accuracy["reason"]
    assert report["summary"]["drift"] <= accuracy["budget"]
    if preset == "fast":
        assert report["summary"]["drift"] == pytest.approx(0, abs=1e-4)
    # The artifact runs on its own, on an input the run never saw, with the original's output names and ranks.
    feed = {k: np.asarray(v[-1]) for k, v in zoo_inputs(name, 13).items()}
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    artifact = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in artifact.get_outputs()] == [o.name for o in original.get_outputs()]
    got, want = artifact.run(None, feed), original.run(None, feed)
    assert [np.shape(g) for g in got] == [np.shape(w) for w in want]
