"""int8 quantization on fixtures: real int8 weights, QDQ, integer kernels, calibration methods, guard."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import FIXTURES, fixture_feeds, ort_outputs
from onnxsmith.errors import DataError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe


def _quantize(name, tmp_path, pipeline="cleanup,quantize", calib=True, max_drift=None):
    data = {"passes": parse_pipeline(pipeline)}
    if calib:
        data["calibration"] = {"data": str(FIXTURES / f"{name}.npz")}
    if max_drift is not None:
        data["accuracy"] = {"max_drift": max_drift}
    out = tmp_path / f"{name}.onnx"
    report = optimize(str(FIXTURES / f"{name}.onnx"), out, validate_recipe(data), OptimizeOptions(latency_rounds=0))
    return out, report, report.passes[-1]


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_int8_cnn_has_int8_weights_qdq_and_integer_kernels(tmp_path):
    out, report, record = _quantize("cnn", tmp_path)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) == 3  # every Conv weight is stored as int8
    assert all(numpy_helper.to_array(w).dtype == np.int8 for w in int8_weights)
    assert record.counts["int8_kernels"] >= 3 and record.counts["float_fallbacks"] == 0
    assert report.summary.bytes["after"] < report.summary.bytes["before"] * 0.75
    feeds = fixture_feeds("cnn", count=6)
    for ref, got in zip(ort_outputs(FIXTURES / "cnn.onnx", feeds), ort_outputs(out, feeds), strict=True):
        assert _cosine(ref[0], got[0]) > 0.99
    assert report.summary.drift < 0.1


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_each_calibration_method_gives_a_close_model(method, tmp_path):
    out, report, record = _quantize("mlp", tmp_path, pipeline=f"quantize{{calibration={method},guard=false}}")
    assert record.params["calibration"] == method and record.counts["layers_quantized"] == 3
    assert report.summary.drift < 0.15
    feeds = fixture_feeds("mlp", count=6)
    for ref, got in zip(ort_outputs(FIXTURES / "mlp.onnx", feeds), ort_outputs(out, feeds), strict=True):
        assert _cosine(ref[0], got[0]) > 0.98


def test_clipping_methods_choose_narrower_ranges_than_minmax(tmp_path):
    """Percentile/entropy/mse clip outliers: their scales are never wider than min/max's."""
    from onnxsmith.passes.quantize.calibration import collect_ranges
    from onnxsmith.sources import load_source

    model = load_source(str(FIXTURES / "cnn.onnx")).ir
    names = [n.outputs[0].name for n in model.graph if n.op_type == "Conv"]
    feeds = fixture_feeds("cnn", count=8)
    minmax = collect_ranges(model, names, feeds, method="minmax")
    for method in ("percentile", "entropy", "mse"):
        clipped = collect_ranges(model, names, feeds, method=method, percentile=99.9)
        for n in names:
            assert clipped[n].high <= minmax[n].high + 1e-6 and clipped[n].low >= minmax[n].low - 1e-6
        if method != "entropy":  # KL keeps the full range when clipping costs more than it saves
            assert any(clipped[n].high < minmax[n].high * 0.999 for n in names), method


def test_opset_11_model_is_upgraded_and_valid(tmp_path):
    out, _, record = _quantize("opset11", tmp_path)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    assert any("from opset 11 to 13" in n for n in record.notes)
    assert any(n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute) for n in model.graph.node)


def test_guard_keeps_layers_in_float_to_meet_a_tight_budget(tmp_path):
    unguarded_out, unguarded, record_off = _quantize("mlp", tmp_path, pipeline="quantize{guard=false}")
    budget = unguarded.summary.drift / 3
    out, guarded, record = _quantize("mlp", tmp_path, pipeline="quantize", max_drift=budget)
    assert record_off.counts["layers_float"] == 0
    assert record.counts["layers_float"] >= 1
    assert record.counts["layers_quantized"] == 3 - record.counts["layers_float"]  # the mlp has 3 weighted layers
    assert guarded.summary.drift <= budget < unguarded.summary.drift
    assert any(n.startswith("kept in float: ") and "sensitivity" in n for n in record.notes)


def test_quantize_refuses_without_calibration_data(tmp_path):
    with pytest.raises(DataError, match="pass 'quantize' needs calibration data"):
        _quantize("cnn", tmp_path, calib=False)


@pytest.mark.parametrize("method", ["entropy", "mse", "percentile"])
def test_clipping_methods_ignore_rare_outliers(method):
    """|x| ~ half-normal plus 2 values at 40 sigma among 2M: the threshold stays near the bulk.

    (With many outliers MSE rightly keeps them: their clipping error would dominate.)"""
    from onnxsmith.passes.quantize.calibration import BINS, _threshold

    values = np.abs(np.random.default_rng(0).standard_normal(2_000_000))
    values[:2] = 40.0
    hist, _ = np.histogram(values, bins=BINS, range=(0.0, 40.0))
    threshold = _threshold(hist.astype(np.float64), 40.0, method, 99.99)
    assert 2.5 < threshold < 12.0, threshold
