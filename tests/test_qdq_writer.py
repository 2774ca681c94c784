"""Our int8 QDQ writer (passes/quantize/qdq_writer.py) against ONNX Runtime's QDQQuantizer.

Parity: on the fixtures, a hand-built graph with the op kinds they lack and a real model, both
writers fed the same ranges give bit-identical outputs in ONNX Runtime (optimizations off and
on) and the same kernels after its optimizations. Robustness: layers ONNX Runtime's quantizer
crashes on or writes unfusable are quantized, or left float with a reason. Arithmetic: scales,
zero points, 7-bit weights and int32 biases on hand-computed examples; per-channel axes."""

from __future__ import annotations

import collections
import logging

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationMethod, QDQQuantizer, QuantType, TensorData, TensorsData

from conftest import FIXTURES, fixture_feeds, real_model_or_skip
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.measure import Measurements
from onnxsmith.passes.quantize.calibration import TensorRange, collect_ranges
from onnxsmith.passes.quantize.int8_plan import default_op_types, plan_int8
from onnxsmith.passes.quantize.qdq import quantize_qdq, upgrade_for_per_channel
from onnxsmith.passes.quantize.qdq_params import IntType, fit_weight_scale, quantize_bias, range_params
from onnxsmith.passes.quantize.qdq_writer import write_qdq
from onnxsmith.passes.quantize.unfuse import unfuse_for_int8
from onnxsmith.registry import create_pass
from onnxsmith.runtime import make_session, run_all, save_runtime_graph
from onnxsmith.sources import load_source

CONFIGS = {
    "uint8-per-channel": {"per_channel": True, "activations": "uint8", "reduce_range": False},
    "uint8-per-channel-7bit": {"per_channel": True, "activations": "uint8", "reduce_range": True},
    "int8-per-tensor": {"per_channel": False, "activations": "int8", "reduce_range": False},
    "int8-per-channel-7bit": {"per_channel": True, "activations": "int8", "reduce_range": True},
}
INTEGER_KERNELS = ("QLinearConv", "QGemm", "MatMulIntegerToFloat", "QLinearMatMul")
RNG = np.random.default_rng(0)


def _ort_qdq(model: ir.Model, ranges: dict[str, TensorRange], *, op_types, exclude, per_channel, activations,
             reduce_range=False, float_output_ops=(), weights="int8") -> ir.Model:
    """The oracle: ONNX Runtime's QDQQuantizer, called as passes/quantize/qdq.py used to."""
    tensors = TensorsData(CalibrationMethod.MinMax, {n: TensorData(lowest=np.float32(r.low), highest=np.float32(r.high))
                                                     for n, r in ranges.items()})
    quantizer = QDQQuantizer(
        onnx.shape_inference.infer_shapes(ir.to_proto(model)), per_channel, reduce_range,
        QuantType.QInt8 if weights == "int8" else QuantType.QUInt8,
        QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8, tensors, None, list(exclude), list(op_types),
        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True,
                       "OpTypesToExcludeOutputQuantization": list(float_output_ops)},
    )
    quantized = ir.from_proto(quantizer.quantize_model())
    common_passes.TopologicalSortPass()(quantized)
    return quantized


def _runtime_ops(model: ir.Model, tmp_path) -> collections.Counter:
    """Op types of the graph ONNX Runtime CPU runs after its optimizations (QDQ fusions included)."""
    target = tmp_path / f"optimized-{id(model)}.onnx"
    save_runtime_graph(model, target, providers=["CPUExecutionProvider"], level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    return collections.Counter(n.op_type for n in onnx.load(str(target)).graph.node)


def _assert_same(ours: ir.Model, theirs: ir.Model, feeds: list[dict[str, np.ndarray]], tmp_path) -> collections.Counter:
    """Same Q/DQ graph, same kernels after ONNX Runtime's optimizations, bit-identical outputs."""
    assert collections.Counter(n.op_type for n in ours.graph) == collections.Counter(n.op_type for n in theirs.graph)
    kernels = _runtime_ops(ours, tmp_path)
    assert kernels == _runtime_ops(theirs, tmp_path)
    for optimize in (False, True):
        expected = run_all(make_session(theirs, optimize=optimize), feeds)
        got = run_all(make_session(ours, optimize=optimize), feeds)
        for e, g in zip(expected, got, strict=True):
            assert e.keys() == g.keys()
            for name in e:
                np.testing.assert_array_equal(g[name], e[name], err_msg=f"{name}, optimize={optimize}")
    return kernels


def _planned(model: ir.Model, feeds, op_types: list[str], **rules) -> tuple[dict[str, TensorRange], dict]:
    """Ranges and write options as int8.py derives them (min/max calibration)."""
    plan = plan_int8(model, op_types, **rules)
    ranges = collect_ranges(Measurements(), model, plan.tensors, feeds, method="minmax")
    return ranges, {"op_types": op_types, "exclude": plan.float_layers, "float_output_ops": plan.float_output_ops}


def _model(nodes, inputs, outputs, initializers: dict[str, np.ndarray], opset: int = 17) -> ir.Model:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8))


def _normal(*shape: int, scale: float = 0.5) -> np.ndarray:
    return RNG.normal(0, scale, shape).astype(np.float32)


def _node(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


def _const(value: ir.Value) -> np.ndarray:
    return value.const_value.numpy()


# --- parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", ["cnn", "mlp", "transformer", "opset11"])
def test_fixtures_match_onnx_runtime_quantizer(name, config, tmp_path):
    model = create_pass("cleanup").run(load_source(str(FIXTURES / f"{name}.onnx")).ir, Context()).model
    model, _ = upgrade_for_per_channel(model)
    feeds = fixture_feeds(name, count=4)
    ranges, options = _planned(model, feeds, default_op_types(None), heads=False, min_intensity=0.0)
    ours = write_qdq(model, ranges, **options, **CONFIGS[config])
    assert ours.skipped == {}
    kernels = _assert_same(ours.model, _ort_qdq(model, ranges, **options, **CONFIGS[config]), feeds, tmp_path)
    assert sum(kernels[k] for k in INTEGER_KERNELS) >= 2, kernels


def _pipeline_model() -> tuple[ir.Model, list[dict[str, np.ndarray]]]:
    """What the fixtures lack: a Relu folded into a Conv, a shared-scale MaxPool and Resize, a
    ConvTranspose, a Clip with bound inputs, a graph output also read by a Reshape, a Gemm
    without transB, and biases so large that the weight scales must grow (one channel of two)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["a1"], name="relu1"),
        helper.make_node("MaxPool", ["a1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ConvTranspose", ["p1", "wt", "bt"], ["t1"], name="deconv", strides=[2, 2]),
        helper.make_node("Clip", ["t1", "lo", "hi"], ["c1"], name="clip"),
        helper.make_node("Resize", ["c1", "", "scales"], ["r1"], name="resize", mode="nearest"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y2"], name="conv2"),
        helper.make_node("Reshape", ["y2", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["out"], name="gemm"),
    ]
    weights = {
        "w1": _normal(8, 4, 3, 3), "b1": _normal(8), "wt": _normal(8, 6, 2, 2), "bt": _normal(6),
        "lo": np.float32(0.0), "hi": np.float32(1.5), "scales": np.array([1, 1, 2, 2], np.float32),
        "w2": _normal(4, 6, 1, 1, scale=0.01), "b2": np.array([3e5, 0.1, -0.2, -1e5], np.float32),
        "flat": np.array([1, -1], np.int64), "w3": _normal(4 * 16 * 16, 10, scale=0.05), "b3": _normal(10),
    }
    model = _model(nodes, [("x", [1, 4, 8, 8])], [("y2", [1, 4, 16, 16]), ("out", [1, 10])], weights)
    return model, [{"x": _normal(1, 4, 8, 8, scale=1.0)} for _ in range(3)]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_op_kind_matches_onnx_runtime_quantizer(config, tmp_path):
    model, feeds = _pipeline_model()
    ranges, options = _planned(model, feeds, default_op_types(None), heads=False, min_intensity=0.0)
    for name in ("p1", "f"):  # outputs of shared-scale ops: their own ranges must not be used
        ranges[name] = TensorRange(ranges[name].low * 3 - 1, ranges[name].high * 3)
    ours = write_qdq(model, ranges, **options, **CONFIGS[config])
    assert ours.skipped == {}
    kernels = _assert_same(ours.model, _ort_qdq(model, ranges, **options, **CONFIGS[config]), feeds, tmp_path)
    assert kernels["QLinearConv"] >= 1 and kernels["QGemm"] == 1  # int8 x int8 leaves one Conv unfused, in both
    scale = _const(_node(ours.model, "conv2").inputs[1].producer().inputs[1])
    plain = np.abs(_const(model.graph.initializers["w2"])).max(axis=(1, 2, 3)) / (64 if CONFIGS[config]["reduce_range"] else 127)
    if CONFIGS[config]["per_channel"]:  # channels 0 and 3 carry the large biases
        assert np.all(scale[[0, 3]] > plain[[0, 3]] * 1.01) and np.allclose(scale[[1, 2]], plain[[1, 2]], rtol=1e-6)
    else:
        assert scale > plain.max() * 1.01


def test_bias_fits_the_scale_its_input_really_has():
    """conv2 reads Resize's output, which shares the scale of Resize's input. When that output
    also has a range of its own, ONNX Runtime fits conv2's weight scale to the bias with the
    own range's scale, then quantizes the bias with the shared one: the bias overflows int32
    and is clipped (conv2's channel 0, bias 3e5, comes out near 8e4). We fit to the shared scale."""
    model, feeds = _pipeline_model()
    ranges, options = _planned(model, feeds, default_op_types(None), heads=False, min_intensity=0.0)
    ranges["r1"] = TensorRange(ranges["r1"].low * 3 - 1, ranges["r1"].high * 3)
    config = CONFIGS["uint8-per-channel"]
    expected = run_all(make_session(model, optimize=False), feeds)
    ours = run_all(make_session(write_qdq(model, ranges, **options, **config).model), feeds)
    theirs = run_all(make_session(_ort_qdq(model, ranges, **options, **config)), feeds)
    for e, o, t in zip(expected, ours, theirs, strict=True):
        channel = e["y2"][:, 0]
        assert np.abs(o["y2"][:, 0] - channel).max() < 0.01 * np.abs(channel).max()  # y2's own Q: 1/255 of its range
        assert np.abs(t["y2"][:, 0] - channel).max() > 0.5 * np.abs(channel).max()


@pytest.mark.realmodel
def test_yolov8n_matches_onnx_runtime_quantizer(tmp_path):
    """nudenet's YOLOv8n as int8.py sees it after ``fuse`` (FusedConv split back), every
    Conv planned (speed rule and heads off), CPU op set, with real photographs."""
    from realmodels import photos, yolo_input

    from onnxsmith.backend import get_backend

    model = create_pass("fuse").run(load_source(str(real_model_or_skip("yolov8n"))).ir, Context(backend=get_backend("cpu"))).model
    unfuse_for_int8(model)
    name = model.graph.inputs[0].name
    feeds = [{name: yolo_input(image)} for image in list(photos().values())[:3]]
    ranges, options = _planned(model, feeds, default_op_types(get_backend("cpu").capabilities.int8_ops),
                               heads=False, min_intensity=0.0)
    for config in ("uint8-per-channel", "int8-per-tensor"):
        ours = write_qdq(model, ranges, **options, **CONFIGS[config])
        assert ours.skipped == {}
        kernels = _assert_same(ours.model, _ort_qdq(model, ranges, **options, **CONFIGS[config]), feeds, tmp_path)
        assert kernels["QLinearConv"] >= 40, kernels


# --- robustness ---------------------------------------------------------------------------


def _gemm(bias: np.ndarray, **attributes) -> ir.Model:
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transB=1, **attributes)
    return _model([node], [("x", [4, 32])], [("y", [4, 16])], {"w": _normal(16, 32), "b": bias})


@pytest.mark.parametrize("shape", [(1, 16), ()], ids=["1xN", "scalar"])
def test_gemm_with_a_broadcast_bias_is_quantized_where_onnx_runtime_raises(shape, tmp_path):
    """Keras exports Dense as Gemm with C of shape [1, N] (or a scalar); ONNX Runtime's
    quantizer raises on it per channel (``The truth value of an array ... is ambiguous``,
    ``too many indices``). We quantize it, with beta x C as a bias of one value per column."""
    bias = RNG.normal(0, 2, shape).astype(np.float32)
    model = _gemm(bias, beta=0.5)
    x = _normal(4, 32, scale=1.0)
    ranges = {"x": TensorRange(float(x.min()), float(x.max()))}
    options = {"op_types": ["Gemm"], "exclude": [], "per_channel": True, "activations": "uint8", "float_output_ops": ["Gemm"]}
    with pytest.raises((ValueError, IndexError)):
        _ort_qdq(model, ranges, **options)
    result = write_qdq(model, ranges, **options)
    assert result.skipped == {} and _runtime_ops(result.model, tmp_path)["QGemm"] == 1
    expected = make_session(model, optimize=False).run(None, {"x": x})[0]
    got = make_session(result.model).run(None, {"x": x})[0]
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()  # beta kept: dropping it errs by |C|/2


def _two_convs(bias_input: list[str], initializers: dict[str, np.ndarray], inputs=(), weight: str = "w") -> ir.Model:
    """conv_ok -> Relu -> conv (whose weight or bias is the one under test)."""
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["h"], name="conv_ok", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Conv", ["a", weight, *bias_input], ["y"], name="conv", pads=[1, 1, 1, 1])]
    weights = {"w0": _normal(8, 4, 3, 3), "b0": _normal(8), **({"w": _normal(8, 8, 3, 3)} if weight == "w" else {}),
               **initializers}
    return _model(nodes, [("x", [1, 4, 8, 8]), *inputs], [("y", [1, 8, 8, 8])], weights)


RANGES = {"x": TensorRange(-3.0, 3.0), "h": TensorRange(-4.0, 4.0), "a": TensorRange(0.0, 4.0), "y": TensorRange(-9.0, 9.0)}
CONV_OPTIONS = {"op_types": ["Conv", "Relu"], "exclude": [], "per_channel": True, "activations": "uint8"}


def _left_float(model: ir.Model, name: str) -> bool:
    node = _node(model, name)
    return node.op_type == "Conv" and node.inputs[1].producer() is None and node.inputs[1].const_value is not None


def test_conv_with_a_broadcast_bias_stays_float_with_the_reason():
    """A Conv bias input of the broadcast shape [1, C, 1, 1] a bias Add has: ONNX Runtime's
    quantizer raises in _adjust_weight_scale_for_int32_bias (its Conv kernel rejects such a
    bias too, so the float model does not run there either). We quantize the layer before it
    and leave this one float, saying why."""
    model = _two_convs(["b"], {"b": _normal(1, 8, 1, 1)})
    with pytest.raises(ValueError, match="truth value of an array"):
        _ort_qdq(model, RANGES, **CONV_OPTIONS)
    result = write_qdq(model, RANGES, **CONV_OPTIONS)
    assert result.skipped == {"conv": "its bias b has shape [1, 8, 1, 1], not [8] (one per output channel)"}
    assert _left_float(result.model, "conv") and not _left_float(result.model, "conv_ok")
    onnx.checker.check_model(ir.to_proto(result.model))


def test_conv_then_a_keras_bias_add_matches_onnx_runtime(tmp_path):
    """The same bias as a separate Add [1, C, 1, 1] after the Conv is handled by both
    writers alike (ONNX Runtime's quantizer does not fail on it): the Add stays float."""
    add = helper.make_node("Add", ["y0", "b"], ["y"], name="bias_add")
    conv = helper.make_node("Conv", ["x", "w"], ["y0"], name="conv", pads=[1, 1, 1, 1])
    model = _model([conv, add], [("x", [1, 4, 8, 8])], [("y", [1, 8, 8, 8])], {"w": _normal(8, 4, 3, 3), "b": _normal(1, 8, 1, 1)})
    feeds = [{"x": _normal(1, 4, 8, 8, scale=1.0)} for _ in range(2)]
    ranges, options = _planned(model, feeds, ["Conv"], heads=False, min_intensity=0.0)
    result = write_qdq(model, ranges, **options, **CONFIGS["uint8-per-channel"])
    kernels = _assert_same(result.model, _ort_qdq(model, ranges, **options, **CONFIGS["uint8-per-channel"]), feeds, tmp_path)
    assert result.skipped == {} and kernels["QLinearConv"] == 1 and kernels["Add"] == 1


def test_conv_with_a_computed_bias_stays_float_where_onnx_runtime_runs_it_dequantized(tmp_path):
    """A bias fed by the graph: ONNX Runtime's quantizer writes DQ -> Conv -> Q anyway, which its
    runtime cannot fuse (a float Conv plus rounding, slower than float). We leave it float."""
    model = _two_convs(["b"], {}, inputs=[("b", [8])])
    feeds = [{"x": _normal(1, 4, 8, 8, scale=1.0), "b": _normal(8)} for _ in range(3)]
    ranges, _ = _planned(model, feeds, ["Conv", "Relu"], heads=False, min_intensity=0.0)
    theirs = _runtime_ops(_ort_qdq(model, ranges, **CONV_OPTIONS), tmp_path)
    assert theirs["Conv"] == 1 and theirs["QLinearConv"] == 1 and theirs["DequantizeLinear"] >= 2
    result = write_qdq(model, ranges, **CONV_OPTIONS)
    assert result.skipped == {"conv": "its bias b is not a constant"}
    assert _left_float(result.model, "conv") and _runtime_ops(result.model, tmp_path)["QLinearConv"] == 1
    expected = make_session(model, optimize=False).run(None, feeds[0])[0]
    got = make_session(result.model).run(None, feeds[0])[0]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("case, reason", [
    ("no range", "no calibrated range for its output y"),
    ("inf bias", "its bias b does not fit int32 at scale input scale x weight scale"),
    ("weight fed by the graph", "its weight w_in is not a constant"),
])
def test_layers_that_cannot_be_written_stay_float_with_the_reason(case, reason):
    ranges, bias = dict(RANGES), _normal(8)
    if case == "no range":
        del ranges["y"]
    elif case == "inf bias":
        bias[3] = np.inf
    if case == "weight fed by the graph":
        model = _two_convs(["b"], {"b": bias}, inputs=[("w_in", [8, 8, 3, 3])], weight="w_in")
    else:
        model = _two_convs(["b"], {"b": bias})
    result = write_qdq(model, ranges, **CONV_OPTIONS)
    assert result.skipped == {"conv": reason}
    conv = _node(result.model, "conv")
    assert conv.inputs[1].producer() is None and conv.inputs[2].producer() is None  # float weight and bias
    assert not _left_float(result.model, "conv_ok")


def test_missing_range_raises_in_onnx_runtime_quantizer_only():
    ranges = {k: v for k, v in RANGES.items() if k != "y"}
    model = _two_convs(["b"], {"b": _normal(8)})
    with pytest.raises(ValueError, match="Quantization parameters are not specified"):
        _ort_qdq(model, ranges, **CONV_OPTIONS)
    assert "conv" in write_qdq(model, ranges, **CONV_OPTIONS).skipped


def test_gemm_with_alpha_stays_float(tmp_path):
    """ONNX Runtime does not fuse a Gemm with alpha != 1 into QGemm: quantized it runs dequantized."""
    model = _gemm(_normal(16), alpha=2.0)
    ranges = {"x": TensorRange(-3.0, 3.0)}
    options = {"op_types": ["Gemm"], "exclude": [], "per_channel": True, "activations": "uint8", "float_output_ops": ["Gemm"]}
    assert _runtime_ops(_ort_qdq(model, ranges, **options), tmp_path)["Gemm"] == 1  # theirs: float Gemm after DQs
    result = write_qdq(model, ranges, **options)
    assert list(result.skipped) == ["gemm"] and "alpha" in result.skipped["gemm"]
    assert [n.op_type for n in result.model.graph] == ["Gemm"]


# --- arithmetic ---------------------------------------------------------------------------


def _one_by_one_conv(weight: list[float], bias: list[float]) -> ir.Model:
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")
    w = np.array(weight, np.float32).reshape(len(weight), 1, 1, 1)
    return _model([conv], [("x", [1, 1, 2, 2])], [("y", [1, len(weight), 2, 2])], {"w": w, "b": np.array(bias, np.float32)})


def _written(model: ir.Model, **options) -> dict[str, np.ndarray]:
    """The numbers the writer gave conv: input and weight scale/zero point, int weights and bias."""
    options = {"op_types": ["Conv"], "exclude": [], "per_channel": True, "activations": "uint8", **options}
    ranges = {"x": TensorRange(-1.0, 3.0), "y": TensorRange(-2.0, 2.0)}
    result = write_qdq(model, ranges, **options)
    conv = _node(result.model, "conv")
    x_dq, w_dq, b_dq = (v.producer() for v in conv.inputs)
    return {"x_scale": _const(x_dq.inputs[1]), "x_zero": _const(x_dq.inputs[2]), "w": _const(w_dq.inputs[0]),
            "w_scale": _const(w_dq.inputs[1]), "w_zero": _const(w_dq.inputs[2]), "b": _const(b_dq.inputs[0]),
            "b_scale": _const(b_dq.inputs[1]), "w_axis": w_dq.attributes.get_int("axis", -1)}


def test_uint8_activations_are_asymmetric_and_int8_symmetric():
    model = _one_by_one_conv([0.5, -0.25], [0.1, -0.2])
    uint8 = _written(model)
    assert uint8["x_scale"] == np.float32(4 / 255) and uint8["x_zero"].dtype == np.uint8 and uint8["x_zero"] == 64  # 63.75
    int8 = _written(model, activations="int8")
    assert int8["x_scale"] == np.float32(6 / 254) and int8["x_zero"].dtype == np.int8 and int8["x_zero"] == 0
    widened = range_params(2.0, 4.0, IntType(np.uint8, symmetric=False))  # 0 is always in the range
    assert widened.scale == np.float32(4 / 255) and widened.zero_point == 0
    by_sign = _written(model, activations="symmetric")  # x reaches -1: symmetric int8, as "int8" writes it
    assert by_sign["x_scale"] == int8["x_scale"] and by_sign["x_zero"].dtype == np.int8 and by_sign["x_zero"] == 0


def test_symmetric_activations_are_uint8_where_never_negative_and_clip_as_relu_did():
    """OpenVINO's scheme: zero point 0 everywhere, uint8 for a range that starts at 0, so a
    Relu or Clip(0, hi) still folds into the Q before it; ONNX Runtime's reference run of the
    QDQ graph stays within a few steps of the float model."""
    model, feeds = _pipeline_model()
    ranges, options = _planned(model, feeds, default_op_types(None), heads=False, min_intensity=0.0)
    written = write_qdq(model, ranges, activations="symmetric", per_channel=True, **options).model
    ops = [n.op_type for n in written.graph]
    assert "Relu" not in ops and "Clip" not in ops
    zero_points = {n.inputs[0].name: _const(n.inputs[2]) for n in written.graph if n.op_type == "QuantizeLinear"}
    assert all(z == 0 for z in zero_points.values())
    assert zero_points["a1_QuantizeLinear_Input"].dtype == np.uint8  # Relu's range: unsigned, clips at 0
    assert zero_points["x"].dtype == np.int8  # the input reaches below 0
    expected = run_all(make_session(model, optimize=False), feeds)
    got = run_all(make_session(written, optimize=False), feeds)
    for e, g in zip(expected, got, strict=True):
        for name in e:
            assert np.abs(g[name] - e[name]).max() <= 0.05 * np.abs(e[name]).max(), name


def test_weights_are_symmetric_int8_with_7_bits_on_request_and_int32_biases():
    model = _one_by_one_conv([0.5, -0.25], [0.1, -0.2])
    per_channel = _written(model)
    assert per_channel["w"].tolist() == [[[[127]]], [[[-127]]]] and per_channel["w_axis"] == 0
    np.testing.assert_array_equal(per_channel["w_scale"], np.float32([0.5 / 127, 0.25 / 127]))
    assert per_channel["w_zero"].dtype == np.int8 and not per_channel["w_zero"].any()
    per_tensor = _written(model, per_channel=False)
    assert per_tensor["w"].ravel().tolist() == [127, -64]  # -63.5 rounds half to even
    assert per_tensor["w_scale"] == np.float32(0.5 / 127)
    seven_bits = _written(model, per_channel=False, reduce_range=True)
    assert seven_bits["w"].ravel().tolist() == [64, -32] and seven_bits["w_scale"] == np.float32(0.5 / 64)
    bias_scale = np.float32(4 / 255) * np.float32([0.5 / 127, 0.25 / 127])
    np.testing.assert_array_equal(per_channel["b_scale"], bias_scale)
    assert per_channel["b"].dtype == np.int32
    bias = np.array([0.1, -0.2], np.float32).astype(np.float64)
    assert per_channel["b"].tolist() == np.round(bias / bias_scale.astype(np.float64)).tolist()


def test_a_bias_too_large_for_int32_raises_the_weight_scale():
    """|b| / (x_scale * w_scale) = 1e6 / (4/255 * 0.5/127) ~ 1.6e10 > 2^31: the weight scale
    grows to 1.0001 * 2|b| / (2^32 - 2) / x_scale, and the weight is quantized with it."""
    written = _written(_one_by_one_conv([0.5, -0.25], [1e6, 0.1]))
    needed = 1.0001 * 2e6 / (2.0**32 - 2) / np.float64(np.float32(4 / 255))
    np.testing.assert_allclose(written["w_scale"][0], needed, rtol=1e-6)
    assert written["w_scale"][1] == np.float32(0.25 / 127)
    assert written["w"].ravel().tolist() == [round(0.5 / needed), -127]
    assert 0.999 * 2**31 < written["b"][0] < 2**31
    assert quantize_bias(np.array([1e6]), np.float32(4 / 255), np.float32([0.5 / 127])) is None  # before fitting
    fitted = fit_weight_scale(np.array([1e6], np.float32), np.float32(4 / 255),
                              range_params(-0.5, 0.5, IntType(np.int8, symmetric=True)))
    assert quantize_bias(np.array([1e6]), np.float32(4 / 255), fitted.scale) is not None


@pytest.mark.parametrize("op, shape, attributes, axis", [
    ("Conv", (6, 3, 3, 3), {}, 0),
    ("ConvTranspose", (3, 6, 2, 2), {}, 1),
    ("Gemm", (6, 3), {"transB": 1}, 0),
    ("Gemm", (3, 6), {}, 1),
    ("MatMul", (3, 6), {}, 1),
])
def test_per_channel_scales_are_per_output_channel(op, shape, attributes, axis):
    weight = _normal(*shape) * np.float32(10.0) ** np.arange(6).reshape([6 if i == axis else 1 for i in range(len(shape))])
    x_shape = [1, 3, 4, 4] if op.startswith("Conv") else [2, 3]
    node = helper.make_node(op, ["x", "w"], ["y"], name="layer", **attributes)
    model = _model([node], [("x", x_shape)], [("y", None)], {"w": weight.astype(np.float32)})
    ranges = {"x": TensorRange(-1.0, 1.0), "y": TensorRange(-1.0, 1.0)}
    result = write_qdq(model, ranges, op_types=[op], exclude=[], per_channel=True, activations="uint8")
    dq = _node(result.model, "layer").inputs[1].producer()
    assert dq.op_type == "DequantizeLinear" and dq.attributes.get_int("axis") == axis
    others = tuple(i for i in range(len(shape)) if i != axis)
    np.testing.assert_allclose(_const(dq.inputs[1]), np.abs(weight).max(axis=others) / 127, rtol=1e-6)


# --- graph shape --------------------------------------------------------------------------


def test_one_pair_per_tensor_removable_relu_shared_scales_and_output_names():
    model, _ = _pipeline_model()
    ranges = {name: TensorRange(-2.0, 2.0) for name in ("x", "y1", "t1", "r1", "y2", "f")}
    ranges.update(a1=TensorRange(0.0, 2.0), c1=TensorRange(0.0, 1.5))
    options = {"op_types": default_op_types(None), "exclude": [], "per_channel": True, "float_output_ops": ["Gemm"]}
    asymmetric = write_qdq(model, ranges, activations="uint8", **options).model
    ops = [n.op_type for n in asymmetric.graph]
    assert "Relu" not in ops and "Clip" not in ops  # folded into the Q after conv1 / deconv
    # the Relu's output name goes to what holds its (clipped) values: the DequantizeLinear after
    # conv1, not conv1's own output, so tensors compared by name are like with like
    conv1_out = _node(asymmetric, "conv1").outputs[0]
    assert conv1_out.name == "a1_QuantizeLinear_Input"
    (reader,) = [use.node for use in conv1_out.uses()]
    (dequantize,) = [use.node for use in reader.outputs[0].uses()]
    assert dequantize.op_type == "DequantizeLinear" and dequantize.outputs[0].name == "a1"
    pool = _node(asymmetric, "pool")
    assert pool.inputs[0].producer().inputs[1] is next(iter(pool.outputs[0].uses())).node.inputs[1]  # same scale
    assert [v.name for v in asymmetric.graph.outputs] == ["y2", "out"]
    y2 = asymmetric.graph.outputs[0]
    assert y2.producer().op_type == "DequantizeLinear" and _node(asymmetric, "flatten").inputs[0] is y2
    assert ops.count("QuantizeLinear") == 7  # x, a1, p1, c1, r1, y2, f: one each, whoever reads them
    assert not {"w1", "b1", "lo", "hi"} & set(asymmetric.graph.initializers)  # nothing reads them any more
    symmetric = write_qdq(model, ranges, activations="int8", **options).model
    assert [n.op_type for n in symmetric.graph].count("Relu") == 1  # int8 does not clip at 0: kept


def test_the_model_given_is_not_changed_and_quantize_qdq_logs_what_stays_float(caplog):
    model = _two_convs(["b"], {"b": _normal(1, 8, 1, 1)})
    before = ir.to_proto(model).SerializeToString()
    with caplog.at_level(logging.INFO, logger="onnxsmith.passes.quantize.qdq"):
        result = quantize_qdq(model, RANGES, **CONV_OPTIONS)
    assert ir.to_proto(model).SerializeToString() == before
    assert any(n.op_type == "DequantizeLinear" for n in result.model.graph)
    assert "conv stays float: its bias b has shape [1, 8, 1, 1]" in caplog.text
    assert result.skipped["conv"].startswith("its bias b has shape [1, 8, 1, 1]")


def test_the_int8_pass_reports_a_layer_the_writer_left_float_and_why():
    """A Conv whose bias is a graph input runs in float, and the pass says so per layer."""
    nodes = [helper.make_node("Conv", ["x", "w0", "b"], ["h"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Conv", ["a", "w1", "b1"], ["h1"], name="conv_ok", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "w2"], ["y"], name="head", pads=[1, 1, 1, 1])]
    weights = {"w0": _normal(8, 4, 3, 3), "w1": _normal(8, 8, 3, 3), "b1": _normal(8), "w2": _normal(8, 8, 3, 3)}
    model = _model(nodes, [("x", [1, 4, 8, 8]), ("b", [8])], [("y", [1, 8, 8, 8])], weights)
    calibration = Dataset({"x": RNG.standard_normal((4, 1, 4, 8, 8)).astype(np.float32),
                           "b": RNG.standard_normal((4, 8)).astype(np.float32)}, "test")
    ctx = Context(calibration=calibration, evaluation=calibration, measure=Measurements())
    result = create_pass("quantize", {"mode": "int8", "guard": "false", "skip_slow": "false"}).run(model, ctx)
    rows = {row["layer"]: row for row in result.layers}
    assert rows["conv_ok"]["precision"] == "int8"
    assert rows["conv"]["precision"] == "fp32"
    assert rows["conv"]["reason"] == "int8 cannot be written for it: its bias b is not a constant"
    assert "left float, int8 cannot be written for it: conv: its bias b is not a constant" in result.notes
