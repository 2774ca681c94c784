"""Each fuse rule on a tiny graph: where it must fire (checked numerically) and where not."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxscript.rewriter import RewriteRuleSet

import fuse_helpers
from fuse_helpers import const, make, max_abs_difference, rand, run_fuse
from onnxsmith import modelio
from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.passes.fuse.rules_neutral import where_scalar_rules
from onnxsmith.registry import create_pass
from onnxsmith.runtime import make_session
from onnxsmith.shape_inference import infer_shapes


@pytest.fixture(autouse=True)
def _fresh_random_stream():
    fuse_helpers.reseed()


X4 = {"x": [1, 3, 8, 8]}


def _conv_bn(shared_weight: bool = False):
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["y"], name="bn"),
    ]
    outputs = {"y": None}
    if shared_weight:
        nodes.append(helper.make_node("Conv", ["x", "w"], ["z"], name="other_conv", pads=[1, 1, 1, 1]))
        outputs["z"] = None
    inits = [const("w", rand(4, 3, 3, 3)), const("b", rand(4)), const("g", rand(4) + 2), const("beta", rand(4)),
             const("m", rand(4)), const("v", np.abs(rand(4)) + 0.5)]
    return make(nodes, X4, outputs, inits)


def test_batchnorm_folds_into_conv():
    fused = run_fuse(_conv_bn(), {"x": rand(1, 3, 8, 8)}, only=["batchnorm"])
    assert fused.ops == ["Conv"] and fused.result.counts == {"batchnorm": 1}
    assert fused.max_error < 1e-5


def test_batchnorm_refuses_when_the_conv_weight_is_shared():
    fused = run_fuse(_conv_bn(shared_weight=True), {"x": rand(1, 3, 8, 8)}, only=["batchnorm"])
    assert "BatchNormalization" in fused.ops and not fused.result.counts
    assert "rule 'batchnorm' matched at BatchNormalization node 'bn' but refused" in fused.notes and "used by another node" in fused.notes
    assert fused.max_error == 0


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_affine_folds_per_channel_mul_and_add(with_bias):
    conv_inputs = ["x", "w", "b"] if with_bias else ["x", "w"]
    model = make([helper.make_node("Conv", conv_inputs, ["c"]), helper.make_node("Mul", ["s", "c"], ["m"]),
                  helper.make_node("Add", ["m", "o"], ["y"])],
                 X4, {"y": None}, [const("w", rand(4, 3, 3, 3)), const("b", rand(4)), const("s", rand(4, 1, 1)), const("o", rand(1, 4, 1, 1))])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["conv-affine"])
    assert fused.ops == ["Conv"] and fused.result.counts == {"conv-affine": 2}
    assert fused.max_error < 1e-5


def test_conv_affine_refuses_a_spatially_varying_operand():
    model = make([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])],
                 X4, {"y": None}, [const("w", rand(4, 3, 3, 3)), const("s", rand(4, 6, 6))])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["conv-affine"])
    assert fused.ops == ["Conv", "Mul"] and "not a per-channel constant" in fused.notes


@pytest.mark.parametrize("op,operand", [("Mul", rand(5)), ("Add", rand(1, 5)), ("Mul", np.float32(3.0))])
def test_gemm_affine_folds_per_column_constants(op, operand):
    model = make([helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, beta=0.5), helper.make_node(op, ["g", "k"], ["y"])],
                 {"x": [2, 4]}, {"y": None}, [const("w", rand(5, 4)), const("b", rand(5)), const("k", operand)])
    fused = run_fuse(model, {"x": rand(2, 4)}, only=["gemm-affine"])
    assert fused.ops == ["Gemm"] and fused.result.counts == {"gemm-affine": 1}
    assert fused.max_error < 1e-5


def test_gemm_affine_refuses_a_full_matrix_operand():
    model = make([helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Add", ["g", "k"], ["y"])],
                 {"x": [2, 4]}, {"y": None}, [const("w", rand(4, 5)), const("b", rand(5)), const("k", rand(2, 5))])
    fused = run_fuse(model, {"x": rand(2, 4)}, only=["gemm-affine"])
    assert fused.ops == ["Gemm", "Add"]
    assert "not a per-channel constant" in fused.notes


def test_pad_of_zeros_folds_into_conv():
    model = make([helper.make_node("Pad", ["x", "p"], ["xp"]), helper.make_node("Conv", ["xp", "w"], ["y"])],
                 X4, {"y": None}, [const("p", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), const("w", rand(4, 3, 3, 3))])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["pad-conv"])
    assert fused.ops == ["Conv"] and fused.max_error < 1e-5


@pytest.mark.parametrize("rank,fires", [(2, True), (3, False)])
def test_matmul_add_into_gemm_only_in_2d(rank, fires):
    shape = [2, 4] if rank == 2 else [3, 2, 4]
    model = make([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
                 {"x": shape}, {"y": None}, [const("w", rand(4, 5)), const("b", rand(5))])
    fused = run_fuse(model, {"x": rand(*shape)}, only=["matmul-add"])
    assert (fused.ops == ["Gemm"]) is fires
    if not fires:
        assert "Rank of input_a and input_b must be 2" in fused.notes
    assert fused.max_error < 1e-5


def test_noop_removes_zero_pad_and_same_shape_reshape():
    model = make([helper.make_node("Pad", ["x", "p"], ["a"]), helper.make_node("Reshape", ["a", "s"], ["b"]),
                  helper.make_node("Relu", ["b"], ["y"])],
                 X4, {"y": [1, 3, 8, 8]}, [const("p", np.zeros(8, np.int64)), const("s", np.array([1, 3, -1, 8], np.int64))])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["noop"])
    assert fused.ops == ["Relu"] and fused.max_error == 0


def test_transposes_that_cancel_are_removed():
    model = make([helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]), helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
                  helper.make_node("Relu", ["b"], ["y"])], X4, {"y": None})
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["transpose"])
    assert fused.ops == ["Relu"] and fused.max_error == 0


@pytest.mark.parametrize("axes_out,fires", [([1], True), ([2], False)])
def test_squeeze_of_unsqueeze(axes_out, fires):
    model = make([helper.make_node("Unsqueeze", ["x", "a1"], ["u"]), helper.make_node("Squeeze", ["u", "a2"], ["s"]),
                  helper.make_node("Relu", ["s"], ["y"])],
                 {"x": [2, 1, 4]}, {"y": None}, [const("a1", np.array([1], np.int64)), const("a2", np.array(axes_out, np.int64))])
    fused = run_fuse(model, {"x": rand(2, 1, 4)}, only=["squeeze-unsqueeze"])
    assert (fused.ops == ["Relu"]) is fires
    if not fires:
        assert "axes differ" in fused.notes
    assert fused.max_error == 0


def test_consecutive_reshapes_merge():
    model = make([helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"])],
                 {"x": [2, 12]}, {"y": None}, [const("s1", np.array([4, 6], np.int64)), const("s2", np.array([3, 8], np.int64))])
    fused = run_fuse(model, {"x": rand(2, 12)}, only=["reshape"])
    assert fused.ops == ["Reshape"] and fused.max_error == 0


@pytest.mark.parametrize("act,extra_inputs,inits", [
    ("Relu", [], []),
    ("Clip", ["lo", "hi"], [const("lo", np.float32(0)), const("hi", np.float32(6))]),
    ("LeakyRelu", [], []),
])
def test_conv_activation_into_fused_conv(act, extra_inputs, inits):
    model = make([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node(act, ["c", *extra_inputs], ["y"])],
                 X4, {"y": None}, [const("w", rand(4, 3, 3, 3)), const("b", rand(4)), *inits])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["conv-activation"])
    assert fused.ops == ["FusedConv"] and fused.max_error < 1e-5


def test_conv_activation_refuses_when_the_conv_output_is_used_twice():
    model = make([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                 X4, {"y": None, "c": None}, [const("w", rand(4, 3, 3, 3))])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, only=["conv-activation"])
    assert fused.ops == ["Conv", "Relu"] and "other uses" in fused.notes


def test_backend_rules_are_skipped_without_a_backend_that_has_the_kernel():
    model = make([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                 X4, {"y": None}, [const("w", rand(4, 3, 3, 3))])
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8)}, backend=None, only=["conv-activation"])
    assert fused.ops == ["Conv", "Relu"]
    assert "rule 'conv-activation' skipped: backend 'none' has no kernel for FusedConv" in fused.notes


def test_silu_into_quick_gelu():
    model = make([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])], X4, {"y": None})
    fused = run_fuse(model, {"x": rand(1, 3, 8, 8, scale=4)}, only=["silu"])
    assert fused.ops == ["QuickGelu"] and fused.max_error < 1e-5


def test_softmax_moved_to_the_last_axis_merges_with_the_transpose_before_it():
    # YOLOv8's box head: Transpose(0, 2, 1, 3), then Softmax over axis 1: one Transpose each side
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]), helper.make_node("Softmax", ["t"], ["y"], axis=1)]
    model = make(nodes, {"x": [1, 4, 16, 20]}, {"y": None})
    fused = run_fuse(model, {"x": rand(1, 4, 16, 20, scale=3)}, only=["softmax-last-axis", "transpose"])
    assert fused.ops == ["Transpose", "Softmax", "Transpose"] and fused.max_error < 1e-6
    softmax = next(n for n in fused.result.model.graph if n.op_type == "Softmax")
    assert softmax.attributes["axis"].as_int() == -1


def _decomposed_layernorm(opset: int):
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=1) if opset >= 18 else helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2", "axes"], ["var"], keepdims=1) if opset >= 18 else helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["ng"]),
        helper.make_node("Add", ["ng", "beta"], ["y"]),
    ]
    inits = [const("two", np.float32(2)), const("eps", np.float32(1e-5)), const("gamma", rand(16)), const("beta", rand(16))]
    if opset >= 18:
        inits.append(const("axes", np.array([-1], np.int64)))
    return make(nodes, {"x": [2, 5, 16]}, {"y": None}, inits, opset=opset)


def test_layernorm_fusion_at_opset_18():
    fused = run_fuse(_decomposed_layernorm(18), {"x": rand(2, 5, 16)}, only=["layernorm"])
    assert fused.ops == ["LayerNormalization"] and fused.max_error < 1e-4


def test_layernorm_below_opset_17_upgrades_the_opset_or_gives_a_hint():
    """Its ReduceMeans take axes as an attribute until opset 18 (rules_layernorm.py): the
    upgrade to 17 keeps that form, and the rule for it fuses there."""
    fused = run_fuse(_decomposed_layernorm(13), {"x": rand(2, 5, 16)}, only=["layernorm"])
    assert fused.ops == ["LayerNormalization"] and fused.max_error < 1e-4
    assert fused.result.counts["opset_upgraded_to"] == 17
    kept = run_fuse(_decomposed_layernorm(13), {"x": rand(2, 5, 16)}, only=["layernorm"], upgrade_opset=False)
    assert "LayerNormalization" not in kept.ops
    assert "needs ai.onnx opset 17, the model has 13" in kept.notes


def _hardswish_model(opset: int) -> onnx.ModelProto:
    # x * HardSigmoid(x, 1/6, 0.5) is HardSwish, an op of opset 14 (PP-OCR cls at opset 11 has 18 of them)
    nodes = [helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5, name="hs"), helper.make_node("Mul", ["x", "h"], ["y"], name="mul")]
    return make(nodes, X4, {"y": None}, opset=opset)


def test_fuse_upgrades_the_opset_where_that_unlocks_a_rule_whose_pattern_the_model_has():
    fused = run_fuse(_hardswish_model(13), {"x": rand(1, 3, 8, 8, scale=4)}, only=["hardswish"])
    assert fused.ops == ["HardSwish"] and fused.max_error < 1e-5
    assert fused.result.model.opset_imports[""] == 14 and fused.result.model.ir_version >= 7
    assert fused.result.counts["opset_upgraded_to"] == 14 and fused.result.warnings == []
    assert "converted from ai.onnx opset 13 to 14 to run rule(s) 'hardswish' (1 match(es))" in fused.result.notes[0]


@pytest.mark.parametrize("opset", [13, 14])
def test_a_fusion_an_old_opset_blocks_is_a_warning_where_the_upgrade_is_off(opset):
    fused = run_fuse(_hardswish_model(opset), {"x": rand(1, 3, 8, 8, scale=4)}, only=["hardswish"], upgrade_opset=False)
    assert fused.result.model.opset_imports[""] == opset
    if opset == 14:
        assert fused.ops == ["HardSwish"] and fused.result.warnings == []
    else:
        assert fused.ops == ["HardSigmoid", "Mul"]
        (warning,) = fused.result.warnings  # on the terminal, not only in a note of the report
        assert warning.startswith("1 match(es) of rule 'hardswish'") and "needs ai.onnx opset 14 and the model is at 13" in warning
        assert "drop upgrade_opset=false" in warning


def test_an_upgrade_the_converter_cannot_do_is_a_warning_and_the_model_stays_as_it_was(monkeypatch):
    from onnxsmith.passes.fuse import fuse_pass

    def refuse(model, version):
        raise RuntimeError("No Adapter For HardSigmoid\nmore lines")

    monkeypatch.setattr(fuse_pass, "convert_opset", refuse)
    fused = run_fuse(_hardswish_model(13), {"x": rand(1, 3, 8, 8, scale=4)}, only=["hardswish"])
    assert fused.ops == ["HardSigmoid", "Mul"] and fused.result.model.opset_imports[""] == 13
    assert "version converter failed from 13 to 14: No Adapter For HardSigmoid" in fused.result.notes[0]
    (warning,) = fused.result.warnings
    assert "the upgrade was not possible" in warning


def _hardswish_matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    proto = _hardswish_model(13)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(weight, "w"))
    proto.graph.node.append(helper.make_node("MatMul", ["y", "w"], ["z"], name="mm"))
    proto.graph.output[0].name = "z"
    return proto


def test_the_opset_upgrade_keeps_weights_in_external_files_readable_from_their_folder(tmp_path, monkeypatch):
    """The converter works on protobuf, where a weight left in its file is a reference with no
    folder (the class of bug int8 had): the upgraded model must still read it, from its file."""
    weight = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    proto = _hardswish_matmul_model(weight)
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    monkeypatch.setattr(modelio, "EXTERNAL_DATA_THRESHOLD", 64)  # leave them in their file, as above 1.5 GiB
    model, _ = modelio.load_onnx(path)
    assert modelio.reads_external_files(model)
    monkeypatch.chdir(tmp_path.parent)  # a reference resolved against the working folder would not be found
    result = create_pass("fuse", {"only": ["hardswish"]}).apply(model, Context(backend=get_backend("cpu")))
    assert result.model.opset_imports[""] == 14 and "HardSwish" in {n.op_type for n in result.model.graph}
    kept = result.model.graph.initializers["w"].const_value
    assert isinstance(kept, ir.ExternalTensor) and np.array_equal(kept.numpy(), weight)


def test_no_opset_upgrade_through_protobuf_for_big_weights_in_memory(monkeypatch):
    from onnxsmith.passes.fuse import fuse_pass

    monkeypatch.setattr(fuse_pass, "UPGRADE_MAX_BYTES", 0)
    model = ir.from_proto(_hardswish_matmul_model(np.ones((8, 8), np.float32)))
    result = create_pass("fuse", {"only": ["hardswish"]}).apply(model, Context(backend=get_backend("cpu")))
    assert result.model.opset_imports[""] == 13 and "HardSwish" not in {n.op_type for n in result.model.graph}
    assert "copy the weights through protobuf" in result.notes[0] and len(result.warnings) == 1


def test_no_opset_warning_where_the_model_has_no_blocked_pattern():
    model = make([helper.make_node("Relu", ["x"], ["y"])], X4, {"y": None}, opset=13)
    assert run_fuse(model, {"x": rand(1, 3, 8, 8)}).result.warnings == []


def _if_model(conv_inside: bool):
    """BatchNorm inside an If branch, with its Conv inside too (fusable) or outside (not)."""
    bn_inputs = ["c", "g", "beta", "m", "v"]
    branch_nodes = [helper.make_node("BatchNormalization", bn_inputs, ["t"])]
    if conv_inside:
        branch_nodes.insert(0, helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]))
    then_branch = helper.make_graph(branch_nodes, "then", [], [helper.make_tensor_value_info("t", 1, [1, 3, 8, 8])])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, [1, 3, 8, 8])])
    nodes = [] if conv_inside else [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    # The condition depends on the input, so constant folding cannot inline the If.
    nodes += [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0), helper.make_node("Greater", ["total", "zero"], ["cond"]),
              helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    inits = [const("w", rand(3, 3, 3, 3)), const("g", rand(3) + 2), const("beta", rand(3)), const("m", rand(3)),
             const("v", np.abs(rand(3)) + 0.5), const("zero", np.float32(-1e9))]
    return make(nodes, X4, {"y": [1, 3, 8, 8]}, inits)


def test_rules_fire_inside_if_branches():
    fused = run_fuse(_if_model(conv_inside=True), {"x": rand(1, 3, 8, 8)}, only=["batchnorm"])
    assert fused.result.counts == {"batchnorm": 1} and fused.max_error < 1e-5


def test_no_fusion_across_a_subgraph_boundary():
    fused = run_fuse(_if_model(conv_inside=False), {"x": rand(1, 3, 8, 8)}, only=["batchnorm"])
    assert not fused.result.counts and fused.max_error == 0


def test_unknown_rule_names_are_refused():
    from onnxsmith.errors import RecipeError
    from onnxsmith.registry import create_pass

    with pytest.raises(RecipeError, match="unknown fuse rule 'atention'.*attention"):
        create_pass("fuse", {"disable": ["atention"]})


def test_unsqueeze_of_squeeze_cancels():
    model = make([helper.make_node("Squeeze", ["x", "a"], ["s"]), helper.make_node("Unsqueeze", ["s", "a"], ["u"]),
                  helper.make_node("Relu", ["u"], ["y"])],
                 {"x": [2, 1, 4]}, {"y": None}, [const("a", np.array([-2], np.int64))])
    fused = run_fuse(model, {"x": rand(2, 1, 4)}, only=["squeeze-unsqueeze"])
    assert fused.ops == ["Relu"] and fused.max_error == 0


def _loop_model():
    """Three iterations of ``y = BatchNorm(Conv(y))`` in a Loop body; weights from the outer graph."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Conv", ["y_in", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["y_out"])],
        "body",
        [helper.make_tensor_value_info("i", 7, []), helper.make_tensor_value_info("cond_in", 9, []),
         helper.make_tensor_value_info("y_in", 1, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("cond_out", 9, []), helper.make_tensor_value_info("y_out", 1, [1, 3, 8, 8])],
    )
    nodes = [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)]
    inits = [const("trips", np.array(3, np.int64)), const("keep_going", np.array(True)), const("w", rand(3, 3, 3, 3) * 0.3),
             const("g", rand(3) + 2), const("beta", rand(3)), const("m", rand(3)), const("v", np.abs(rand(3)) + 0.5)]
    return make(nodes, X4, {"y": [1, 3, 8, 8]}, inits)


def test_rules_fire_inside_loop_bodies():
    fused = run_fuse(_loop_model(), {"x": rand(1, 3, 8, 8)}, only=["batchnorm"])
    assert fused.result.counts == {"batchnorm": 1} and fused.ops == ["Loop"]
    body = next(iter(fused.result.model.graph)).attributes["body"].as_graph()
    assert sorted(n.op_type for n in body) == ["Conv", "Identity"]
    assert fused.max_error < 1e-4


def _attention_with_packed_weight(sizes: list[int]):
    """An ORT Attention whose packed weight is a Concat of three initializers, as the fusion leaves it."""
    hidden = 8
    nodes = [helper.make_node("Concat", ["wq", "wk", "wv"], ["w"], axis=1),
             helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2, qkv_hidden_sizes=sizes)]
    inits = [const("wq", rand(hidden, sizes[0])), const("wk", rand(hidden, sizes[1])), const("wv", rand(hidden, sizes[2])),
             const("b", rand(sum(sizes)))]
    return make(nodes, {"x": [1, 4, hidden]}, {"y": [1, 4, sizes[2]]}, inits)


@pytest.mark.parametrize("sizes,dropped", [([8, 8, 8], True), ([8, 8, 4], False)])
def test_attention_packed_weight_folded_and_equal_sizes_dropped(sizes, dropped):
    import onnx_ir as ir

    from onnxsmith.passes.fuse.rules_ort import drop_equal_qkv_sizes
    from onnxsmith.passes.fuse.sweep import fold_initializer_concats

    proto = _attention_with_packed_weight(sizes)
    model = ir.from_proto(proto)
    assert fold_initializer_concats(model) == 1
    assert drop_equal_qkv_sizes(model) == int(dropped)
    (attention,) = list(model.graph)
    assert attention.inputs[1].is_initializer() and attention.inputs[1].const_value.shape == (8, sum(sizes))
    assert ("qkv_hidden_sizes" in attention.attributes) is not dropped
    rewritten = ir.to_proto(model)
    assert max_abs_difference(proto, rewritten, {"x": rand(1, 4, 8)}) == 0


def _where(cond_shape, zero_shape):
    nodes = [helper.make_node("IsNaN", ["x"], ["nan"]), helper.make_node("Where", ["nan", "zero", "x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, cond_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.zeros(zero_shape, np.float32), "zero")])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_one_element_where_branch_becomes_a_scalar_only_where_it_does_not_set_the_rank():
    """Attention's NaN guard Where(IsNaN(p), [0.0], p): onnxscript's SDPA pattern wants the 0.0 as a scalar."""
    model = _where([2, 3], [1])
    infer_shapes(model)
    x = np.array([[1, np.nan, 2], [np.nan, 3, 4]], np.float32)
    before = make_session(model).run(None, {"x": x})[0]
    assert RewriteRuleSet(where_scalar_rules).apply_to_model(model) == 1
    where = next(n for n in model.graph if n.op_type == "Where")
    assert ir.convenience.get_const_tensor(where.inputs[1]).shape.dims == ()
    assert np.array_equal(make_session(model).run(None, {"x": x})[0], before)
    scalar_input = _where([], [1])  # the [1] makes the output [1]: a scalar would make it 0-d
    infer_shapes(scalar_input)
    assert RewriteRuleSet(where_scalar_rules).apply_to_model(scalar_input) == 0
