"""fp16/bf16 on fixtures: weights really fp16/bf16, float32 I/O, outputs within bounds, and the
ops kept in fp32 listed with their reasons."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, fixture_feeds, ort_outputs, real_model_or_skip, run_cli
from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.errors import InputError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.passes.quantize.float16_plan import fits
from onnxsmith.passes.quantize.quantize_pass import QuantizePass
from onnxsmith.recipe import parse_pipeline, validate_recipe

# fp16 rounds weights to 2^-11 relative, bf16 to 2^-8: the outputs of these small nets move
# by a few times that, relative to their largest output.
BOUND = {"fp16": 2e-3, "bf16": 2e-2}
LOW = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


def _optimize(name, tmp_path, pipeline):
    # the per-channel drift: these tests are about the guard's mechanics on continuous errors
    data = {"passes": parse_pipeline(pipeline), "calibration": {"data": str(FIXTURES / f"{name}.npz")}, "accuracy": {"metric": "drift"}}
    out = tmp_path / f"{name}.onnx"
    report = optimize(str(FIXTURES / f"{name}.onnx"), out, validate_recipe(data), OptimizeOptions(latency_rounds=0))
    return out, report, report.passes[-1]


def _relative_error(name, out, count=6):
    feeds = fixture_feeds(name, count=count)
    ref = np.concatenate([r[0].ravel() for r in ort_outputs(FIXTURES / f"{name}.onnx", feeds)])
    got = np.concatenate([g[0].ravel() for g in ort_outputs(out, feeds)])
    assert got.dtype == np.float32
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_weights_are_stored_low_io_stays_float32_and_outputs_are_close(precision, tmp_path):
    out, report, record = _optimize("cnn", tmp_path, f"quantize{{mode={precision},guard=false}}")
    model = onnx.load(str(out))
    float_weights = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, LOW[precision]) and np.prod(i.dims) >= 16]
    assert len(float_weights) >= 5 and all(i.data_type == LOW[precision] for i in float_weights)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}  # read through a Cast
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    assert all(casts[w] in {i.name for i in float_weights} for w in conv_weights)
    assert [i.type.tensor_type.elem_type for i in [*model.graph.input, *model.graph.output]] == [TensorProto.FLOAT] * 2
    assert _relative_error("cnn", out) < BOUND[precision]
    low_bytes = 2 * sum(int(np.prod(i.dims)) for i in float_weights)
    assert record.counts["weight_bytes_saved"] == low_bytes  # half of the float32 bytes
    assert any("saves size here" in w and "not time" in w for w in record.warnings)


def test_fp16_compute_keeps_norms_and_softmax_fp32_listed_and_casts_once(tmp_path):
    out, _, record = _optimize("transformer", tmp_path, "cleanup,quantize{mode=fp16,ops=[MatMul,Gemm]}")
    rows = {r["layer"]: r for r in record.layers}
    by_op = {}
    for row in rows.values():
        by_op.setdefault(row["op"], set()).add(row["precision"])
    assert by_op["MatMul"] == {"fp16"}
    assert by_op["LayerNormalization"] == by_op["Softmax"] == {"fp32"}
    assert all("normalisation" in r["reason"] for r in rows.values() if r["op"] == "LayerNormalization")
    assert any(n.startswith("fp32 (softmax") for n in record.notes)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "MatMul":
            assert {types[i] for i in node.input} == {TensorProto.FLOAT16}
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.input[0]] == TensorProto.FLOAT
    cast_pairs = [(n.input[0], n.attribute[0].i) for n in model.graph.node if n.op_type == "Cast"]
    assert len(cast_pairs) == len(set(cast_pairs))  # one Cast per value and target type
    assert _relative_error("transformer", out) < BOUND["fp16"]


def _hand_built() -> ir.Model:
    """x -> MatMul -> Add(bias) -> {Mul(70000) -> y_big, LayerNorm -> Sigmoid -> y_prob, Relu -> y_relu}."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([70000.0], np.float32), "big"),  # > 65504: no fp16 for it
        numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(8, np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="matmul"),
        helper.make_node("Add", ["a", "bias"], ["b"], name="add"),
        helper.make_node("Mul", ["b", "big"], ["y_big"], name="mul"),
        helper.make_node("LayerNormalization", ["b", "gamma", "beta"], ["n"], name="norm", axis=-1),
        helper.make_node("Sigmoid", ["n"], ["y_prob"], name="sigmoid"),
        helper.make_node("Relu", ["b"], ["y_relu"], name="relu"),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 8]) for n in ("y_big", "y_prob", "y_relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])], outs, inits)
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))


def test_precision_rules_on_a_hand_built_graph():
    model = _hand_built()
    result = QuantizePass(mode="fp16", ops=("MatMul",), guard=False).run(model, Context(backend=get_backend("cpu")))
    rows = {r["layer"]: r for r in result.layers}
    assert rows["matmul"]["precision"] == rows["add"]["precision"] == rows["relu"]["precision"] == "fp16"
    assert rows["mul"]["precision"] == "fp32" and rows["mul"]["reason"] == "constant 'big' does not fit fp16"
    assert rows["norm"]["precision"] == "fp32" and "normalisation" in rows["norm"]["reason"]
    assert rows["sigmoid"]["precision"] == "fp32" and "threshold" in rows["sigmoid"]["reason"]
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32) * 4
    from onnxsmith.runtime import make_session

    ref = make_session(model, optimize=False).run(None, {"x": x})
    got = make_session(result.model, optimize=False).run(None, {"x": x})
    assert [o.name for o in result.model.graph.outputs] == ["y_big", "y_prob", "y_relu"]
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == np.float32 and np.isfinite(g).all()  # y_big reaches 1e6: fp32 Mul, no overflow
        assert np.max(np.abs(g - r)) <= 2e-3 * np.max(np.abs(r))


def test_fits_rejects_overflow_and_flushed_constants():
    weights = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert fits(weights, "fp16") and fits(weights, "bf16")
    variance = np.array([1.05e7, 9.79e7], np.float32)  # PP-OCRv4 det's last BatchNormalization
    assert not fits(variance, "fp16") and fits(variance, "bf16")
    assert not fits(np.array([1e-12], np.float32), "fp16")  # a LayerNorm epsilon flushes to 0


def test_guard_keeps_layers_and_their_weights_fp32_to_meet_a_tight_budget(tmp_path):
    _, unguarded, _ = _optimize("mlp", tmp_path, "quantize{mode=bf16,guard=false}")
    data = {"passes": parse_pipeline("quantize{mode=bf16}"), "calibration": {"data": str(FIXTURES / "mlp.npz")},
            "accuracy": {"metric": "drift", "max_drift": unguarded.summary.drift / 4}}
    out = tmp_path / "guarded.onnx"
    guarded = optimize(str(FIXTURES / "mlp.onnx"), out, validate_recipe(data), OptimizeOptions(latency_rounds=0))
    record = guarded.passes[-1]
    kept = [r["layer"] for r in record.layers if "accuracy guard" in r.get("reason", "")]
    assert record.counts["layers_float"] == len(kept) >= 1
    assert guarded.summary.drift <= unguarded.summary.drift / 4
    model = onnx.load(str(out))
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.name in kept:  # a kept Gemm reads its float32 weight directly, no Cast
            assert dtypes[node.input[1]] == TensorProto.FLOAT


def test_keep_io_types_false_is_refused_with_a_fix():
    with pytest.raises(InputError, match="keep_io_types=false"):
        QuantizePass(mode="fp16", keep_io_types=False).run(_hand_built(), Context(backend=get_backend("cpu")))


def test_cli_fp16_needs_no_calibration_data(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--passes", "quantize{mode=fp16}",
                     "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    record = report["passes"][-1]
    assert record["name"] == "quantize"
    assert record["counts"]["weights_low"] == 5  # 3 weights, 2 biases; the 10-value bias is too small to matter
    weights = [i for i in onnx.load(str(out)).graph.initializer if len(i.dims) == 2]
    assert len(weights) == 3 and all(i.data_type == TensorProto.FLOAT16 for i in weights)


def test_cpu_bf16_kernel_list_matches_what_sessions_accept():
    """The backend's bf16_ops (ONNX Runtime's kernel registry) is what a CPU session really runs."""
    from onnxsmith.runtime import make_session

    bf16_ops = get_backend("cpu").capabilities.bf16_ops
    assert {"Cast", "Gather", "Transpose", "Reshape"} <= bf16_ops and not {"Add", "MatMul", "Conv", "Relu"} & bf16_ops
    for op, expected in (("Transpose", True), ("Relu", False), ("Add", False)):
        x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 2])
        y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)
        node = helper.make_node(op, ["x", "x"] if op == "Add" else ["x"], ["y"])
        model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
        try:
            make_session(ir.from_proto(model), optimize=False)
            loaded = True
        except Exception:  # onnxruntime's NotImplemented
            loaded = False
        assert loaded == expected == (op in bf16_ops), op


def _real_task(name):
    import tasks

    real_model_or_skip(name)
    return tasks.get_task(name)


@pytest.mark.realmodel
def test_fp16_compute_keeps_the_ppocr_det_map():
    """ONNX Runtime's fp16 converter clips the last BatchNormalization's variance (9.8e7) to
    65504 and the binarized map drops to IoU ~0.47; ours keeps that BatchNormalization fp32."""
    from onnxsmith.runtime import make_session, run_all

    task = _real_task("ppocr_det")
    model = ir.load(str(task.model_path()))
    feeds = task.evaluation(2)
    result = QuantizePass(mode="fp16", ops=("Conv", "ConvTranspose"), guard=False).run(model, Context(backend=get_backend("cpu")))
    assert result.counts["nodes_low"] > 250  # nearly every Conv and what follows computes in fp16
    rows = {r["layer"]: r for r in result.layers}
    assert rows["p2o.BatchNormalization.1"]["precision"] == "fp32"
    assert result.model.graph.initializers["batch_norm_0.w_2"].dtype == ir.DataType.FLOAT
    scores = task.score(run_all(make_session(model), feeds), run_all(make_session(result.model), feeds), feeds)
    assert scores["iou"] >= 0.95


def test_control_flow_bodies_left_alone_are_named_in_the_report():
    """fp16 rewrites the main graph only: the If's branches keep their float32 MatMul, and the
    pass says so (issue 17: say which subgraphs were left alone and why)."""
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from onnxsmith.context import Context
    from onnxsmith.registry import create_pass

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64), dtype=np.float32), "w")
    v = numpy_helper.from_array(rng.standard_normal((64, 64), dtype=np.float32), "v")

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["h", "v"], [f"{name}_out"], name=f"{name}_op")], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 64])])

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="main_mm"),
         helper.make_node("If", ["cond"], ["y"], name="gate", then_branch=branch("then", "MatMul"), else_branch=branch("else", "Add"))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w, v])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    result = create_pass("quantize", {"mode": "fp16"}).run(model, Context())
    assert result.model.graph.initializers["w"].dtype == ir.DataType.FLOAT16  # the main graph's weight: rewritten
    assert result.counts["subgraph_nodes_left_alone"] == 2
    assert any(note.startswith("left as they were: the bodies of 1 control-flow node(s) (If 'gate'), 2 node(s): "
                               "quantize{mode=fp16} rewrote the main graph only") for note in result.notes), result.notes
