"""--metric package.module:function: a user's drift metric drives the report and the guard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES, ROOT, ort_outputs, run_cli
from onnxsmith.data import Dataset, split_dataset
from onnxsmith.errors import RecipeError
from onnxsmith.metrics import default_drift, load_metric

PLUGIN_ENV = {"PYTHONPATH": str(ROOT / "tests")}


def test_load_metric_defaults_and_imports_by_name(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    assert load_metric(None) is default_drift
    metric = load_metric("plugins.user_metrics:max_abs")
    ref = [{"y": np.zeros((1, 3), np.float32)}]
    assert metric(ref, [{"y": np.array([[0.0, -2.5, 1.0]], np.float32)}]) == 2.5


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "not of the form"),
    ("plugins.missing_module:f", "cannot be imported"),
    ("plugins.user_metrics:missing", "has no function 'missing'"),
])
def test_bad_metric_specs_are_refused_with_the_reason(spec, message, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    with pytest.raises(RecipeError, match=message):
        load_metric(spec)


def test_metric_returning_no_number_is_refused(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    ref = [{"y": np.zeros((1, 3), np.float32)}]
    with pytest.raises(RecipeError, match="not a number"):
        load_metric("plugins.user_metrics:not_a_number")(ref, ref)


def test_cli_metric_sets_the_reported_drift_and_the_budget(tmp_path):
    out = tmp_path / "mlp.onnx"
    args = ["optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--passes", "quantize{guard=false}",
            "--calib", str(FIXTURES / "mlp.npz"), "--latency-rounds", "0", "--metric", "plugins.user_metrics:max_abs"]
    result = run_cli(*args, env=PLUGIN_ENV)
    assert result.code == 0, result.stderr
    report = json.loads(out.with_name("mlp.report.json").read_text())
    assert report["recipe"]["accuracy"]["metric"] == "plugins.user_metrics:max_abs"
    # The reported drift is the user's max-abs error on the held-out quarter of the data.
    with np.load(FIXTURES / "mlp.npz") as npz:
        _, held_out = split_dataset(Dataset({"x": npz["x"]}, "mlp.npz"))
    eval_feeds = [{"x": f["x"][None]} for f in held_out.feeds()]  # the model takes batches of 1
    expected = max(float(np.max(np.abs(g[0].astype(np.float64) - r[0])))
                   for r, g in zip(ort_outputs(FIXTURES / "mlp.onnx", eval_feeds), ort_outputs(out, eval_feeds)))
    assert report["summary"]["drift"] == pytest.approx(expected, rel=1e-3)

    tight = tmp_path / "tight.onnx"
    failed = run_cli(*args[:3], str(tight), *args[4:], "--max-drift", str(expected / 10), env=PLUGIN_ENV)
    assert failed.code == 4 and "exceeds the budget" in failed.stderr and not tight.exists()


def test_cli_metric_that_cannot_be_imported_fails_before_running(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--calib", str(FIXTURES / "mlp.npz"),
                     "--metric", "nowhere.at_all:f")
    assert result.code == 2 and "cannot be imported" in result.stderr and not out.exists()
