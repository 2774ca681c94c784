"""HardSwish / HardSigmoid between int8 tensors as QLinearAdd + QLinearMul (passes/quantize/hard_activations.py).

Each case is a tiny QDQ graph ``x -> Q -> DQ -> act -> Q -> DQ -> y``: the rewrite must leave
ONNX Runtime no float HardSigmoid or Mul to run, and its output must stay within one output
step of the exact activation of the same int8 input (the HardSigmoid's own 255 steps are the
only rounding it adds)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.passes.quantize.calibration import TensorRange
from onnxsmith.passes.quantize.hard_activations import rewrite_hard_activations
from onnxsmith.passes.quantize.qdq_writer import write_qdq
from onnxsmith.registry import create_pass
from onnxsmith.runtime import make_session, run_all, save_runtime_graph

X_RANGE = (-5.0, 7.0)
CASES = {  # op, attributes, the exact float function, its output range over X_RANGE
    "hardswish": ("HardSwish", {}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1), (-0.375, 7.0)),
    "hardsigmoid": ("HardSigmoid", {"alpha": 0.25, "beta": -0.25}, lambda x: np.clip(0.25 * x - 0.25, 0, 1), (0.0, 1.0)),
    "hardsigmoid-no-shift": ("HardSigmoid", {"alpha": 0.5, "beta": 0.0}, lambda x: np.clip(0.5 * x, 0, 1), (0.0, 1.0)),
}


def _qdq_graph(op: str, attributes: dict, out_range: tuple[float, float], dtype: np.dtype) -> ir.Model:
    info = np.iinfo(dtype)

    def params(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
        scale = (high - low) / (info.max - info.min)
        return np.array(scale, np.float32), np.array(round(info.min - low / scale), dtype)

    sx, zx = params(*X_RANGE)
    sy, zy = params(*out_range)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dq_x"),
        helper.make_node(op, ["xd"], ["a"], name="act", **attributes),
        helper.make_node("QuantizeLinear", ["a", "sy", "zy"], ["aq"], name="q_a"),
        helper.make_node("DequantizeLinear", ["aq", "sy", "zy"], ["y"], name="dq_a"),
    ]
    inits = [numpy_helper.from_array(v, n) for n, v in {"sx": sx, "zx": zx, "sy": sy, "zy": zy}.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return ir.from_proto(model)


def _runtime_ops(model: ir.Model, tmp_path) -> collections.Counter:
    target = tmp_path / f"optimized-{id(model)}.onnx"
    save_runtime_graph(model, target, providers=["CPUExecutionProvider"], level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    return collections.Counter(n.op_type for n in onnx.load(str(target)).graph.node)


@pytest.mark.parametrize("case", list(CASES))
def test_hard_activation_between_uint8_tensors_runs_in_integer_kernels_within_one_step(case, tmp_path):
    op, attributes, exact, out_range = CASES[case]
    model = _qdq_graph(op, attributes, out_range, np.dtype(np.uint8))
    before = model.clone()
    assert rewrite_hard_activations(model.graph) == 1
    assert op not in {n.op_type for n in model.graph}
    assert next(n for n in model.graph if n.name == "q_a").inputs[0].name == "a"  # the tensor keeps its name

    kernels = _runtime_ops(model, tmp_path)
    assert kernels["HardSigmoid"] == kernels["HardSwish"] == kernels["Mul"] == kernels["Add"] == 0, kernels
    assert kernels["QLinearMul"] == (op == "HardSwish")
    assert kernels["QLinearAdd"] == (attributes.get("beta", 0.5) != 0)

    x = np.linspace(X_RANGE[0] - 1, X_RANGE[1] + 1, 1024, dtype=np.float32).reshape(1, 4, 16, 16)
    step = float(before.graph.initializers["sy"].const_value.numpy())
    reference = run_all(make_session(before, optimize=False), [{"x": x}])[0]["y"]  # the float activation, quantized
    for optimize in (False, True):
        got = run_all(make_session(model, optimize=optimize), [{"x": x}])[0]["y"]
        assert np.abs(got - reference).max() <= step * 1.001, optimize
        assert np.mean(got == reference) > 0.9, optimize
    # and the reference is what it should be: the exact function of the dequantized input, within half a step
    dequantized = run_all(make_session(_identity(before), optimize=False), [{"x": x}])[0]["xd"]
    inside = (exact(dequantized) >= out_range[0]) & (exact(dequantized) <= out_range[1])
    assert np.abs(reference - exact(dequantized))[inside].max() <= step * 0.501


def _identity(model: ir.Model) -> ir.Model:
    """``model`` with the dequantized input as its output too."""
    proto = ir.to_proto(model)
    proto.graph.output.append(helper.make_tensor_value_info("xd", TensorProto.FLOAT, [1, 4, 16, 16]))
    return ir.from_proto(proto)


def test_a_hard_activation_on_int8_data_or_as_a_graph_output_is_left_alone():
    """int8: ONNX Runtime's S8-to-U8 conversion would split the units, leaving float Add and Mul."""
    on_int8 = _qdq_graph("HardSwish", {}, (-0.375, 7.0), np.dtype(np.int8))
    assert rewrite_hard_activations(on_int8.graph) == 0
    model = _qdq_graph("HardSwish", {}, (-0.375, 7.0), np.dtype(np.uint8))
    proto = ir.to_proto(model)
    proto.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4, 16, 16]))
    as_output = ir.from_proto(proto)
    assert rewrite_hard_activations(as_output.graph) == 0
    assert "HardSwish" in {n.op_type for n in as_output.graph}


def _conv_hardswish_conv() -> ir.Model:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h"], name="hs"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu")]  # so that conv2 is no output head of the int8 plan
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
             "w2": rng.normal(0, 0.3, (4, 8, 1, 1)), "b2": rng.normal(0, 0.1, 4)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def test_the_writer_rewrites_only_when_asked():
    """Conv -> HardSwish -> Conv with both convolutions int8: the HardSwish sits between two int8
    tensors; write_qdq turns it into integer ops with integer_hard_activations only."""
    rng = np.random.default_rng(1)
    model = _conv_hardswish_conv()
    ranges = {"x": TensorRange(-1.0, 1.0), "c1": TensorRange(-4.0, 6.0), "h": TensorRange(-0.375, 6.0),
              "c2": TensorRange(-3.0, 3.0)}
    options = {"op_types": ["Conv"], "exclude": [], "per_channel": True, "activations": "uint8"}
    plain = write_qdq(model, ranges, **options).model
    rewritten = write_qdq(model, ranges, **options, integer_hard_activations=True).model
    assert "HardSwish" in {n.op_type for n in plain.graph}
    assert "HardSwish" not in {n.op_type for n in rewritten.graph}
    assert {"Add", "Mul"} <= {n.op_type for n in rewritten.graph}
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    y_plain = run_all(make_session(plain), [{"x": x}])[0]["y"]
    y_rewritten = run_all(make_session(rewritten), [{"x": x}])[0]["y"]
    assert np.abs(y_plain - y_rewritten).max() <= 3 * 6.0 / 255  # y's step is 6/255; a step of h moves y a little less


@pytest.mark.parametrize("hard_activations", [True, False])
def test_the_int8_pass_on_onnx_runtime_writes_integer_hardswish_unless_told_not_to(hard_activations):
    model = _conv_hardswish_conv()
    x = np.random.default_rng(2).uniform(-1, 1, (16, 1, 3, 8, 8)).astype(np.float32)
    options = {"guard": False, "skip_slow": False, "hard_activations": hard_activations}
    result = create_pass("quantize", options).run(model, Context(backend=get_backend("cpu"), calibration=Dataset({"x": x}, "x.npz")))
    assert result.counts["layers_quantized"] == 2
    assert ("HardSwish" in {n.op_type for n in result.model.graph}) is not hard_activations
    # ONNX Runtime's integer kernels: two QLinearConv, and QLinearAdd + QLinearMul for the HardSwish
    assert result.counts["int8_kernels"] == (4 if hard_activations else 2)
