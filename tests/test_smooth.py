"""smooth (SmoothQuant): exact in fp32, absorbed where it can be, and fewer float layers under int8's guard."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import real_model_or_skip, sentence_embeddings
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.passes.smooth import SMOOTH_METADATA, smooth_model, smoothing_nodes
from onnxsmith.recipe import parse_pipeline, validate_recipe

D, F, OUTLIER = 16, 32, 3


def _tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _block_model(seed: int = 0) -> onnx.ModelProto:
    """Every place smooth meets an activation:

    x -> LN1 -> {q, k} only                   (absorbed into LN1's scale and bias)
    q + k -> LN2 -> {fc_a, residual Add}      (a Mul: the residual also reads LN2)
    residual -> fc1                           (a Mul: an Add of two activations)
    fc1 = MatMul + Add bias -> fc2            (absorbed into fc1's columns and bias)
    fc2 -> Gelu -> fc3                        (a Mul: Gelu is not linear)
    fc3 -> fc4                                (absorbed into fc3's columns)
    Reshape -> Gemm (transB=1, bias)          (a Mul)
    """
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    g1 = rng.uniform(0.5, 1.5, D)
    g1[OUTLIER] = 30.0  # an outlier channel, as LayerNorm scales of trained transformers have
    inits = [
        _tensor("g1", g1), _tensor("b1", 0.1 * w(D)), _tensor("Wq", w(D, D)), _tensor("Wk", w(D, D)),
        _tensor("g2", rng.uniform(0.5, 1.5, D)), _tensor("b2", 0.1 * w(D)), _tensor("Wa", w(D, D)),
        _tensor("W1", w(D, F)), _tensor("bias1", w(F)), _tensor("W2", w(F, D)), _tensor("W3", w(D, D)), _tensor("W4", w(D, D)),
        _tensor("W5", w(D, D)), _tensor("C5", w(D)), numpy_helper.from_array(np.array([-1, D], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g1", "b1"], ["ln1"], name="ln1", axis=-1),
        helper.make_node("MatMul", ["ln1", "Wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["ln1", "Wk"], ["k"], name="k"),
        helper.make_node("Add", ["q", "k"], ["qk"], name="qk"),
        helper.make_node("LayerNormalization", ["qk", "g2", "b2"], ["ln2"], name="ln2", axis=-1),
        helper.make_node("MatMul", ["ln2", "Wa"], ["a"], name="fc_a"),
        helper.make_node("Add", ["a", "ln2"], ["r"], name="residual"),
        helper.make_node("MatMul", ["r", "W1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "bias1"], ["hb"], name="fc1_bias"),
        helper.make_node("MatMul", ["hb", "W2"], ["o2"], name="fc2"),
        helper.make_node("Gelu", ["o2"], ["g"], name="gelu"),
        helper.make_node("MatMul", ["g", "W3"], ["o3"], name="fc3"),
        helper.make_node("MatMul", ["o3", "W4"], ["o4"], name="fc4"),
        helper.make_node("Reshape", ["o4", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "W5", "C5"], ["y"], name="head", transB=1),
    ]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [10, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        x = rng.standard_normal((2, 5, D)).astype(np.float32)
        x[..., OUTLIER] *= 30.0
        feeds.append({"x": x})
    return feeds


def _outputs(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [session.run(None, f)[0] for f in feeds]


def test_smooth_is_exact_in_fp32_and_absorbs_where_it_can():
    proto = _block_model()
    model = ir.from_proto(proto)
    records = smooth_model(model, _feeds(8, seed=0), alpha=0.5)
    where = {tuple(r["layers"]): r["absorbed_into"] for r in records}
    assert where == {
        ("q", "k"): "ln1", ("fc_a",): "Mul", ("fc1",): "Mul", ("fc2",): "fc1 + fc1_bias",
        ("fc3",): "Mul", ("fc4",): "fc3", ("head",): "Mul",
    }
    assert sorted(smoothing_nodes(model)) == ["fc1/smooth", "fc3/smooth", "fc_a/smooth", "head/smooth"]
    smoothed = ir.to_proto(model)
    onnx.checker.check_model(smoothed)
    held_out = _feeds(4, seed=1)
    for ref, got in zip(_outputs(proto, held_out), _outputs(smoothed, held_out), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # the weights really moved: LN1's scale on the outlier channel shrank, Wq's row grew by the same factor
    g1 = model.graph.initializers["g1"].const_value.numpy()
    original_g1 = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "g1"))
    s = original_g1[OUTLIER] / g1[OUTLIER]
    assert s > 2.0
    wq = model.graph.initializers["Wq"].const_value.numpy()
    original_wq = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "Wq"))
    np.testing.assert_allclose(wq[OUTLIER], original_wq[OUTLIER] * s, rtol=1e-5)
    assert all(r["outlier_ratio_after"] < r["outlier_ratio_before"] for r in records)


def test_smooth_absorbs_into_a_per_channel_mul():
    """RMSNorm written out ends in ``x * weight``: the weight takes 1/s, no node is added."""
    rng = np.random.default_rng(4)
    scale = rng.uniform(0.5, 1.5, D)
    scale[OUTLIER] = 40.0
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"], name="rms_weight"),
         helper.make_node("MatMul", ["scaled", "W"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, D])],
        [_tensor("scale", scale), _tensor("W", rng.standard_normal((D, D)))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model = ir.from_proto(proto)
    (record,) = smooth_model(model, _feeds(4, seed=0), alpha=0.5)
    assert record["absorbed_into"] == "rms_weight" and len(model.graph) == 2
    assert record["outlier_ratio_after"] < 0.5 * record["outlier_ratio_before"]
    held_out = _feeds(3, seed=1)
    for ref, got in zip(_outputs(proto, held_out), _outputs(ir.to_proto(model), held_out), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_smooth_twice_changes_nothing_more():
    model = ir.from_proto(_block_model())
    feeds = _feeds(8, seed=0)
    smooth_model(model, feeds, alpha=0.8)
    before = {name: v.const_value.numpy().copy() for name, v in model.graph.initializers.items()}
    assert smooth_model(model, feeds, alpha=0.8) == []
    assert all(np.array_equal(before[n], v.const_value.numpy()) for n, v in model.graph.initializers.items())


def _outlier_mlp(path, npz):
    """LayerNorm whose scale has a few huge channels (as in trained transformers) feeding
    three MatMuls, with a residual: per-tensor int8 activations lose the small channels."""
    rng = np.random.default_rng(3)
    gamma = rng.uniform(0.5, 1.5, F)
    gamma[[2, 11, 20]] = [60.0, -45.0, 80.0]
    inits = [_tensor("gamma", gamma), _tensor("beta", 0.1 * rng.standard_normal(F)),
             _tensor("W_in", rng.standard_normal((D, F)) / 4), _tensor("W_a", rng.standard_normal((F, F)) / 6),
             _tensor("W_b", rng.standard_normal((F, F)) / 6), _tensor("W_out", rng.standard_normal((F, D)) / 6)]
    nodes = [
        helper.make_node("MatMul", ["x", "W_in"], ["h"], name="fc_in"),
        helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["n"], name="norm", axis=-1),
        helper.make_node("MatMul", ["n", "W_a"], ["a"], name="fc_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu"),
        helper.make_node("MatMul", ["ra", "W_b"], ["b"], name="fc_b"),
        helper.make_node("Add", ["b", "n"], ["r"], name="residual"),
        helper.make_node("MatMul", ["r", "W_out"], ["y"], name="fc_out"),
    ]
    graph = helper.make_graph(nodes, "outliers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, D])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    np.savez(npz, x=rng.standard_normal((32, 1, 8, D)).astype(np.float32))


def test_smooth_leaves_fewer_layers_in_float_under_the_int8_guard(tmp_path):
    """With the budget between the unguarded drifts of plain and smoothed int8, the guard keeps
    layers float for plain int8 and none after smooth. The budget is measured here, not a
    constant: int8 kernels round differently with and without VNNI (on AVX2 the drifts were
    0.00101 plain and 0.00054 smoothed; on AVX-512 VNNI 0.00084 and 0.00050). smooth{search=true}
    lowers this model's output drift by only 3-9%, too little to sit a budget between on every
    CPU; its per-group choice is tested on the simulated int8 error below."""
    source, npz = tmp_path / "outliers.onnx", tmp_path / "outliers.npz"
    _outlier_mlp(source, npz)

    def run(passes, out, budget=None):
        data = {"passes": parse_pipeline(passes), "calibration": {"data": str(npz)}}
        if budget is not None:
            data["accuracy"] = {"max_drift": budget}
        report = optimize(str(source), tmp_path / out, validate_recipe(data), OptimizeOptions(latency_rounds=0))
        return report, report.passes[-1]

    passes = {"pass": "smooth,quantize{mode=int8,ops=[MatMul]}", "option": "quantize{mode=int8,ops=[MatMul],smooth=0.5}"}
    plain_drift = run("quantize{mode=int8,ops=[MatMul],guard=false}", "plain-unguarded.onnx")[0].summary.drift
    for label, pipeline in passes.items():
        smoothed_drift = run(pipeline.replace("]}", "],guard=false}"), f"{label}-unguarded.onnx")[0].summary.drift
        assert smoothed_drift <= 0.8 * plain_drift, (label, smoothed_drift, plain_drift)  # smooth's point
        budget = (plain_drift * smoothed_drift) ** 0.5
        plain, plain_record = run("quantize{mode=int8,ops=[MatMul]}", f"plain-{label}.onnx", budget)
        smoothed, record = run(pipeline, f"{label}.onnx", budget)
        assert smoothed.summary.drift <= budget and plain.summary.drift <= budget  # the same budget met by both
        assert record.counts["layers_float"] < plain_record.counts["layers_float"], (label, record.counts, plain_record.counts)
        artifact = onnx.load(str(tmp_path / f"{label}.onnx"))
        muls = [n for n in artifact.graph.node if any(p.key == SMOOTH_METADATA for p in n.metadata_props)]
        assert muls and all(n.input[0] not in {o for d in artifact.graph.node if d.op_type == "DequantizeLinear" for o in d.output}
                            for n in muls)  # the smoothing Mul reads the float activation


def test_search_chooses_per_group_alphas_that_lower_the_simulated_int8_error(tmp_path):
    from onnxsmith.passes.smooth_search import GRID, MIN_GAIN

    _outlier_mlp(tmp_path / "m.onnx", tmp_path / "m.npz")
    model = ir.load(tmp_path / "m.onnx")
    with np.load(tmp_path / "m.npz") as data:
        feeds = [{"x": x} for x in data["x"]]
    records = smooth_model(model, feeds, alpha=0.5, search=True)
    assert records and all(r["alpha"] in GRID and r["alpha"] > 0 for r in records)
    assert all(r["int8_error_after"] <= (1 - MIN_GAIN) * r["int8_error_before"] for r in records)
    by_layer = {r["layers"][0]: r for r in records}
    assert by_layer["fc_a"]["int8_error_after"] < 0.5 * by_layer["fc_a"]["int8_error_before"]  # the LayerNorm outliers


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_out_of_range_is_refused(alpha):
    from onnxsmith.errors import RecipeError

    with pytest.raises((RecipeError, ValueError)):
        validate_recipe({"passes": parse_pipeline(f"smooth{{alpha={alpha}}}")}).build_passes()


BUDGET_MINILM = 0.008


@pytest.mark.realmodel
def test_smooth_on_minilm_leaves_fewer_layers_float_under_the_embedding_budget(tmp_path):
    """Issue 5's smooth target on the real model: int8 on MiniLM's MatMuls, guarded by the task
    itself (1 - embedding cosine <= 0.008 on the guard's 8 sentences), keeps fewer layers float
    after smooth than without (measured 1 vs 18), and both keep 16 held-out sentences near the
    0.99 bound (measured 0.9931 and 0.9900). So few sentences at 64 tokens bound it only within
    0.005; bench/int4_bench.py measures the bound itself on 32 sentences at 128 tokens."""
    from realmodels import minilm_inputs, sentences

    source = real_model_or_skip("minilm")
    npz = tmp_path / "calib.npz"
    np.savez(npz, **{k: v[:, None] for k, v in minilm_inputs(sentences(32), seq_len=64).items()})
    held_out = minilm_inputs(sentences(16, start=400), seq_len=64)

    reference = sentence_embeddings(source, held_out)
    results = {}
    for label, passes in {"plain": "quantize{mode=int8,ops=[MatMul]}", "smooth": "smooth,quantize{mode=int8,ops=[MatMul]}"}.items():
        recipe = validate_recipe({"passes": parse_pipeline(passes), "calibration": {"data": str(npz)},
                                  "accuracy": {"metric": "embedding-cosine", "max_drift": BUDGET_MINILM}})
        report = optimize(str(source), tmp_path / f"{label}.onnx", recipe, OptimizeOptions(latency_rounds=0))
        cosine = float(np.mean(np.sum(reference * sentence_embeddings(tmp_path / f"{label}.onnx", held_out), axis=1)))
        results[label] = (report.passes[-1].counts["layers_float"], report.summary.drift, cosine)
    assert results["smooth"][0] < results["plain"][0], results
    assert all(drift <= BUDGET_MINILM and cosine >= 0.985 for _, drift, cosine in results.values()), results
