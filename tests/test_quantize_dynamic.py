"""dynamic int8 on fixtures: int8 weights, run-time activation quantization, Conv left float,
outputs within a bound, the guard, no calibration data needed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto

from conftest import FIXTURES, fixture_feeds, ort_outputs, real_model_or_skip
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.runtime import make_session, run_all


def _optimize(name, tmp_path, pipeline, *, calib=True, max_drift=None, out_name=None):
    # the per-channel drift: these tests are about the guard's mechanics on continuous errors
    data = {"passes": parse_pipeline(pipeline), "accuracy": {"metric": "drift", "max_drift": max_drift}}
    if calib:
        data["calibration"] = {"data": str(FIXTURES / f"{name}.npz")}
    out = tmp_path / (out_name or f"{name}.onnx")
    report = optimize(str(FIXTURES / f"{name}.onnx"), out, validate_recipe(data), OptimizeOptions(latency_rounds=0))
    return out, report, report.passes[-1]


def _cosines(name, out, count=8):
    feeds = fixture_feeds(name, count=count)
    return [float(np.dot(r[0].ravel(), g[0].ravel()) / np.linalg.norm(r[0]) / np.linalg.norm(g[0]))
            for r, g in zip(ort_outputs(FIXTURES / f"{name}.onnx", feeds), ort_outputs(out, feeds), strict=True)]


def test_dynamic_mlp_has_int8_weights_and_runtime_quantized_matmuls(tmp_path):
    out, report, record = _optimize("mlp", tmp_path, "quantize{mode=dynamic,guard=false}")
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    # the three Linear layers (Gemm) became MatMuls; the first two run dynamic int8, the last
    # one (the logits) is the output head and stays float
    assert ops.count("MatMulInteger") == 2 and ops.count("DynamicQuantizeLinear") == 2 and ops.count("MatMul") == 1
    assert "Gemm" not in ops and record.counts["gemm_as_matmul"] == 3
    weights = {i.name: i for i in model.graph.initializer if len(i.dims) == 2}
    assert sorted(i.data_type for i in weights.values()) == [TensorProto.FLOAT, TensorProto.INT8, TensorProto.INT8]
    head = next(n for n in model.graph.node if n.op_type == "MatMul")
    assert weights[head.input[1]].data_type == TensorProto.FLOAT
    assert {r["layer"]: r["precision"] for r in record.layers}[head.name] == "fp32"
    assert record.counts["layers_quantized"] == 2 and record.counts["int8_kernels"] >= 2  # fused by ONNX Runtime
    assert any(n.startswith("output head left float") for n in record.notes)
    assert report.summary.bytes["after"] < report.summary.bytes["before"] * 0.45
    assert min(_cosines("mlp", out)) > 0.995
    assert report.summary.drift < 0.1


def test_dynamic_leaves_conv_float_and_says_why(tmp_path):
    out, _, record = _optimize("cnn", tmp_path, "quantize{mode=dynamic,guard=false}")
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 3 and "ConvInteger" not in ops  # (its one Linear is the output head: float too)
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    assert all(dtypes[n.input[1]] == TensorProto.FLOAT for n in model.graph.node if n.op_type == "Conv")
    assert record.counts["convs_float"] == 3
    assert any("3 convolution(s) left float" in n and "ConvInteger" in n for n in record.notes)
    conv_rows = [r for r in record.layers if r["op"] == "Conv"]
    assert len(conv_rows) == 3 and all(r["precision"] == "fp32" and "slower" in r["reason"] for r in conv_rows)
    assert min(_cosines("cnn", out)) > 0.99


def test_asking_for_dynamic_conv_warns_that_it_is_slow(tmp_path):
    out, _, record = _optimize("cnn", tmp_path, "quantize{mode=dynamic,guard=false,ops=[Conv,MatMul,Gemm]}")
    assert record.counts["layers_quantized"] == 3
    assert [n.op_type for n in onnx.load(str(out)).graph.node].count("ConvInteger") == 3
    assert any(w.startswith("Conv: dynamic int8 convolution (ConvInteger) is 2-6x slower") for w in record.warnings)


def test_guard_keeps_a_layer_float_when_the_budget_demands_it(tmp_path):
    _, unguarded, record_off = _optimize("mlp", tmp_path, "quantize{mode=dynamic,guard=false}", out_name="off.onnx")
    budget = unguarded.summary.drift / 3
    out, guarded, record = _optimize("mlp", tmp_path, "quantize{mode=dynamic}", max_drift=budget)
    def guarded_rows(rec):
        return [r["layer"] for r in rec.layers if r.get("reason") == "kept in float by the accuracy guard"]

    assert guarded_rows(record_off) == [] and len(guarded_rows(record)) >= 1
    assert record.counts["layers_float"] == len(guarded_rows(record)) + 1  # and the output head
    assert guarded.summary.drift <= budget < unguarded.summary.drift
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("MatMulInteger") == 2 - len(guarded_rows(record)) and ops.count("MatMul") == 1 + len(guarded_rows(record))


def test_dynamic_runs_without_calibration_data(tmp_path):
    out, report, record = _optimize("transformer", tmp_path, "cleanup,quantize{mode=dynamic}", calib=False)
    assert record.counts["layers_quantized"] >= 8 - record.counts["layers_float"]
    assert any("random" in w.lower() for w in report.warnings)  # evaluated on random inputs, and says so
    feeds = fixture_feeds("transformer", count=4)
    ref = run_all(make_session(ir.load(str(FIXTURES / "transformer.onnx")), optimize=False), feeds)
    got = run_all(make_session(ir.load(str(out))), feeds)
    for r, g in zip(ref, got, strict=True):
        a, b = r["last_hidden_state"].ravel(), g["last_hidden_state"].ravel()
        assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_gemm_to_matmul_is_exact():
    from onnxsmith.passes.quantize.dynamic import _gemm_as_matmul

    model = ir.load(str(FIXTURES / "mlp.onnx"))
    rewritten = ir.from_proto(ir.to_proto(model))
    assert _gemm_as_matmul(rewritten) == 3
    assert [n.op_type for n in rewritten.graph].count("Gemm") == 0
    feeds = fixture_feeds("mlp", count=4)
    for r, g in zip(run_all(make_session(model, optimize=False), feeds), run_all(make_session(rewritten, optimize=False), feeds),
                    strict=True):
        np.testing.assert_allclose(g["y"], r["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.realmodel
def test_dynamic_minilm_quantizes_every_weighted_matmul_and_keeps_embeddings_close():
    import tasks

    from onnxsmith.backend import get_backend
    from onnxsmith.context import Context
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

    model = ir.load(str(real_model_or_skip("minilm")))
    task = tasks.get_task("minilm")
    result = QuantizePass(mode="dynamic", guard=False).run(model, Context(backend=get_backend("cpu")))
    ops = [n.op_type for n in result.model.graph]
    assert ops.count("MatMulInteger") == 36 and result.counts["int8_kernels"] == 36  # 6 layers x (Q, K, V, out, 2 FFN)
    feeds = task.evaluation(16)
    scores = task.score(run_all(make_session(model), feeds), run_all(make_session(result.model), feeds), feeds)
    assert scores["cosine"] >= 0.985  # 0.991 on 64 held-out sentences with every layer quantized (guard off)


def test_dynamic_lstm_becomes_dynamic_quantize_lstm():
    from onnx import helper, numpy_helper

    from onnxsmith.backend import get_backend
    from onnxsmith.context import Context
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

    rng = np.random.default_rng(0)
    hidden, inputs = 32, 16
    weights = [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
               for name, shape, scale in (("W", (1, 4 * hidden, inputs), 0.2), ("R", (1, 4 * hidden, hidden), 0.2),
                                          ("B", (1, 8 * hidden), 0.1))]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], name="lstm", hidden_size=hidden)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 2, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    result = QuantizePass(mode="dynamic", guard=False).run(model, Context(backend=get_backend("cpu")))
    assert [n.op_type for n in result.model.graph] == ["DynamicQuantizeLSTM"] and result.counts["layers_quantized"] == 1
    assert {v.const_value.dtype for v in result.model.graph.initializers.values() if len(v.shape) == 3} == {ir.DataType.INT8}
    x = rng.standard_normal((10, 2, inputs)).astype(np.float32)
    ref, got = make_session(model).run(None, {"x": x})[0], make_session(result.model).run(None, {"x": x})[0]
    assert np.max(np.abs(got - ref)) <= 0.03 * np.max(np.abs(ref))  # measured 0.018
