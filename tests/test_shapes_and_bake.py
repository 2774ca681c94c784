"""The ``shapes`` pass (pinning dynamic dims) and ``ort-bake`` (ONNX Runtime's offline optimization)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, fixture_feeds, ort_outputs, run_cli
from onnxsmith.errors import DataError, RecipeError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.registry import create_pass


def _input_dims(path):
    return [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(path)).graph.input]


def test_shapes_pins_dims_and_folds_shape_arithmetic(tmp_path):
    recipe = validate_recipe({"passes": parse_pipeline("shapes{input_ids=1x16,attention_mask=1x16},fuse"),
                              "calibration": {"data": str(FIXTURES / "transformer.npz")}})
    out = tmp_path / "t.onnx"
    report = optimize(str(FIXTURES / "transformer.onnx"), out, recipe, OptimizeOptions(latency_rounds=0))
    assert _input_dims(out) == [[1, 16], [1, 16]]
    assert report.passes[0].counts == {"dims_pinned": 4}
    unpinned = tmp_path / "u.onnx"
    optimize(str(FIXTURES / "transformer.onnx"), unpinned, validate_recipe({"passes": ["fuse"]}), OptimizeOptions(latency_rounds=0))
    ops = lambda p: [n.op_type for n in onnx.load(str(p)).graph.node]  # noqa: E731
    assert len(ops(out)) < len(ops(unpinned)) and ops(out).count("Shape") < ops(unpinned).count("Shape")
    feeds = fixture_feeds("transformer", count=4)
    for ref, got in zip(ort_outputs(FIXTURES / "transformer.onnx", feeds), ort_outputs(out, feeds), strict=True):
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


def test_shapes_without_data_uses_the_pinned_shape_for_random_feeds(tmp_path):
    report = optimize(str(FIXTURES / "cnn.onnx"), tmp_path / "c.onnx", validate_recipe({"passes": parse_pipeline("shapes{input=2x3x32x32}")}),
                      OptimizeOptions(latency_rounds=0))
    assert report.data["evaluation"]["random"] and _input_dims(tmp_path / "c.onnx") == [[2, 3, 32, 32]]


def test_shapes_errors_name_the_problem():
    model_path = str(FIXTURES / "cnn.onnx")
    with pytest.raises(RecipeError, match="no input 'image'.*input"):
        optimize(model_path, "/tmp/never.onnx", validate_recipe({"passes": parse_pipeline("shapes{image=1x3x32x32}")}), OptimizeOptions(latency_rounds=0))
    with pytest.raises(RecipeError, match="fixed size 3 on axis 1"):
        optimize(model_path, "/tmp/never.onnx", validate_recipe({"passes": parse_pipeline("shapes{input=1x4x32x32}")}), OptimizeOptions(latency_rounds=0))
    with pytest.raises(DataError, match="pins .input. to 2x3x32x32 but the evaluation data has shape 1x3x32x32"):
        optimize(model_path, "/tmp/never.onnx", validate_recipe({"passes": parse_pipeline("shapes{input=2x3x32x32}"),
                                                                 "calibration": {"data": str(FIXTURES / "cnn.npz")}}), OptimizeOptions(latency_rounds=0))
    with pytest.raises(RecipeError, match="bad shape"):
        create_pass("shapes", {"input": "1xbig"})


def test_ort_bake_writes_ort_optimized_graph_and_warns(tmp_path):
    out = tmp_path / "baked.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "ort-bake", "--calib", str(FIXTURES / "cnn.npz"),
                     "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "FusedConv" in ops and "BatchNormalization" not in ops  # ONNX Runtime's own fusions, saved
    assert any("runs only on that provider" in w for w in report["warnings"])
    assert report["summary"]["drift"] < 1e-5
