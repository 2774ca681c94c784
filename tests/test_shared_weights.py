"""Big models without extra copies of their weights (issue 18): reference sessions that read
our arrays in place, and weight checks that work in chunks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxsmith import shared_weights
from onnxsmith.passes.quantize import float16_plan
from onnxsmith.modelio import session_source
from onnxsmith.runtime import make_session
from onnxsmith.shared_weights import sharing_pays, weights_shared_source


def _two_matmuls(side: int = 256) -> ir.Model:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((side, side), dtype=np.float32) / side**0.5, f"w{i}") for i in range(2)]
    bias = numpy_helper.from_array(np.arange(side, dtype=np.float32), "bias")  # small: stays in the file
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["h"]), helper.make_node("Add", ["h", "bias"], ["a"]),
         helper.make_node("MatMul", ["a", "w1"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, side])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, side])],
        [*weights, bias])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for value in model.graph.initializers.values():  # in memory, as a loaded model's weights are
        value.const_value = ir.tensor(value.const_value.numpy(), name=value.name)
    return model


def test_the_session_file_carries_no_big_weight_and_the_model_is_left_as_it_was(monkeypatch):
    monkeypatch.setattr(shared_weights, "MIN_SHARED_BYTES", 4096)
    model = _two_matmuls()
    before = {name: value.const_value for name, value in model.graph.initializers.items()}
    with weights_shared_source(model) as (path, arrays):
        assert sorted(arrays) == ["w0", "w1"]  # the 1 KB bias is below the 4 KB threshold
        assert all(np.shares_memory(arrays[name], before[name].numpy()) for name in arrays)  # views, not copies
        assert os.path.getsize(path) < 4096  # 2 x 256 KB of weights are not in it
    assert {name: value.const_value for name, value in model.graph.initializers.items()} == before


def test_a_big_model_s_reference_session_reads_the_weights_in_place_and_computes_the_same(monkeypatch):
    model = _two_matmuls()
    feed = {"x": np.random.default_rng(1).standard_normal((2, 256), dtype=np.float32)}
    expected = make_session(model, optimize=False).run(None, feed)[0]
    assert not sharing_pays(model)
    monkeypatch.setattr(shared_weights, "SHARE_FROM_MODEL_BYTES", 1024)
    monkeypatch.setattr(shared_weights, "MIN_SHARED_BYTES", 4096)
    assert sharing_pays(model)
    session = make_session(model, optimize=False)
    arrays, _ = session.onnxsmith_shared_weights
    assert sorted(arrays) == ["w0", "w1"]
    # prepacking off (it would copy the weights) picks another GEMM path: equal within float rounding
    np.testing.assert_allclose(session.run(None, feed)[0], expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_a_model_read_from_files_keeps_its_small_external_tensors_in_the_session(tmp_path, monkeypatch):
    # a model whose weights stay in their files (a big one, loaded) keeps its small tensors
    # (the bias) there too: the session's temporary model file must carry them inline
    path = tmp_path / "model.onnx"
    ir.save(_two_matmuls(), path, external_data="model.onnx.data", size_threshold_bytes=0)
    model = ir.load(path)
    assert sharing_pays(model)  # it reads external files
    monkeypatch.setattr(shared_weights, "MIN_SHARED_BYTES", 4096)
    feed = {"x": np.random.default_rng(1).standard_normal((2, 256), dtype=np.float32)}
    expected = make_session(_two_matmuls(), optimize=False).run(None, feed)[0]
    session = make_session(model, optimize=False)
    assert sorted(session.onnxsmith_shared_weights[0]) == ["w0", "w1"]
    np.testing.assert_allclose(session.run(None, feed)[0], expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    assert isinstance(model.graph.initializers["bias"].const_value, ir.ExternalTensor)  # left as it was


def _fits_whole(array: np.ndarray, precision: str) -> bool:
    """The check as it was, over the whole weight at once (float64 copies of all of it)."""
    ref = np.asarray(array, dtype=np.float64)
    with np.errstate(over="ignore"):
        low = np.asarray(array, dtype=np.float32).astype(float16_plan.LOW_TYPES[precision].numpy()).astype(np.float64)
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(low)):
        return False
    if not finite.any():
        return True
    error = float(np.sqrt(np.mean((low[finite] - ref[finite]) ** 2)))
    return error <= float16_plan.FIT_TOLERANCE[precision] * float(np.sqrt(np.mean(ref[finite] ** 2)))


@pytest.mark.parametrize("values,fits_fp16", [
    (np.linspace(-3, 3, 1001, dtype=np.float32), True),
    (np.full(50, 1e-8, np.float32), False),  # flushed to zero: the relative error is too large
    (np.array([1.0, 7e4, 2.0], np.float32), False),  # 7e4 overflows fp16
    (np.array([np.nan, 1.0, np.inf, 2.0], np.float32), True),  # NaN and inf stay what they are
    (np.zeros(10, np.float32), True),
])
def test_fits_in_chunks_decides_as_the_whole_weight_check_did(monkeypatch, values, fits_fp16):
    monkeypatch.setattr(float16_plan, "_FIT_CHUNK", 7)
    assert float16_plan.fits(values, "fp16") == _fits_whole(values, "fp16") == fits_fp16
    assert float16_plan.fits(values.reshape(-1, 1), "bf16") == _fits_whole(values, "bf16")


def test_a_session_source_unmaps_the_weights_it_wrote_and_they_map_again_when_read(tmp_path):
    path = tmp_path / "model.onnx"
    ir.save(_two_matmuls(), path, external_data="model.onnx.data", size_threshold_bytes=0)
    model = ir.load(path)
    w0, w1 = (model.graph.initializers[name].const_value for name in ("w0", "w1"))
    expected = w0.numpy().copy()
    held = w1.numpy()  # a live view (as a session reading weights in place holds): its map must stay open
    with session_source(model) as source:
        assert w0.raw is None  # written to the session's file: no longer mapped here
        assert w1.raw is not None
        session = make_session(model)  # loads from a file of its own, reads nothing of ours
        assert Path(source).exists()
    np.testing.assert_array_equal(w0.numpy(), expected)  # mapped again on the next read
    np.testing.assert_array_equal(held, w1.numpy())
    feed = {"x": np.ones((2, 256), np.float32)}
    assert session.run(None, feed)[0].shape == (2, 256)
