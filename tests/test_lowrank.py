"""The ``lowrank`` pass: exact at full rank, parameters as computed, activation-aware SVD wins."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from conftest import FIXTURES, ort_outputs, run_cli
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.errors import DataError, RecipeError
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.registry import create_pass
from prune_models import matmul_model, minilm_cosine, minilm_or_skip, weights

RECORD_KEYS = {"layer", "op_type", "rank", "params_before", "params_after", "macs_before", "macs_after", "error"}


def _ctx(x: np.ndarray) -> Context:
    return Context(calibration=Dataset({"x": x[:, None].astype(np.float32)}, "test"))


def _lowrank(path, params: dict, ctx: Context):
    model = ir.load(path)
    result = create_pass("lowrank", params).run(model, ctx)
    out = path.with_name(path.stem + ".lowrank.onnx")
    ir.save(model, out)
    return result, out


def _low_rank_weight(rng, k: int, n: int, rank: int) -> np.ndarray:
    return rng.standard_normal((k, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(rank)


def _params(path) -> int:
    return sum(w.size for w in weights(path).values())


@pytest.mark.parametrize("method", ["svd", "asvd"])
def test_exact_when_the_weight_has_the_rank_kept(tmp_path, method):
    rng = np.random.default_rng(0)
    path = matmul_model(tmp_path / "m.onnx", _low_rank_weight(rng, 64, 48, 4))
    x = rng.standard_normal((8, 16, 64))
    result, out = _lowrank(path, {"energy": "1.0", "method": method}, _ctx(x))
    (record,) = result.layers
    shift = 48 if method == "asvd" else 0  # asvd centers: the mean's output goes to a bias
    assert record["rank"] == 4 and record["params_after"] == 4 * (64 + 48) + shift
    assert record["error"] < 1e-5
    model = ir.load(out)
    assert [n.op_type for n in model.graph] == ["MatMul", "MatMul"] + (["Add"] if shift else [])
    assert model.graph.node(1).name == "proj" and model.graph.outputs[0].name == "y"
    feeds = [{"x": rng.standard_normal((2, 5, 64)).astype(np.float32)}]
    np.testing.assert_allclose(ort_outputs(out, feeds)[0][0], ort_outputs(path, feeds)[0][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_keeps_bias_and_layout(tmp_path, trans_b):
    rng = np.random.default_rng(1)
    path = matmul_model(tmp_path / "g.onnx", _low_rank_weight(rng, 40, 32, 3), rng.standard_normal(32), gemm_trans_b=trans_b)
    result, out = _lowrank(path, {"energy": "1.0", "method": "svd"}, Context())
    assert result.layers[0]["rank"] == 3 and result.layers[0]["params_after"] == 3 * 72 + 32
    feeds = [{"x": rng.standard_normal((4, 40)).astype(np.float32)}]
    np.testing.assert_allclose(ort_outputs(out, feeds)[0][0], ort_outputs(path, feeds)[0][0], rtol=1e-4, atol=1e-4)
    assert result.layers[0]["error"] is None  # no calibration data: not measured


def test_asvd_folds_the_shift_into_the_gemm_bias(tmp_path):
    rng = np.random.default_rng(5)
    path = matmul_model(tmp_path / "g.onnx", _low_rank_weight(rng, 40, 32, 3), rng.standard_normal(32), gemm_trans_b=True)
    x = rng.standard_normal((16, 4, 40)) + 3.0
    result, out = _lowrank(path, {"energy": "1.0"}, Context(calibration=Dataset({"x": x.astype(np.float32)}, "t")))
    assert [n.op_type for n in ir.load(out).graph] == ["MatMul", "Gemm"]  # no Add: the shift went into C
    assert result.layers[0]["params_after"] == 3 * 72 + 32
    feeds = [{"x": rng.standard_normal((4, 40)).astype(np.float32) + 3.0}]
    np.testing.assert_allclose(ort_outputs(out, feeds)[0][0], ort_outputs(path, feeds)[0][0], rtol=1e-4, atol=1e-4)


def test_centering_spends_no_rank_on_a_common_offset(tmp_path):
    """Inputs = a large shared offset + variation along two directions (as transformer
    activations): at rank 2, uncentered asvd spends one rank on the offset and misses one
    direction; centered, both ranks go to the variation and the offset's output is exact in a bias."""
    rng = np.random.default_rng(6)
    path = matmul_model(tmp_path / "m.onnx", rng.standard_normal((64, 64)))
    offset, directions = rng.standard_normal(64) * 10.0, rng.standard_normal((2, 64))

    def inputs(count):
        z = rng.standard_normal((count, 16, 2)) * [3.0, 2.0]
        return (offset + z @ directions + 0.05 * rng.standard_normal((count, 16, 64))).astype(np.float32)

    held_out = [{"x": inputs(1)} for _ in range(8)]
    ref = np.concatenate([r[0] for r in ort_outputs(path, held_out)])
    errors = {}
    for center in ("true", "false"):
        result, out = _lowrank(path, {"param_budget": "0.09", "center": center}, _ctx(inputs(16)))
        assert result.layers[0]["rank"] == 2
        got = np.concatenate([r[0] for r in ort_outputs(out, held_out)])
        errors[center] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert errors["true"] < 0.1 * errors["false"], errors  # measured: 0.004 vs 0.13


def test_parameters_saved_are_as_computed(tmp_path):
    rng = np.random.default_rng(2)
    path = matmul_model(tmp_path / "m.onnx", rng.standard_normal((96, 64)))
    x = rng.standard_normal((8, 16, 96))
    result, out = _lowrank(path, {"param_budget": "0.4"}, _ctx(x))
    (record,) = result.layers
    r = record["rank"]
    assert record["params_before"] == 96 * 64 and record["params_after"] == r * (96 + 64) + 64  # + the shift's bias
    assert record["params_after"] <= 0.4 * 96 * 64 < (r + 1) * (96 + 64) + 64  # the budget, used to the last rank that fits
    assert result.counts["params_saved"] == 96 * 64 - r * 160 - 64 == _params(path) - _params(out)
    tokens = 16  # per feed: one sample of [1, 16, 96]
    assert record["macs_before"] == tokens * 96 * 64 and record["macs_after"] == tokens * r * (96 + 64)


def test_activation_aware_svd_beats_plain_svd_on_correlated_inputs(tmp_path):
    """Inputs living near a few directions (correlated features): whitening by X^T X spends
    the rank where the inputs are, plain SVD where the weights are large."""
    rng = np.random.default_rng(3)
    k, n = 64, 64
    path = matmul_model(tmp_path / "m.onnx", rng.standard_normal((k, n)))
    mix = rng.standard_normal((k, k)) * np.exp(-np.arange(k) / 6.0)[:, None]  # a decaying spectrum

    def inputs(count):
        return (rng.standard_normal((count, 16, k)) @ mix).astype(np.float32)

    held_out = [{"x": inputs(1)} for _ in range(16)]
    ref = np.concatenate([r[0] for r in ort_outputs(path, held_out)])
    errors = {}
    for method in ("svd", "asvd"):
        result, out = _lowrank(path, {"param_budget": "0.25", "method": method}, _ctx(inputs(16)))
        # the same budget: asvd's shift bias (64 parameters) costs it one rank
        assert result.layers[0]["rank"] == {"svd": 8, "asvd": 7}[method]
        got = np.concatenate([r[0] for r in ort_outputs(out, held_out)])
        errors[method] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert errors["asvd"] < 0.5 * errors["svd"], errors  # measured: 0.23 vs 0.87


def test_running_twice_changes_nothing_more(tmp_path):
    rng = np.random.default_rng(7)
    path = matmul_model(tmp_path / "m.onnx", rng.standard_normal((64, 48)))
    ctx = _ctx(rng.standard_normal((8, 16, 64)))
    _, once = _lowrank(path, {"param_budget": "0.5"}, ctx)
    result, twice = _lowrank(once, {"param_budget": "0.5"}, ctx)
    assert not result.modified and sum(1 for note in result.notes if "already a low-rank factor" in note) == 2
    assert weights(once).keys() == weights(twice).keys()


def test_a_rank_that_does_not_pay_off_leaves_the_layer_dense(tmp_path):
    rng = np.random.default_rng(4)
    path = matmul_model(tmp_path / "m.onnx", rng.standard_normal((32, 32)))
    result, out = _lowrank(path, {"energy": "0.99", "method": "svd"}, Context())
    assert not result.modified and result.counts == {"layers_factored": 0, "layers_dense": 1}
    assert any("does not pay off" in note for note in result.notes)
    assert [n.op_type for n in ir.load(out).graph] == ["MatMul"]


def test_asvd_needs_calibration():
    with pytest.raises(DataError, match="needs calibration data"):
        create_pass("lowrank", {}).run(ir.load(FIXTURES / "mlp.onnx"), Context())


@pytest.mark.parametrize(("spec", "words"), [
    ("lowrank{energy=0}", "energy must be above 0 and at most 1"),
    ("lowrank{param_budget=1}", "param_budget must be above 0 and below 1"),
    ("lowrank{ops=[Conv]}", "lowrank cannot factor op 'Conv'"),
    ("lowrank{method=qr}", "option 'method'"),
])
def test_bad_options_are_one_line_errors(spec, words):
    with pytest.raises(RecipeError) as info:
        validate_recipe({"passes": parse_pipeline(spec)}).build_passes()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_cli_lowrank_report(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--passes", "lowrank{energy=0.9}",
                     "--calib", str(FIXTURES / "mlp.npz"), "--json", "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    report = result.json()
    record = report["passes"][-1]
    assert record["name"] == "lowrank" and record["counts"]["layers_factored"] == len(record["layers"]) > 0
    for layer in record["layers"]:
        assert set(layer) >= RECORD_KEYS
        assert layer["params_after"] < layer["params_before"] and layer["macs_after"] < layer["macs_before"]
        assert 0 < layer["error"] < 1
    saved = sum(r["params_before"] - r["params_after"] for r in record["layers"])
    assert record["counts"]["params_saved"] == saved == report["summary"]["params"]["before"] - report["summary"]["params"]["after"]


@pytest.mark.realmodel
def test_minilm_asvd_keeps_embeddings_far_closer_than_svd():
    task, path = minilm_or_skip()
    cosines = {}
    for method in ("svd", "asvd"):
        cosines[method], result = minilm_cosine(task, path, "lowrank", {"param_budget": 0.7, "method": method})
        assert result.counts["layers_factored"] == 36
        assert result.counts["params_saved"] == sum(r["params_before"] - r["params_after"] for r in result.layers) > 3_000_000
    assert cosines["asvd"] > cosines["svd"] + 0.1, cosines  # 0.79 vs 0.52 (32 calibration, 48 held-out sentences)
