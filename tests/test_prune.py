"""The ``prune`` pass: exact sparsity, exact N:M patterns, Wanda vs magnitude, reports, errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx_ir as ir
import pytest

from conftest import FIXTURES, ort_outputs, run_cli
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.errors import DataError, RecipeError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.registry import create_pass
from prune_models import conv_model, dense_model, minilm_cosine, minilm_or_skip, weights

RECORD_KEYS = {"layer", "op_type", "sparsity", "params_before", "params_after", "macs_before", "macs_after", "error"}


def _dense(tmp_path, rng, k=64, h=48, out=10):
    return dense_model(tmp_path / "dense.onnx", rng.standard_normal((h, k)), rng.standard_normal(h), rng.standard_normal((h, out)))


def _ctx(arrays: dict[str, np.ndarray]) -> Context:
    return Context(calibration=Dataset({k: v[:, None].astype(np.float32) for k, v in arrays.items()}, "test"))


def _run(path, spec: str, ctx: Context | None = None):
    (entry,) = parse_pipeline(spec)
    (name, params), = entry.items()
    model = ir.load(path)
    result = create_pass(name, params).run(model, ctx or Context())
    out = path.with_name(path.stem + ".out.onnx")
    ir.save(model, out)
    return result, out


def _zeros(array: np.ndarray) -> int:
    return int(np.count_nonzero(array == 0))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.77])
def test_magnitude_per_layer_reaches_the_sparsity_exactly(tmp_path, ratio):
    rng = np.random.default_rng(0)
    path = _dense(tmp_path, rng)
    before = weights(path)
    result, out = _run(path, f"prune{{ratio={ratio}}}")
    after = weights(out)
    for name in ("w1", "w2"):
        expected = int(np.floor(ratio * before[name].size + 0.5))
        assert _zeros(after[name]) == expected
        kept = after[name] != 0
        # the smallest magnitudes went: every kept weight is at least as large as every pruned one
        assert np.abs(before[name][kept]).min() >= np.abs(before[name][~kept]).max()
        assert np.array_equal(after[name][kept], before[name][kept])
    records = {r["layer"]: r for r in result.layers}
    assert records["fc1"]["sparsity"] == pytest.approx(int(np.floor(ratio * 48 * 64 + 0.5)) / (48 * 64))
    assert records["fc1"]["params_after"] == 48 * 64 - _zeros(after["w1"]) + 48  # bias kept
    assert np.array_equal(after["b1"], before["b1"])


def test_magnitude_global_reaches_the_total_exactly_with_one_threshold(tmp_path):
    rng = np.random.default_rng(1)
    path = dense_model(tmp_path / "d.onnx", rng.standard_normal((48, 64)) * 0.1, rng.standard_normal(48),
                       rng.standard_normal((48, 10)))  # w1 much smaller than w2: global prunes it harder
    before = weights(path)
    result, out = _run(path, "prune{ratio=0.6,scope=global}")
    after = weights(out)
    total = before["w1"].size + before["w2"].size
    assert _zeros(after["w1"]) + _zeros(after["w2"]) == int(np.floor(0.6 * total + 0.5))
    kept = np.concatenate([np.abs(before[n][after[n] != 0]) for n in ("w1", "w2")])
    pruned = np.concatenate([np.abs(before[n][after[n] == 0]) for n in ("w1", "w2")])
    assert kept.min() >= pruned.max()
    sparsity = {r["layer"]: r["sparsity"] for r in result.layers}
    assert sparsity["fc1"] > 0.65 and sparsity["fc2"] < 0.15  # one threshold: the small layer loses more


def test_wanda_prunes_each_output_row_exactly(tmp_path):
    rng = np.random.default_rng(2)
    path = _dense(tmp_path, rng)
    result, out = _run(path, "prune{method=wanda,ratio=0.25}", _ctx({"x": rng.standard_normal((8, 64))}))
    after = weights(out)
    assert all(_zeros(row) == 16 for row in after["w1"])  # fc1 rows: W1 [48, 64] (transB=1)
    assert all(_zeros(col) == 12 for col in after["w2"].T)  # fc2 rows: W2 [48, 10] columns
    assert {r["sparsity"] for r in result.layers} == {0.25}


def test_wanda_is_closer_than_magnitude_with_outlier_input_channels(tmp_path):
    """Inputs with a few large channels (as in transformers' outlier features): magnitude
    pruning drops the small weights those channels multiply, Wanda keeps them."""
    rng = np.random.default_rng(3)
    path = _dense(tmp_path, rng)
    scale = np.ones(64, dtype=np.float32)
    scale[[3, 17, 40, 51]] = 25.0
    calib = (rng.standard_normal((64, 1, 64)) * scale).astype(np.float32)
    held_out = [{"x": (rng.standard_normal((1, 64)) * scale).astype(np.float32)} for _ in range(32)]
    np.savez(tmp_path / "calib.npz", x=calib)
    errors = {}
    for method in ("magnitude", "wanda"):
        out = tmp_path / f"{method}.onnx"
        recipe = validate_recipe({"passes": [{"prune": {"method": method, "ratio": 0.5}}],
                                  "calibration": {"data": str(tmp_path / "calib.npz")}})
        optimize(str(path), out, recipe, OptimizeOptions(latency_rounds=0))
        ref = np.concatenate([r[0] for r in ort_outputs(path, held_out)])
        got = np.concatenate([r[0] for r in ort_outputs(out, held_out)])
        errors[method] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert errors["wanda"] < 0.8 * errors["magnitude"], errors  # measured: 0.30 vs 0.42


def _groups_ok(before: np.ndarray, after: np.ndarray, n: int, m: int) -> None:
    """Rows of [outputs, reduction] matrices: every m consecutive weights keep at most n
    non-zeros, exactly n where at least n were non-zero, and only original values."""
    b = before.reshape(before.shape[0], -1, m)
    a = after.reshape(after.shape[0], -1, m)
    kept = np.count_nonzero(a, axis=-1)
    assert np.array_equal(kept, np.minimum(np.count_nonzero(b, axis=-1), n))
    assert np.all((a == 0) | (a == b))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_nm_patterns_are_exact_along_the_reduction_axis(tmp_path, n, m):
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((48, 64))
    w1[0, :4] = 0.0  # a group already all zero
    w1[1, 4:7] = 0.0  # a group with one non-zero: kept as is
    path = dense_model(tmp_path / "d.onnx", w1, rng.standard_normal(48), rng.standard_normal((48, 16)))
    before = weights(path)
    result, out = _run(path, f"prune{{method=nm,n={n},m={m},importance=l2}}")
    after = weights(out)
    _groups_ok(before["w1"], after["w1"], n, m)  # Gemm transB=1: rows are outputs already
    _groups_ok(before["w2"].T, after["w2"].T, n, m)  # MatMul [k, n]: reduce along k
    # importance=l2: the n largest magnitudes of each group are the ones kept
    groups = np.abs(before["w1"][2:]).reshape(-1, m)
    kept = after["w1"][2:].reshape(-1, m) != 0
    assert np.all(np.sort(groups, axis=1)[:, m - n:] == np.sort(np.where(kept, groups, -1), axis=1)[:, m - n:])
    assert any(f"{n}:{m} patterns run faster" in note and "tensorrt" in note for note in result.notes)
    assert result.counts["weight_bytes_nm_compressed"] < result.counts["weight_bytes"]


def test_nm_report_follows_the_target_backends_capabilities(tmp_path):
    from onnxsmith.backend import Capabilities

    rng = np.random.default_rng(11)
    path = _dense(tmp_path, rng)
    target = types.SimpleNamespace(name="sparse-gpu", capabilities=Capabilities(gains_from_nm_sparsity=True))
    result, _ = _run(path, "prune{method=nm,importance=l2}", Context(backend=target))
    assert any("the target backend sparse-gpu gains speed from them" in note for note in result.notes)
    assert not any("expect no speedup" in note for note in result.notes)
    result, _ = _run(path, "prune{method=nm,importance=l2}", Context())
    assert any("the target backend cpu runs them as dense weights, no faster" in note for note in result.notes)


def test_nm_on_convs_groups_input_channels_at_each_kernel_position(tmp_path):
    rng = np.random.default_rng(5)
    path = conv_model(tmp_path / "c.onnx", rng)
    before = weights(path)
    result, out = _run(path, "prune{method=nm}", _ctx({"x": rng.standard_normal((4, 3, 8, 8))}))
    after = weights(out)
    for name in ("c2w", "c3w"):  # [o, c/g, kh, kw] -> rows [o, kh, kw, c]
        _groups_ok(np.moveaxis(before[name], 1, -1).reshape(before[name].shape[0], -1),
                   np.moveaxis(after[name], 1, -1).reshape(after[name].shape[0], -1), 2, 4)
    assert np.array_equal(after["c1w"], before["c1w"])  # 3 input channels: not a multiple of 4
    assert any("conv1" in note and "not a multiple of m=4" in note for note in result.notes)
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}]
    assert np.isfinite(ort_outputs(out, feeds)[0][0]).all()


def test_wanda_on_grouped_conv_uses_each_groups_channel_norms(tmp_path):
    """Channel c of group g is input channel g * (C/g) + c: a dead input channel's weights go first."""
    rng = np.random.default_rng(6)
    path = conv_model(tmp_path / "c.onnx", rng)
    model = ir.load(path)
    from onnxsmith.passes.prune.layers import find_layers

    layers = {layer.name: layer for layer in find_layers(model, ("Conv",), ())[0]}
    index = layers["conv2"].feature_index()
    assert index.shape == (8, 36)
    assert set(np.unique(index[:4])) == {0, 1, 2, 3} and set(np.unique(index[4:])) == {4, 5, 6, 7}
    assert np.array_equal(index[0, :4], [0, 1, 2, 3])  # the channel runs fastest along a row


def test_zero_ratio_changes_nothing(tmp_path):
    rng = np.random.default_rng(7)
    path = _dense(tmp_path, rng)
    result, out = _run(path, "prune{ratio=0}")
    assert not result.modified
    feeds = [{"x": rng.standard_normal((3, 64)).astype(np.float32)}]
    assert np.array_equal(ort_outputs(path, feeds)[0][0], ort_outputs(out, feeds)[0][0])


def test_pruning_twice_changes_nothing_more(tmp_path):
    rng = np.random.default_rng(8)
    path = _dense(tmp_path, rng)
    ctx = _ctx({"x": rng.standard_normal((8, 64))})
    _, once = _run(path, "prune{method=wanda}", ctx)
    _, twice = _run(once, "prune{method=wanda}", ctx)
    assert all(np.array_equal(a, b) for a, b in zip(weights(once).values(), weights(twice).values(), strict=True))


def test_transposed_weights_are_pruned_and_the_transpose_removed(tmp_path):
    """The unoptimized transformer fixture feeds MatMuls Transpose(initializer)."""
    model = ir.load(FIXTURES / "transformer.onnx")
    transposes = sum(1 for n in model.graph if n.op_type == "Transpose")
    with np.load(FIXTURES / "transformer.npz") as npz:
        arrays = {k: npz[k][:4] for k in npz.files}
    result = create_pass("prune", {"method": "magnitude", "ratio": 0.5}).run(model, Context())
    assert result.counts["layers_pruned"] == 12
    assert sum(1 for n in model.graph if n.op_type == "Transpose") == transposes - 12
    out = tmp_path / "t.onnx"
    ir.save(model, out)
    for node in model.graph:
        if node.name in {r["layer"] for r in result.layers}:
            assert np.count_nonzero(node.inputs[1].const_value.numpy() == 0) == node.inputs[1].const_value.numpy().size // 2
    feeds = [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(2)]
    assert np.isfinite(ort_outputs(out, feeds)[0][0]).all()


def test_layer_records_and_errors_match_a_numpy_reference(tmp_path):
    rng = np.random.default_rng(9)
    path = _dense(tmp_path, rng)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    result, out = _run(path, "prune{method=wanda,ratio=0.5}", _ctx({"x": x}))
    before, after = weights(path), weights(out)
    ref = x @ before["w1"].T + before["b1"]
    new = x @ after["w1"].T + before["b1"]
    fc1 = next(r for r in result.layers if r["layer"] == "fc1")
    assert set(fc1) >= RECORD_KEYS
    assert fc1["error"] == pytest.approx(np.linalg.norm(new - ref) / np.linalg.norm(ref), rel=1e-4)
    assert fc1["macs_before"] == fc1["macs_after"] == 48 * 64  # per feed (batch 1): dense kernels run every MAC
    assert fc1["nonzero_macs"] == 48 * 32


def test_structured_methods_dispatch_to_their_module(monkeypatch):
    calls = {}
    fake = types.ModuleType("onnxsmith.passes.prune.channel")

    def prune_channels(model, ctx, **kwargs):
        from onnxsmith.pass_base import PassResult

        calls.update(kwargs)
        return PassResult(model, modified=False)

    fake.prune_channels = prune_channels
    monkeypatch.setitem(sys.modules, "onnxsmith.passes.prune.channel", fake)
    model = ir.load(FIXTURES / "mlp.onnx")
    create_pass("prune", {"method": "channel", "ratio": "0.3", "importance": "l2", "allocation": "uniform",
                          "refit": "false"}).run(model, Context())
    assert calls == {"ratio": 0.3, "importance": "l2", "allocation": "uniform", "refit": False}


def test_a_missing_structured_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxsmith.passes.prune.heads", None)  # import raises ModuleNotFoundError
    with pytest.raises(RecipeError, match="method=heads is not available"):
        create_pass("prune", {"method": "heads", "importance": "l2"}).run(ir.load(FIXTURES / "mlp.onnx"), Context())


def test_activation_methods_need_calibration():
    with pytest.raises(DataError, match="needs calibration data"):
        create_pass("prune", {"method": "wanda"}).run(ir.load(FIXTURES / "mlp.onnx"), Context())


def test_cli_wanda_report_has_per_layer_records(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--passes", "prune{method=wanda,ratio=0.5}",
                     "--calib", str(FIXTURES / "mlp.npz"), "--json", "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    record = result.json()["passes"][-1]
    assert record["name"] == "prune" and record["params"]["method"] == "wanda" and not record["exact"]
    assert [r["layer"] for r in record["layers"]] == ["node_linear", "node_linear_1", "node_linear_2"]
    for layer in record["layers"]:
        assert set(layer) >= RECORD_KEYS
        assert layer["sparsity"] == 0.5 and 0 < layer["error"] < 1
        assert layer["params_after"] < layer["params_before"] and layer["macs_before"] > 0
    assert record["counts"]["weight_bytes_deflate_after"] < record["counts"]["weight_bytes_deflate_before"]
    assert any("no speedup" in note for note in record["notes"])


@pytest.mark.parametrize(("spec", "words"), [
    ("prune{ratio=1.5}", "ratio must be at least 0 and below 1"),
    ("prune{method=bogus}", "option 'method'"),
    ("prune{method=wanda,scope=global}", "scope=global applies to method=magnitude only"),
    ("prune{method=nm,n=4,m=4}", "nm needs 1 <= n < m"),
    ("prune{ops=[Conv,LSTM]}", "prune cannot handle op 'LSTM'"),
])
def test_bad_options_are_one_line_errors(spec, words):
    with pytest.raises(RecipeError) as info:
        validate_recipe({"passes": parse_pipeline(spec)}).build_passes()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_cli_bad_option_is_one_line_on_stderr(tmp_path):
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(tmp_path / "o.onnx"), "--passes", "prune{ratio=2}")
    assert result.code == 2
    assert "ratio must be at least 0 and below 1" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.realmodel
def test_minilm_wanda_at_half_is_closer_than_magnitude():
    task, path = minilm_or_skip()
    magnitude, result = minilm_cosine(task, path, "prune", {"method": "magnitude", "ratio": 0.5})
    wanda, result = minilm_cosine(task, path, "prune", {"method": "wanda", "ratio": 0.5})
    assert len(result.layers) == 36 and {r["sparsity"] for r in result.layers} == {0.5}  # Q, K, V, out, 2 FFN x 6
    assert wanda > magnitude + 0.05, (wanda, magnitude)  # 0.84 vs 0.71 on 48 held-out sentences (32 calibration)
