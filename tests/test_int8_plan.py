"""int8's plan and plumbing: FusedConv split back, float MatMul outputs, attention scores left
float, activations streamed in bounded chunks."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, fixture_feeds
from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.passes.quantize.int8_plan import plan_int8
from onnxsmith.passes.quantize.unfuse import unfuse_for_int8
from onnxsmith.registry import create_pass
from onnxsmith.runtime import make_session, run_all
from onnxsmith.sources import load_source


def _fused_conv_model(activation: str, params: list[float]) -> ir.Model:
    rng = np.random.default_rng(0)
    attrs = {"activation": activation, "pads": [1, 1, 1, 1]}
    if params:
        attrs["activation_params"] = params
    node = helper.make_node("FusedConv", ["x", "w", "b"], ["y"], domain="com.microsoft", name="conv", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(0, 0.5, 8).astype(np.float32), "b")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return ir.from_proto(helper.make_model(graph, opset_imports=opsets, ir_version=8))


@pytest.mark.parametrize("activation, params", [("Relu", []), ("Clip", [0.0, 0.7]), ("HardSigmoid", [0.3, 0.4]),
                                                ("LeakyRelu", [0.2])])
def test_fused_conv_is_split_back_exactly(activation, params):
    model = _fused_conv_model(activation, params)
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 4, 8, 8)).astype(np.float32)} for i in range(3)]
    before = run_all(make_session(model, optimize=False), feeds)
    assert unfuse_for_int8(model) == 1
    assert [n.op_type for n in model.graph] == ["Conv", activation]
    assert [v.name for v in model.graph.outputs] == ["y"]
    onnx.checker.check_model(ir.to_proto(model))
    after = run_all(make_session(model, optimize=False), feeds)
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a["y"], b["y"], rtol=1e-5, atol=1e-6)


def _transformer() -> ir.Model:
    """The tiny BERT fixture with its weights folded (the export transposes them at run time)."""
    return create_pass("cleanup").run(load_source(str(FIXTURES / "transformer.onnx")).ir, Context()).model


def test_plan_leaves_attention_scores_and_matmul_outputs_float():
    model = _transformer()
    plan = plan_int8(model, ["MatMul", "Gemm"], heads=False, min_intensity=0.0)  # hidden 32: too small to pay
    matmuls = [n for n in model.graph if n.op_type == "MatMul"]
    weighted = [n for n in matmuls if n.inputs[1].const_value is not None]
    assert weighted and len(plan.layers) == len(weighted)
    assert sorted(plan.float_layers) == sorted(n.name for n in matmuls if n.inputs[1].const_value is None)
    assert plan.float_layers  # the fixture has attention score MatMuls
    assert not {n.outputs[0].name for n in weighted} & set(plan.tensors)  # MatMul outputs stay float
    assert {n.inputs[0].name for n in weighted} <= set(plan.tensors)


def test_int8_transformer_runs_matmuls_as_integer_kernels_with_float_outputs():
    model = _transformer()
    feeds = fixture_feeds("transformer", count=16)
    data = Dataset({k: np.stack([f[k] for f in feeds]) for k in feeds[0]}, "transformer.npz")
    options = {"guard": False, "skip_slow": False}  # hidden 32 is too small for int8 to pay; quantize it anyway
    result = create_pass("quantize", options).run(model, Context(backend=get_backend("cpu"), calibration=data))
    plan = plan_int8(model, ["MatMul", "Gemm"], min_intensity=0.0)
    assert result.counts["layers_quantized"] == len(plan.layers)
    assert result.counts["int8_kernels"] >= len(plan.layers) and result.counts["float_fallbacks"] == 0
    reference = run_all(make_session(model), feeds)
    got = run_all(make_session(result.model), feeds)
    for r, g in zip(reference, got, strict=True):
        (name,) = r
        a, b = r[name].ravel(), g[name].ravel()
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99


def test_bisection_then_give_back_keeps_only_the_layers_the_budget_needs():
    """Drift adds up the true cost of every quantized layer; the ranking (from a fully quantized
    model) overrates 'c'. Bisection keeps the top 3 in float; giving back finds 'c' harmless."""
    from onnxsmith.passes.quantize.guard import give_back, search_float_layers

    true_cost = {"a": 0.05, "b": 0.04, "c": 0.0, "d": 0.01, "e": 0.005}
    ranked = [("a", 0.9), ("c", 0.8), ("b", 0.7), ("d", 0.1), ("e", 0.05)]
    builds: list[frozenset] = []

    def quantize(kept: list[str]) -> frozenset:
        builds.append(frozenset(kept))
        return frozenset(kept)

    def evaluate(kept: frozenset) -> float:
        return sum(cost for layer, cost in true_cost.items() if layer not in kept)

    budget = 0.02
    found = search_float_layers(ranked, quantize, evaluate, budget)
    assert [name for name, _ in found.kept_float] == ["a", "c", "b"] and found.drift <= budget
    bisection_probes = found.probes
    refined = give_back(found, quantize, evaluate, budget, probes=4)
    assert sorted(name for name, _ in refined.kept_float) == ["a", "b"]
    assert refined.drift == pytest.approx(0.015) and refined.probes == bisection_probes + 3  # one try per kept layer
    assert len(builds) == refined.probes


def _residual_block() -> ir.Model:
    """conv1 -> Relu -> conv2; Add(conv2, conv1's Relu) -> Sigmoid -> conv3 (the output head)."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
             helper.make_node("Sigmoid", ["s"], ["g"], name="sigmoid"),
             helper.make_node("Conv", ["g", "w3"], ["y"], name="head", pads=[1, 1, 1, 1])]
    weights = {"w1": rng.normal(0, 0.3, (16, 8, 3, 3)), "b1": rng.normal(0, 0.1, 16), "w2": rng.normal(0, 0.3, (16, 16, 3, 3)),
               "b2": rng.normal(0, 0.1, 16), "w3": rng.normal(0, 0.3, (4, 16, 3, 3))}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def test_other_int8_ops_are_the_backends_beyond_the_default_set():
    from onnxsmith.passes.quantize.int8_plan import other_int8_ops

    others = other_int8_ops(get_backend("cpu").capabilities.int8_ops)
    assert {"Add", "Mul", "Concat", "Sigmoid", "GlobalAveragePool"} <= set(others)
    assert not {"Conv", "MatMul", "Relu", "MaxPool", "Reshape", "Gather", "Split"} & set(others)  # default set, or own rules


def test_other_ops_asked_for_are_layers_the_guard_and_timing_judge_and_heads_stay_float():
    model = _residual_block()
    plan = plan_int8(model, ["Conv", "Relu", "Add", "Sigmoid"], min_intensity=0.0)
    assert [n.name for n in plan.layers] == ["conv1", "conv2", "add", "sigmoid"]
    assert plan.heads == ["head"]
    assert {"c2", "r1", "s", "g"} <= set(plan.tensors)  # the Add's and Sigmoid's inputs and outputs get ranges
    default = plan_int8(model, ["Conv", "Relu"], min_intensity=0.0)
    assert [n.name for n in default.layers] == ["conv1", "conv2"]


def test_all_ops_quantizes_the_add_and_sigmoid_as_layers_of_their_own(tmp_path):
    model = _residual_block()
    rng = np.random.default_rng(2)
    data = Dataset({"x": rng.normal(0, 1, (8, 1, 8, 16, 16)).astype(np.float32)}, "random")
    ctx = Context(backend=get_backend("cpu"), calibration=data)
    options = {"guard": False, "skip_slow": False, "all_ops": True}
    result = create_pass("quantize", options).run(model, ctx)
    rows = {row["layer"]: row for row in result.layers}
    assert {name: rows[name]["precision"] for name in ("conv1", "conv2", "add", "sigmoid", "head")} == {
        "conv1": "int8", "conv2": "int8", "add": "int8", "sigmoid": "int8", "head": "fp32"}
    assert rows["head"]["reason"].startswith("output head")
    ops = [n.op_type for n in result.model.graph]
    # the Add and Sigmoid read dequantized inputs and their outputs are quantized: ORT runs them in int8
    for name in ("add", "sigmoid"):
        node = next(n for n in result.model.graph if n.name == name)
        assert all(v.producer() is not None and v.producer().op_type == "DequantizeLinear" for v in node.inputs)
        assert {use.node.op_type for use in node.outputs[0].uses()} == {"QuantizeLinear"}
    assert ops.count("QuantizeLinear") > 0
    import onnxruntime as ort

    from onnxsmith.runtime import save_runtime_graph

    save_runtime_graph(result.model, tmp_path / "ort.onnx", providers=["CPUExecutionProvider"],
                       level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    kernels = {n.op_type for n in onnx.load(str(tmp_path / "ort.onnx")).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearSigmoid"} <= kernels, kernels
    without = create_pass("quantize", {"guard": False, "skip_slow": False}).run(model, ctx)
    assert {row["layer"] for row in without.layers} == {"conv1", "conv2", "head"}


def test_a_layer_s_own_error_is_its_output_against_the_float_layer_on_the_input_it_gets():
    """The Add's own error: its output in the quantized model (every op int8) against an Add
    run in float on what reaches it there: conv2's output before its quantization, and conv1's
    Relu as quantized (the Relu is folded into that quantization, so the tensor before it is
    no Relu output). Computed here by hand with two plain ONNX Runtime sessions."""
    from onnxsmith.measure import Measurements
    from onnxsmith.passes.quantize.guard import own_error_sensitivity

    model = _residual_block()
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.normal(0, 1, (1, 8, 16, 16)).astype(np.float32)} for _ in range(4)]
    data = Dataset({"x": np.stack([f["x"] for f in feeds])}, "random")
    options = {"guard": False, "skip_slow": False, "all_ops": True}
    result = create_pass("quantize", options).run(model, Context(backend=get_backend("cpu"), calibration=data))
    layers = [n for n in model.graph if n.name in ("conv1", "conv2", "add")]
    own = own_error_sensitivity(Measurements(), result.model, layers, feeds)

    exposed = result.model.clone()
    values = {v.name: v for node in exposed.graph for v in node.outputs}
    add = next(n for n in exposed.graph if n.name == "add")
    assert [v.name for v in add.inputs] == ["c2_DequantizeLinear_Output", "r1"]  # r1: conv1's Relu, dequantized
    exposed.graph.outputs.extend([values["c2"], values["r1"], add.outputs[0]])
    session = make_session(exposed, optimize=False)
    names = [o.name for o in session.get_outputs()]
    runs = [dict(zip(names, session.run(None, feed), strict=True)) for feed in feeds]
    reference = [run["c2"] + run["r1"] for run in runs]
    noise = sum(float(((run[add.outputs[0].name] - ref) ** 2).sum()) for run, ref in zip(runs, reference, strict=True))
    signal = sum(float((ref ** 2).sum()) for ref in reference)
    assert own["add"] == pytest.approx(np.sqrt(noise / signal), rel=1e-4)
    assert own["conv1"] > 0 and own["conv2"] > 0
    assert {v.name for v in result.model.graph.outputs} == {"y"}  # the quantized model is left as it was


def test_the_guard_keeps_the_second_opinion_only_where_it_meets_the_budget_and_gives_up_less():
    from onnxsmith.passes.quantize.guard import GuardResult, gives_up_less

    first = GuardResult(None, 0.0, [("a", 0.1), ("b", 0.1), ("c", 0.1)])
    fewer = GuardResult(None, 0.01, [("d", 0.2)])
    assert gives_up_less(fewer, first, 0.02, None)  # one layer float instead of three
    assert not gives_up_less(GuardResult(None, 0.03, [("d", 0.2)]), first, 0.02, None)  # over the budget
    gains = {"a": 0.01, "b": 0.01, "c": 0.01, "d": 0.5}
    assert not gives_up_less(fewer, first, 0.02, gains)  # d alone buys more than a, b and c together
    assert gives_up_less(first, fewer, 0.02, gains)
