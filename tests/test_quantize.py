"""int8 quantization on fixtures: real int8 weights, QDQ, integer kernels, calibration methods,
reader-aware ranges, the default drift metric, the guard; one real model end to end."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from conftest import FIXTURES, fixture_feeds, ort_outputs, real_model_or_skip
from onnxsmith.errors import DataError
from onnxsmith.measure import Measurements
from onnxsmith.metrics import default_drift
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe


def _quantize(name, tmp_path, pipeline="cleanup,quantize", calib=True, max_drift=None, out_name=None, target="host"):
    # the per-channel drift: these tests are about the guard's mechanics on continuous errors,
    # not about the fixtures' task (a classifier's top-1 rarely moves on a few samples)
    data = {"passes": parse_pipeline(pipeline), "target": {"cpu": target}, "accuracy": {"metric": "drift", "max_drift": max_drift}}
    if calib:
        data["calibration"] = {"data": str(FIXTURES / f"{name}.npz")}
    out = tmp_path / (out_name or f"{name}.onnx")
    report = optimize(str(FIXTURES / f"{name}.onnx"), out, validate_recipe(data), OptimizeOptions(latency_rounds=0))
    return out, report, report.passes[-1]


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _rows(record):
    return {row["layer"]: row for row in record.layers}


def test_int8_cnn_has_int8_weights_qdq_and_integer_kernels(tmp_path):
    """Built for an AVX2 CPU without VNNI, where the speed rule of the int8 plan was measured."""
    out, report, record = _quantize("cnn", tmp_path, target="avx2")
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert all(numpy_helper.to_array(w).dtype == np.int8 for w in int8_weights)
    rows = _rows(record)
    convs = [r for r in rows.values() if r["op"] == "Conv"]
    # the residual block's two 16->16 3x3 convolutions run int8; the stem (3 input channels,
    # stride 2: 15 multiply-adds per value moved) and the Linear head stay float, with the reason
    assert sorted(r["precision"] for r in convs) == ["fp32", "int8", "int8"] and len(int8_weights) == 2
    assert "multiply-adds per value moved" in next(r["reason"] for r in convs if r["precision"] == "fp32")
    assert [r["precision"] for r in rows.values() if r["op"] in ("Gemm", "MatMul")] == ["fp32"]
    assert record.counts["layers_quantized"] == 2 and record.counts["layers_float_by_rule"] == 2
    assert record.counts["int8_kernels"] >= 2 and record.counts["float_fallbacks"] == 0
    feeds = fixture_feeds("cnn", count=6)
    for ref, got in zip(ort_outputs(FIXTURES / "cnn.onnx", feeds), ort_outputs(out, feeds), strict=True):
        assert _cosine(ref[0], got[0]) > 0.99
    assert report.summary.drift < 0.03
    assert report.target["cpu"]["isa"] == "x86_64 AVX2" and report.target["cpu"]["source"] == "avx2"


def test_int8_weight_range_follows_the_stated_target_not_the_build_machine(tmp_path):
    """7-bit weights where MLAS's u8 x s8 GEMM saturates (x86 without VNNI), the full 8 bits
    on a VNNI target, whatever CPU builds the model."""
    ranges = {}
    for target in ("avx2", "avx512-vnni"):
        out, report, _ = _quantize("cnn", tmp_path, target=target, out_name=f"{target}.onnx")
        weights = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
                   if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
        ranges[target] = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
        assert report.target["cpu"]["source"] == target
    assert ranges["avx2"] <= 64 < ranges["avx512-vnni"] <= 127


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_each_calibration_method_gives_a_close_model(method, tmp_path):
    out, report, record = _quantize("mlp", tmp_path, pipeline=f"quantize{{calibration={method},guard=false,skip_slow=false}}")
    # 64->128 and 128->128 run int8; 128->10 is the output head
    assert record.params["calibration"] == method and record.counts["layers_quantized"] == 2
    assert report.summary.drift < 0.03
    feeds = fixture_feeds("mlp", count=6)
    for ref, got in zip(ort_outputs(FIXTURES / "mlp.onnx", feeds), ort_outputs(out, feeds), strict=True):
        assert _cosine(ref[0], got[0]) > 0.99


def test_clipping_methods_choose_narrower_ranges_than_minmax(tmp_path):
    """Percentile/entropy/mse clip outliers: their ranges are never wider than min/max's."""
    from onnxsmith.passes.quantize.calibration import collect_ranges
    from onnxsmith.sources import load_source

    model = load_source(str(FIXTURES / "cnn.onnx")).ir
    names = [n.outputs[0].name for n in model.graph if n.op_type == "Conv"]
    feeds = fixture_feeds("cnn", count=8)
    measure = Measurements()
    minmax = collect_ranges(measure, model, names, feeds, method="minmax")
    for method in ("percentile", "entropy", "mse"):
        clipped = collect_ranges(measure, model, names, feeds, method=method, percentile=99.9)
        for n in names:
            assert clipped[n].high <= minmax[n].high + 1e-6 and clipped[n].low >= minmax[n].low - 1e-6
            assert clipped[n].low <= 0.0 <= clipped[n].high  # int8 zero points are exact
        if method != "entropy":  # KL keeps the full range when clipping costs more than it saves
            assert any(clipped[n].high < minmax[n].high * 0.999 for n in names), method


def test_cached_ranges_follow_weights_changed_in_place():
    """smooth rescales weights under their old names: cached ranges must not outlive them."""
    from onnxsmith.passes.quantize.calibration import collect_ranges
    from onnxsmith.sources import load_source

    model = load_source(str(FIXTURES / "cnn.onnx")).ir
    conv = next(n for n in model.graph if n.op_type == "Conv")
    name, feeds, measure = conv.outputs[0].name, fixture_feeds("cnn", count=4), Measurements()
    before = collect_ranges(measure, model, [name], feeds, method="minmax")[name]
    assert collect_ranges(measure, model, [name], feeds, method="minmax")[name] == before
    served = measure.counts["cached"]
    weight = conv.inputs[1]
    weight.const_value = ir.tensor(weight.const_value.numpy() * 2.0, name=weight.name)
    after = collect_ranges(measure, model, [name], feeds, method="minmax")[name]
    assert after.high > before.high * 1.5 and served >= 1


def test_mse_range_clips_what_silu_flattens():
    """A pre-activation read through SiLU: values below about -5 all come out near 0, so the
    range drops them; read as is (identity), it keeps far more of the negative side."""
    from onnxsmith.passes.quantize.range_search import mse_range

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 2, 200_000), rng.uniform(-30, 0, 20_000)])
    hist, _ = np.histogram(values, bins=2048, range=(values.min(), values.max()))
    silu = lambda x: x / (1 + np.exp(-x))  # noqa: E731
    lo_silu, hi_silu = mse_range(hist.astype(float), values.min(), values.max(), silu)
    lo_id, hi_id = mse_range(hist.astype(float), values.min(), values.max(), None)
    assert -9.0 < lo_silu < -3.0 and lo_id < 2 * lo_silu
    assert hi_silu > 5.0 and hi_id > 5.0


def test_mse_by_sign_keeps_uint8_where_the_negative_side_is_flattened_and_int8_where_it_is_not():
    """Zero point 0 in either type: a hardswish input whose negative values are all below -3
    (where hardswish is 0) keeps all 256 levels for its positive side as uint8 [0, hi]; a
    signed tensor read as is goes symmetric int8."""
    from onnxsmith.passes.quantize.range_search import mse_range

    rng = np.random.default_rng(0)
    skewed = np.concatenate([np.abs(rng.normal(3.0, 1.5, 180_000)), rng.uniform(-30.0, -3.0, 20_000)])
    hist, _ = np.histogram(skewed, bins=2048, range=(skewed.min(), skewed.max()))
    def hardswish(x):
        return x * np.clip(x + 3, 0, 6) / 6

    lo, hi = mse_range(hist.astype(float), skewed.min(), skewed.max(), hardswish, by_sign=True)
    assert lo == 0.0 and hi > 5.0
    assert mse_range(hist.astype(float), skewed.min(), skewed.max(), None, by_sign=True)[0] < -5.0  # read as is
    signed = rng.normal(0.0, 1.0, 200_000)
    hist, _ = np.histogram(signed, bins=2048, range=(signed.min(), signed.max()))
    lo, hi = mse_range(hist.astype(float), signed.min(), signed.max(), None, by_sign=True)
    assert lo == -hi and 2.0 < hi < 6.0


def test_reader_functions_find_silu_and_stop_at_other_inputs():
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from onnxsmith.passes.quantize.range_search import read_value, reader_functions

    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"]),  # SiLU
        helper.make_node("Add", ["y", "w"], ["z"]),  # a residual: w comes from elsewhere
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "w")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    functions = reader_functions(model, ["x", "y"])
    x = np.linspace(-8, 8, 33)
    np.testing.assert_allclose(functions["x"](x), x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)
    assert "y" not in functions  # its reader also takes w: no function of y alone
    assert read_value(model.graph.inputs[0]).name == "y"


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_clipping_methods_ignore_rare_outliers(method):
    """|x| ~ half-normal plus 2 values at 40 sigma among 2M: the threshold stays near the bulk."""
    from onnxsmith.passes.quantize.calibration import BINS, _threshold

    values = np.abs(np.random.default_rng(0).standard_normal(2_000_000))
    values[:2] = 40.0
    hist, _ = np.histogram(values, bins=BINS, range=(0.0, 40.0))
    threshold = _threshold(hist.astype(np.float64), 40.0, method, 99.99)
    assert 2.5 < threshold < 12.0, threshold


def test_mse_ignores_rare_outliers():
    from onnxsmith.passes.quantize.range_search import mse_range

    values = np.random.default_rng(0).standard_normal(2_000_000)
    values[:2] = 40.0
    hist, _ = np.histogram(values, bins=2048, range=(values.min(), 40.0))
    lo, hi = mse_range(hist.astype(float), values.min(), 40.0, None)
    assert 3.0 < hi < 20.0 and -20.0 < lo < -3.0  # the bulk kept, the two outliers at 40 clipped


def test_opset_11_model_is_upgraded_and_valid(tmp_path):
    out, _, record = _quantize("opset11", tmp_path, pipeline="cleanup,quantize{skip_slow=false}")
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    assert any("from opset 11 to 13" in n for n in record.notes)
    assert any(n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute) for n in model.graph.node)


def test_guard_keeps_layers_in_float_to_meet_a_tight_budget(tmp_path):
    # skip_slow=false: every layer int8 whatever its speed on this CPU, so the guard alone decides
    _, unguarded, record_off = _quantize("mlp", tmp_path, pipeline="quantize{guard=false,skip_slow=false}", out_name="off.onnx")
    budget = unguarded.summary.drift / 3
    _, guarded, record = _quantize("mlp", tmp_path, pipeline="quantize{skip_slow=false}", max_drift=budget)
    assert record_off.counts["layers_float"] == 0 and record_off.counts["layers_quantized"] == 2
    assert record.counts["layers_float"] >= 1
    assert record.counts["layers_quantized"] == 2 - record.counts["layers_float"]
    assert guarded.summary.drift <= budget < unguarded.summary.drift
    kept = [r for r in record.layers if r.get("reason") == "kept in float by the accuracy guard"]
    assert len(kept) == record.counts["layers_float"] and all(r["sensitivity"] >= 0 for r in kept)
    assert any(n.startswith("kept in float: ") and "sensitivity" in n for n in record.notes)


def test_quantize_refuses_without_calibration_data(tmp_path):
    with pytest.raises(DataError, match="pass 'quantize' needs calibration data"):
        _quantize("cnn", tmp_path, calib=False)


# --- the default drift metric ---------------------------------------------------------------


def test_default_drift_judges_scores_in_probability_units_and_features_by_cosine():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (1, 3, 100)).astype(np.float32)
    scores[:, :, 50:] = 0.001  # background: below ACTIVE on both sides, it does not dilute the error
    moved = scores.copy()
    moved[:, :, :50] += 0.02
    assert default_drift([{"p": scores}], [{"p": moved}]) == pytest.approx(0.02, rel=1e-3)
    features = rng.normal(0, 5, (1, 4, 64))
    noisy = features + rng.normal(0, 0.5, features.shape)  # 10% relative error -> ~0.005 (1 - cosine)
    value = default_drift([{"h": features}], [{"h": noisy}])
    assert 0.003 < value < 0.008


def test_default_drift_sees_a_broken_score_channel_beside_large_coordinates():
    """A detector's output [1, 4 + classes, anchors]: box coordinates of hundreds of pixels and
    class scores in [0, 1]. Raw SQNR barely moves when the scores break; the drift does."""
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 320, (1, 4, 500))
    scores = rng.uniform(0, 0.02, (1, 3, 500))
    scores[0, 0, :10] = 0.9  # ten detections
    reference = np.concatenate([boxes, scores], axis=1)
    broken = reference.copy()
    broken[0, 4, :10] = 0.2  # every detection drops below a 0.25 threshold
    sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((broken - reference) ** 2))
    assert sqnr > 40  # looks harmless to SQNR
    assert default_drift([{"out": reference}], [{"out": broken}]) > 0.5


# --- a real model ---------------------------------------------------------------------------


@pytest.mark.realmodel
def test_default_int8_recipe_on_yolov8n_keeps_detections_and_runs_integer_kernels(tmp_path):
    """``fuse,quantize{mode=int8}`` (guard on, default budget) on nudenet's YOLOv8n: held-out
    detection F1 >= 0.95 against fp32 (tests/tasks.py's data and metric), integer kernels."""
    import tasks

    source = real_model_or_skip("yolov8n")
    task = tasks.get_task("yolov8n")
    calib = tasks.save_npz(task.calibration(16), tmp_path / "calib.npz")
    recipe = validate_recipe({"passes": parse_pipeline("fuse,quantize{mode=int8}"), "calibration": {"data": str(calib)}})
    out = tmp_path / "yolov8n.int8.onnx"
    report = optimize(str(source), out, recipe, OptimizeOptions(latency_rounds=0))
    record = report.passes[-1]
    # a good share of the weighted layers int8, each in an integer kernel. How many stay float
    # depends on the CPU: its int8 rounding (VNNI or not) moves the guard's detection F1 over
    # score thresholds 0.15-0.35, and the per-layer timing decides which layers int8 speeds up
    # (on a 2-core AVX-512 VNNI EPYC: 36 of 64 int8 idle, 22 with another process running)
    counts = record.counts
    quantized = counts["layers_quantized"]
    assert quantized >= 0.25 * (quantized + counts["layers_float"] + counts["layers_float_by_rule"])
    assert counts["int8_kernels"] == quantized
    assert record.counts["float_fallbacks"] == 0
    # the per-layer timing is verified end to end; the report's rows agree with the plan kept
    timed_float = [row for row in record.layers if row.get("reason", "").startswith("measured on cpu")]
    end_to_end = [note for note in record.notes if note.startswith("verified end to end on cpu: int8 ")]
    verified = [note for note in record.notes if note.startswith("verified") and note not in end_to_end]
    assert len(end_to_end) == 1  # int8 beat the float model end to end, or it would not be int8
    assert len(verified) == 1 or (not verified and not timed_float)
    if verified and verified[0].endswith("add up"):  # the layers the timing kept float run int8 (or the guard kept them)
        assert not timed_float and counts["layers_admitted_end_to_end"] > 0
    elif verified and verified[0].endswith("kept the timed plan"):
        assert timed_float and "layers_admitted_end_to_end" not in counts
    held_out = task.evaluation(task.max_evaluation)
    reference = [dict(zip(["output0"], r, strict=True)) for r in ort_outputs(source, held_out)]
    got = [dict(zip(["output0"], r, strict=True)) for r in ort_outputs(out, held_out)]
    assert task.score(reference, got, held_out)["f1"] >= 0.95
