"""Valid models of unusual shapes run end to end (issue 18): string and empty outputs."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from onnxsmith.metrics import compare_outputs, default_drift, within_tolerance


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
