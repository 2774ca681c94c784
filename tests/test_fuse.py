"""The fuse pass on whole models: every fixture stays exact, transformer blocks fuse, options work."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from conftest import FIXTURE_MODELS, FIXTURES, fixture_feeds, ort_outputs
from fuse_helpers import CpuWithoutSlowOps
from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import validate_recipe
from onnxsmith.registry import create_pass


def _fuse_file(name: str, tmp_path, passes=("fuse",)):
    out = tmp_path / f"{name}.onnx"
    recipe = validate_recipe({"passes": list(passes), "calibration": {"data": str(FIXTURES / f"{name}.npz")}})
    report = optimize(str(FIXTURES / f"{name}.onnx"), out, recipe, OptimizeOptions(latency_rounds=0))
    return out, report


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_fuse_keeps_every_fixture_within_1e4_and_is_idempotent(name, tmp_path):
    out, report = _fuse_file(name, tmp_path)
    feeds = fixture_feeds(name, count=6)
    for ref, got in zip(ort_outputs(FIXTURES / f"{name}.onnx", feeds), ort_outputs(out, feeds), strict=True):
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    assert report.summary.nodes["after"] <= report.summary.nodes["before"]
    again = create_pass("fuse").apply(ir.load(out), Context(backend=get_backend("cpu")))
    assert not again.modified and again.counts == {}


def test_transformer_blocks_fuse_into_ort_ops(tmp_path):
    """On ONNX Runtime CPU, whose SkipLayerNormalization is slow, the residual LayerNorms stay
    unfused, on the 2-D view (where ONNX Runtime does not fuse them either), with the
    projection before each one as a Gemm."""
    out, report = _fuse_file("transformer", tmp_path)
    ops = _ops(out)
    assert ops.count("MultiHeadAttention") == 2 and ops.count("BiasGelu") == 2
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 5 and ops.count("Gemm") == 4
    counts = report.passes[0].counts
    assert counts["attention"] >= 2 and counts["residual-2d"] == 4
    assert report.summary.nodes["after"] < report.summary.nodes["before"] / 2.5
    runtime_ops = _ops(_ort_optimized(out, tmp_path))
    assert "SkipLayerNormalization" not in runtime_ops and runtime_ops.count("LayerNormalization") == 5


def test_skip_layernorm_where_the_backend_runs_it_fast(tmp_path):
    model = ir.load(FIXTURES / "transformer.onnx")
    result = create_pass("fuse").apply(model, Context(backend=CpuWithoutSlowOps()))
    ops = [n.op_type for n in result.model.graph]
    assert ops.count("SkipLayerNormalization") == 4 and "residual-2d" not in result.counts
    assert "rule 'residual-2d' skipped: only for backends whose SkipLayerNormalization is slow" in result.notes
    feeds = fixture_feeds("transformer", count=3)
    fused = tmp_path / "fused.onnx"
    ir.save(result.model, fused)
    for ref, got in zip(ort_outputs(FIXTURES / "transformer.onnx", feeds), ort_outputs(fused, feeds), strict=True):
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


def _ort_optimized(path, tmp_path):
    """The graph ONNX Runtime CPU runs for ``path`` after its own optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "runtime.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return tmp_path / "runtime.onnx"


def test_cnn_folds_batchnorm_and_fuses_activations(tmp_path):
    out, report = _fuse_file("cnn", tmp_path)
    ops = _ops(out)
    assert "BatchNormalization" not in ops and ops.count("FusedConv") == 2
    assert report.passes[0].counts["batchnorm"] == 3


def test_disable_keeps_the_disabled_patterns(tmp_path):
    out, _ = _fuse_file("transformer", tmp_path, passes=({"fuse": {"disable": ["attention"]}},))
    ops = _ops(out)
    assert "MultiHeadAttention" not in ops and "BiasGelu" in ops
    out, _ = _fuse_file("cnn", tmp_path, passes=({"fuse": {"disable": ["batchnorm", "conv-activation"]}},))
    assert _ops(out).count("BatchNormalization") == 3 and "FusedConv" not in _ops(out)


def test_an_attention_variant_it_does_not_understand_is_left_alone(tmp_path):
    """Scale the attention probabilities after Softmax (a variant no rule knows): no fusion, exact."""
    model = ir.load(FIXTURES / "transformer.onnx")
    for node in [n for n in model.graph if n.op_type == "Softmax"]:
        probs = node.outputs[0]
        scale = ir.Value(name=f"{node.name}_scale", const_value=ir.tensor(np.float32(0.9)))
        model.graph.register_initializer(scale)
        mul = ir.node("Mul", [probs, scale], name=f"{node.name}_variant")
        probs.replace_all_uses_with(mul.outputs[0])
        mul.replace_input_with(0, probs)
        model.graph.insert_after(node, mul)
    variant = tmp_path / "variant.onnx"
    ir.save(model, variant)
    out = tmp_path / "fused.onnx"
    recipe = validate_recipe({"passes": ["fuse"], "calibration": {"data": str(FIXTURES / "transformer.npz")}})
    optimize(str(variant), out, recipe, OptimizeOptions(latency_rounds=0))
    assert "MultiHeadAttention" not in _ops(out)
    feeds = fixture_feeds("transformer", count=4)
    for ref, got in zip(ort_outputs(variant, feeds), ort_outputs(out, feeds), strict=True):
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)
