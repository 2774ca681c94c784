"""int4 weight-only quantization: ONNX Runtime's packing, both emitted forms, blocks, GPTQ vs RTN."""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, real_model_or_skip, sentence_embeddings
from onnxsmith.backend import Capabilities
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.errors import DataError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.passes.quantize.blockwise import rtn_int4
from onnxsmith.passes.quantize.int4_nodes import pack_nbits
from onnxsmith.passes.quantize.quantize_pass import QuantizePass
from onnxsmith.recipe import parse_pipeline, validate_recipe

K, HIDDEN, N, VOCAB = 80, 64, 24, 50  # K = 80: a short tail block at block 32


class _Backend:
    """A backend that offers the given kernels (ONNX Runtime CPU has MatMulNBits; none: the DQ form)."""

    def __init__(self, ops: frozenset[str]) -> None:
        self.capabilities = Capabilities(ops=ops)


CONTRIB = _Backend(frozenset({"MatMulNBits", "GatherBlockQuantized"}))
STANDARD = _Backend(frozenset())


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "E": rng.standard_normal((VOCAB, K)).astype(np.float32),
        "W1": rng.standard_normal((K, HIDDEN)).astype(np.float32),
        "W2": rng.standard_normal((HIDDEN, N)).astype(np.float32),
    }


def _embedding_mlp(weights: dict[str, np.ndarray], opset: int = 17) -> ir.Model:
    """ids -> Gather(E) -> MatMul(W1) -> Relu -> MatMul(W2), batch 2 x 7 tokens."""
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7, N])],
        [numpy_helper.from_array(a, name) for name, a in weights.items()],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9))


def _run(model: ir.Model, feed: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _forward(weights: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    return np.maximum(weights["E"][ids] @ weights["W1"], 0) @ weights["W2"]


def test_rtn_and_packing_equal_onnxruntime_quantizer():
    """Our RTN codes, packed as MatMulNBits, are byte for byte what ORT's MatMulNBitsQuantizer writes."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    w = _weights()["W1"]  # 80 x 64: 3 blocks of 32, the last one short
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, HIDDEN])], [numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    for symmetric in (True, False):
        quantizer = MatMulNBitsQuantizer(copy.deepcopy(proto), algo_config=DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=symmetric))
        quantizer.process()
        theirs = {i.name: numpy_helper.to_array(i) for i in quantizer.model.model.graph.initializer}
        b, scales, zero_points = pack_nbits(rtn_int4(w, 32, symmetric))
        np.testing.assert_array_equal(b, theirs["W_Q4"])
        np.testing.assert_array_equal(scales, theirs["W_scales"].reshape(-1))
        if not symmetric:
            np.testing.assert_array_equal(zero_points, theirs["W_zero_points"].reshape(-1))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("backend", [CONTRIB, STANDARD], ids=["MatMulNBits", "DequantizeLinear"])
def test_int4_forms_run_and_dequantize_to_the_expected_weights(backend, symmetric):
    weights = _weights()
    model = _embedding_mlp(weights)
    result = QuantizePass(mode="int4", guard=False, symmetric=symmetric, ops=("MatMul", "Gather")).run(model, Context(backend=backend))
    proto = ir.to_proto(result.model)
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    inits = {i.name: i for i in proto.graph.initializer}
    assert not ({"E", "W1", "W2"} & set(inits))  # no float copy of a weight is left
    if backend is CONTRIB:
        assert ops == ["GatherBlockQuantized", "MatMulNBits", "Relu", "MatMulNBits"]
        fc1 = next(n for n in proto.graph.node if n.name == "fc1")
        attrs = {a.name: helper.get_attribute_value(a) for a in fc1.attribute}
        assert attrs == {"K": K, "N": HIDDEN, "bits": 4, "block_size": 32}
        b = inits[fc1.input[1]]
        assert b.data_type == TensorProto.UINT8 and list(b.dims) == [HIDDEN, 3, 16]
        assert list(inits[fc1.input[2]].dims) == [HIDDEN * 3]
        assert (len(fc1.input) == 4) == (not symmetric)
    else:
        assert ops.count("DequantizeLinear") == 3 and {o.domain: o.version for o in proto.opset_import}[""] == 21
        int4 = TensorProto.INT4 if symmetric else TensorProto.UINT4
        codes = [i for i in proto.graph.initializer if i.data_type == int4 and i.name.endswith("_Q4")]
        assert sorted(tuple(i.dims) for i in codes) == sorted([(VOCAB, K), (K, HIDDEN), (HIDDEN, N)])
        assert all(helper.get_attribute_value(next(a for a in n.attribute if a.name == "block_size")) == 32
                   for n in proto.graph.node if n.op_type == "DequantizeLinear")

    ids = np.random.default_rng(1).integers(0, VOCAB, (2, 7)).astype(np.int64)
    got = _run(result.model, {"ids": ids})
    expected = {"E": rtn_int4(weights["E"].T, 32, symmetric).dequantize().T,
                "W1": rtn_int4(weights["W1"], 32, symmetric).dequantize(),
                "W2": rtn_int4(weights["W2"], 32, symmetric).dequantize()}
    scale = np.abs(_forward(weights, ids)).max()
    np.testing.assert_allclose(got, _forward(expected, ids), atol=1e-5 * scale)  # exactly the dequantized weights
    relative = np.linalg.norm(got - _forward(weights, ids)) / np.linalg.norm(_forward(weights, ids))
    assert relative < 0.2  # 4-bit blocks of 32 on Gaussian weights: ~0.15 through three layers
    assert result.counts["layers_quantized"] == 3
    assert result.counts["weight_bytes_before"] > 5 * result.counts["weight_bytes_after"]


@pytest.mark.parametrize("block", [16, 64, 128])
def test_block_size_is_honoured(block):
    weights = _weights()
    result = QuantizePass(mode="int4", guard=False, block=block).run(_embedding_mlp(weights), Context(backend=CONTRIB))
    proto = ir.to_proto(result.model)
    inits = {i.name: i for i in proto.graph.initializer}
    blocks = -(-K // block)
    fc1 = next(n for n in proto.graph.node if n.name == "fc1")
    assert next(helper.get_attribute_value(a) for a in fc1.attribute if a.name == "block_size") == block
    assert list(inits[fc1.input[1]].dims) == [HIDDEN, blocks, block // 2]
    assert list(inits[fc1.input[2]].dims) == [HIDDEN * blocks]
    record = next(r for r in result.layers if r["layer"] == "fc1")
    assert record["block"] == block and record["bytes_after"] == K * HIDDEN // 2 + 4 * HIDDEN * blocks


def test_smaller_blocks_and_zero_points_quantize_closer():
    w = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    w[:, :8] *= np.linspace(0.1, 10, 256)[:, None]  # magnitudes varying along K: blocks matter

    def error(block, symmetric):
        return np.linalg.norm(rtn_int4(w, block, symmetric).dequantize() - w) / np.linalg.norm(w)

    assert error(16, True) < error(64, True) < error(256, True)
    assert error(32, False) < error(32, True)
    w_positive = np.abs(w)  # one-sided blocks: zero points use all 16 levels
    assert np.linalg.norm(rtn_int4(w_positive, 32, False).dequantize() - w_positive) < 0.7 * np.linalg.norm(
        rtn_int4(w_positive, 32, True).dequantize() - w_positive)


def _correlated_layer(seed: int = 0):
    """One MatMul whose 128 inputs are strongly correlated (8 latent factors plus small noise,
    a few channels much larger): the case GPTQ's error compensation is made for."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((8, 128)) * np.where(np.arange(128) < 4, 8.0, 1.0)

    def inputs(n, rows=16):
        z = rng.standard_normal((n, rows, 8))
        return (z @ mixing + 0.05 * rng.standard_normal((n, rows, 128))).astype(np.float32)

    w = rng.standard_normal((128, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32])], [numpy_helper.from_array(w, "W")],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    return model, w, inputs(32)[:, None], inputs(16)


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_beats_rtn_on_correlated_inputs(symmetric):
    model, w, calibration, held_out = _correlated_layer()
    ctx = Context(backend=CONTRIB, calibration=Dataset({"x": calibration}, "synthetic"))
    reference = held_out @ w
    errors = {}
    for method in ("rtn", "gptq"):
        result = QuantizePass(mode="int4", method=method, guard=False, block=32, symmetric=symmetric).run(model, ctx)
        got = np.concatenate([_run(result.model, {"x": x[None]}) for x in held_out])
        errors[method] = float(np.linalg.norm(got - reference) / np.linalg.norm(reference))
    assert errors["gptq"] < 0.5 * errors["rtn"], errors  # measured: about 0.11x on held-out inputs
    gptq_record = result.layers[0]
    assert gptq_record["method"] == "gptq" and gptq_record["output_error"] < gptq_record["weight_error"]


def test_gptq_needs_calibration_rtn_does_not(tmp_path):
    def run(passes):
        recipe = validate_recipe({"passes": parse_pipeline(passes)})
        return optimize(str(FIXTURES / "transformer.onnx"), tmp_path / "out.onnx", recipe, OptimizeOptions(latency_rounds=0))

    with pytest.raises(DataError, match="needs calibration data"):
        run("cleanup,quantize{mode=int4,method=gptq}")
    report = run("cleanup,quantize{mode=int4,guard=false}")
    record = report.passes[-1]
    assert record.counts["layers_quantized"] >= 4 and record.counts["weight_bytes_before"] > 5 * record.counts["weight_bytes_after"]
    model = onnx.load(str(tmp_path / "out.onnx"))
    assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) == record.counts["layers_quantized"]
    assert report.summary.outputs and all(o.cosine > 0.98 for o in report.summary.outputs.values())


def test_guard_keeps_int4_layers_in_float_for_a_tight_budget(tmp_path):
    recipe = {"passes": parse_pipeline("cleanup,quantize{mode=int4,guard=false}"), "calibration": {"data": str(FIXTURES / "transformer.npz")}}
    unguarded = optimize(str(FIXTURES / "transformer.onnx"), tmp_path / "a.onnx", validate_recipe(recipe), OptimizeOptions(latency_rounds=0))
    budget = unguarded.summary.drift / 3
    recipe = {**recipe, "passes": parse_pipeline("cleanup,quantize{mode=int4}"), "accuracy": {"max_drift": budget}}
    guarded = optimize(str(FIXTURES / "transformer.onnx"), tmp_path / "b.onnx", validate_recipe(recipe), OptimizeOptions(latency_rounds=0))
    record = guarded.passes[-1]
    assert record.counts["layers_float"] >= 1 and guarded.summary.drift <= budget < unguarded.summary.drift
    assert sum(1 for layer in record.layers if layer["float"]) == record.counts["layers_float"]


@pytest.mark.realmodel
def test_int4_on_minilm_shrinks_matmul_weights_and_keeps_embeddings(tmp_path):
    """RTN, block 32, every MatMul weight: 6.4x smaller, embeddings of held-out sentences
    within cosine 0.95 of fp32 (measured 0.96; GPTQ reaches 0.98, see docs/benchmarks.md)."""
    from realmodels import minilm_inputs, sentences

    source = real_model_or_skip("minilm")
    npz = tmp_path / "calib.npz"
    np.savez(npz, **{k: v[:, None] for k, v in minilm_inputs(sentences(8), seq_len=64).items()})
    recipe = validate_recipe({"passes": parse_pipeline("quantize{mode=int4,guard=false}"), "calibration": {"data": str(npz)}})
    report = optimize(str(source), tmp_path / "int4.onnx", recipe, OptimizeOptions(latency_rounds=0))
    counts = report.passes[-1].counts
    assert counts["layers_quantized"] == 36 and counts["weight_bytes_before"] >= 6 * counts["weight_bytes_after"]
    artifact = onnx.load(str(tmp_path / "int4.onnx"))
    assert sum(n.op_type == "MatMulNBits" for n in artifact.graph.node) == 36
    held_out = minilm_inputs(sentences(8, start=400), seq_len=64)

    cosine = np.sum(sentence_embeddings(source, held_out) * sentence_embeddings(tmp_path / "int4.onnx", held_out), axis=1)
    assert cosine.mean() >= 0.95, cosine


@pytest.mark.realmodel
def test_rtn_equals_onnxruntime_quantizer_on_every_minilm_weight():
    """All 36 MiniLM weights, block 32, symmetric: the same bytes as MatMulNBitsQuantizer (ties included)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    source = onnx.load(str(real_model_or_skip("minilm")))
    weights = {n.outputs[0].name: n.inputs[1].const_value.numpy() for n in ir.from_proto(source).graph
               if n.op_type == "MatMul" and n.inputs[1].const_value is not None}
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(source, algo_config=DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True))
    quantizer.process()
    theirs = {i.name: i for i in quantizer.model.model.graph.initializer}
    nodes = [n for n in quantizer.model.model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == len(weights) == 36
    for node in nodes:
        b, scales, _ = pack_nbits(rtn_int4(weights[node.output[0]], 32, True))
        np.testing.assert_array_equal(b, numpy_helper.to_array(theirs[node.input[1]]))
        np.testing.assert_array_equal(scales, numpy_helper.to_array(theirs[node.input[2]]).reshape(-1))
