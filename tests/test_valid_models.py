"""Valid models of unusual shapes run end to end (issue 18): string, empty, sequence and
infinite outputs, no nodes, an endless Loop, old opsets and IR versions, wrong declared shapes.
The ONNX backend corpus (test_onnx_corpus.py) covers these on the spec's own cases."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from onnxsmith.metrics import compare_outputs, default_drift, tolerance_for, within_tolerance
from onnxsmith.opset_forms import legalize_opset_forms
from onnxsmith.shape_inference import infer_shapes


def _empty_output_model(path):
    """A second output sliced to zero length ([1, 0]): valid, and nothing to measure on it."""
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Slice", ["y", "s", "e"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 0])],
                              [numpy_helper.from_array(np.array([0], np.int64), "s"), numpy_helper.from_array(np.array([0], np.int64), "e")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _string_output_model(path):
    nodes = [helper.make_node("Identity", ["s"], ["t"]), helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("s", TensorProto.STRING, [1]),
                                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("t", TensorProto.STRING, [1]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("build", [_empty_output_model, _string_output_model])
def test_a_model_with_string_or_empty_outputs_is_optimized(tmp_path, build):
    source = tmp_path / "m.onnx"
    build(source)
    result = run_cli("optimize", str(source), "-o", str(tmp_path / "out.onnx"), "-p", "cleanup,fuse", "--latency-rounds", "0",
                     "--profile-runs", "0", "--json")
    assert result.code == 0, result.stderr
    outputs = result.json()["summary"]["outputs"]
    assert all(o["max_abs"] == 0 and o["cosine"] == 1 for o in outputs.values())


def test_outputs_without_a_numeric_error_compare_as_equal_or_not():
    same = [{"t": np.array(["a", "b"]), "z": np.zeros((1, 0), np.float32)}]
    changed = [{"t": np.array(["a", "c"]), "z": np.zeros((1, 0), np.float32)}]
    assert compare_outputs(same, same)["t"].cosine == 1.0 and compare_outputs(same, same)["z"].max_abs == 0.0
    assert compare_outputs(same, changed)["t"].max_abs == math.inf and default_drift(same, changed) == math.inf
    assert default_drift(same, same) == 0.0
    assert within_tolerance(same, same, rtol=1e-4, atol=1e-5) is None
    assert "(non-numeric) changed" in within_tolerance(same, changed, rtol=1e-4, atol=1e-5)


def test_a_graph_with_no_nodes_keeps_its_interface(tmp_path):
    """output = input: onnxscript's optimizer renames the input to x_orig behind an Identity."""
    graph = helper.make_graph([], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])])
    source = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    out = tmp_path / "out.onnx"
    result = run_cli("optimize", str(source), "-o", str(out), "-p", "cleanup,fuse", "--latency-rounds", "0", "--profile-runs", "0")
    assert result.code == 0, result.stderr
    written = onnx.load(out)
    assert [v.name for v in written.graph.input] == ["x"] and [v.name for v in written.graph.output] == ["x"]


def _endless_loop_model(path):
    """A Loop with no trip count whose condition stays true: it never ends."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([1.0], np.float32), "one")])
    graph = helper.make_graph([helper.make_node("Loop", ["", "cond", "x"], ["y"], body=body)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(np.array(True), "cond")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_model_that_never_ends_is_stopped_after_the_run_timeout(tmp_path):
    source = tmp_path / "forever.onnx"
    _endless_loop_model(source)
    out = tmp_path / "out" / "o.onnx"
    for args in (("optimize", str(source), "-o", str(out)), ("profile", str(source), "--runs", "2")):
        result = run_cli(*args, "--run-timeout", "2")
        assert result.code == 2, result.stderr
        assert result.stderr.strip() == ("error: the model ran longer than 2 s on one input and was stopped (a Loop that never "
                                         "ends?); check the model, or raise --run-timeout")
    assert not out.parent.exists()


def test_a_model_that_never_ends_is_stopped_before_openvino_runs_it(tmp_path):
    """OpenVINO cannot stop a running inference, so a model with a Loop runs once on ONNX
    Runtime under the time limit first; without that, ``profile --backend openvino`` hung."""
    from onnxsmith.backend import available_backends

    ok, why = available_backends()["openvino"]().available()
    if not ok:
        pytest.skip(why)
    source = tmp_path / "forever.onnx"
    _endless_loop_model(source)
    result = run_cli("profile", str(source), "--backend", "openvino", "--runs", "2", "--run-timeout", "2")
    assert result.code == 2, result.stderr
    assert "ran longer than 2 s on one input and was stopped" in result.stderr


def test_axes_given_as_an_input_go_back_to_the_attribute_an_old_opset_expects():
    nodes = [helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Unsqueeze", ["x", "axes"], ["y"]), helper.make_node("ReduceMean", ["y", "axes"], ["z"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]))
    assert legalize_opset_forms(model) == []
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [(n.op_type, len(n.input), [a.name for a in n.attribute]) for n in proto.graph.node] == [
        ("Unsqueeze", 1, ["axes"]), ("ReduceMean", 1, ["keepdims", "axes"])]


def test_shape_inference_keeps_a_sequence_returned_by_an_if():
    def branch(name, count):
        return helper.make_graph([helper.make_node("SequenceConstruct", ["x"] * count, [f"{name}_seq"])], name, [],
                                 [helper.make_tensor_sequence_value_info(f"{name}_seq", TensorProto.FLOAT, None)])

    nodes = [helper.make_node("If", ["c"], ["s"], then_branch=branch("then", 1), else_branch=branch("else", 2)),
             helper.make_node("SequenceLength", ["s"], ["n"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    infer_shapes(model)
    assert isinstance(model.graph.node(0).outputs[0].type, ir.SequenceType)


def test_a_float16_output_is_compared_within_its_own_ulps():
    ref = {"y": np.array([0.75], np.float16)}
    one_ulp = {"y": np.nextafter(np.float16(0.75), np.float16(1))[None]}
    assert within_tolerance([ref], [one_ulp], rtol=1e-4, atol=1e-5) is None
    assert within_tolerance([ref], [{"y": np.array([0.7], np.float16)}], rtol=1e-4, atol=1e-5) is not None
    assert tolerance_for(np.dtype(np.float32), 1e-4, 1e-5) == (1e-4, 1e-5)


def test_reshape_allowzero_is_dropped_before_opset_14_where_it_changes_nothing():
    def model(shape):
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(np.array(shape, np.int64), "shape")])
        return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]))

    fine = model([3, 2])
    assert legalize_opset_forms(fine) == [] and "allowzero" not in fine.graph.node(0).attributes
    zero = model([0, 6])  # allowzero=1 with a 0 dim means an empty tensor; opset 12 would copy the dim instead
    assert legalize_opset_forms(zero) == [zero.graph.node(0).name or "Reshape"]


def test_a_declared_output_shape_the_model_contradicts_is_relaxed_and_reported(tmp_path):
    """ddddocr's CRNN declares [1, seqlen] and returns [T, 1, classes]: the folder trusted the
    declaration and rewrote the last Reshape to it, changing the output."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seqlen"])],
                              [numpy_helper.from_array(np.array([3, 1, 2], np.int64), "shape")])
    source = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    out = tmp_path / "out.onnx"
    result = run_cli("optimize", str(source), "-o", str(out), "-p", "cleanup,fuse", "--latency-rounds", "0", "--profile-runs", "0", "--json")
    assert result.code == 0, result.stderr
    assert any("declared ['1', 'seqlen'] but the model returns [3, 1, 2]" in w for w in result.json()["warnings"])
    dims = onnx.load(out).graph.output[0].type.tensor_type.shape.dim  # dynamic, or what inference found after the fix
    assert [d.dim_value if d.HasField("dim_value") else None for d in dims] in ([None] * 3, [3, 1, 2])


def test_an_output_that_is_infinite_in_both_models_has_no_error():
    same = [{"y": np.array([1.0, np.inf, -np.inf], np.float32)}]
    drift = compare_outputs(same, same)["y"]
    assert drift.max_abs == 0.0 and drift.mean_abs == 0.0
    assert compare_outputs(same, [{"y": np.array([1.0, np.inf, 0.0], np.float32)}])["y"].max_abs == math.inf
