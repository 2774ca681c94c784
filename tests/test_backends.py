"""Backends: the registry and `onnxsmith backends`, capabilities, OpenVINO for real, and the
GPU providers (which skip, with the reason, where no GPU or onnxruntime-gpu is present)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES, fixture_feeds, ort_outputs, run_cli
from onnxsmith.backend import available_backends, get_backend
from onnxsmith.errors import RecipeError
from onnxsmith.modelio import load_onnx

ALL = {"cpu", "cuda", "tensorrt", "openvino", "dml", "coreml"}


def _usable(name: str):
    ok, why = available_backends()[name]().available()
    if not ok:
        pytest.skip(f"backend '{name}' is not available here: {why}")
    return get_backend(name)


def test_backends_command_lists_every_backend_with_the_reason():
    result = run_cli("backends", "--json")
    assert result.code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()}
    assert set(rows) >= ALL
    assert rows["cpu"]["available"] and rows["cpu"]["reason"] == ""
    for row in rows.values():
        assert row["available"] or row["reason"], row
    assert rows["tensorrt"]["gains_from_nm_sparsity"] and not rows["cpu"]["gains_from_nm_sparsity"]
    assert "int8" in rows["tensorrt"]["precisions"] and "fp16" in rows["cuda"]["precisions"]
    table = run_cli("backends")
    assert table.code == 0 and "openvino" in table.stdout


def test_unavailable_backend_is_a_one_line_error_naming_the_reason():
    for name in ("dml", "coreml"):  # never on this Linux CPU machine
        ok, why = available_backends()[name]().available()
        assert not ok and why
        with pytest.raises(RecipeError, match=name):
            get_backend(name)


def test_ort_capabilities_come_from_the_kernel_registry():
    caps = get_backend("cpu").capabilities
    assert {"Conv", "FusedConv", "QLinearConv", "MatMulNBits"} <= caps.ops
    assert caps.quant_format == "qdq" and not caps.gains_from_nm_sparsity


def test_openvino_runs_the_onnx_model_like_onnxruntime():
    backend = _usable("openvino")
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    session = backend.create_session(model)
    feeds = fixture_feeds("cnn", count=2)
    for feed, expected in zip(feeds, ort_outputs(FIXTURES / "cnn.onnx", feeds), strict=True):
        np.testing.assert_allclose(session.run(None, feed)[0], expected[0], rtol=1e-4, atol=1e-4)


def test_openvino_outputs_are_found_by_the_graph_output_name_where_openvino_merges_tensor_names():
    """OpenVINO fuses Conv -> DepthToSpace -> Add -> Sigmoid and names the output port after
    any of the merged tensors ('a' here): the session must still answer for 'y'."""
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    backend = _usable("openvino")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode="CRD"),
             helper.make_node("Add", ["d", "b"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])]
    inits = [numpy_helper.from_array(np.full((4, 3, 1, 1), 0.1, np.float32), "w"),
             numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])], inits)
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    x = np.ones((1, 3, 4, 4), np.float32)
    (y,) = backend.create_session(model).run(["y"], {"x": x})
    np.testing.assert_allclose(y, np.full((1, 1, 8, 8), 1 / (1 + np.exp(-1.3)), np.float32), rtol=1e-5)


def test_openvino_as_is_runs_at_its_own_default_precision_and_the_target_at_fp32():
    """The baseline of a user who runs the model as it is: no precision hint, so OpenVINO's
    default for this CPU (bf16 where it is native), while a session for the target keeps fp32."""
    import openvino as ov

    backend = _usable("openvino")
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert backend.as_is_session(model).precision == {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[default]
    assert backend.create_session(model).precision == "fp32"


def test_openvino_profile_reports_exec_types_per_layer():
    backend = _usable("openvino")
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    profile = backend.profile(model, fixture_feeds("cnn", count=2), runs=5, warmup=1)
    assert profile.backend == "openvino" and profile.runs == 5
    convs = [layer for layer in profile.layers if layer.op_type == "Conv"]
    assert len(convs) == 3
    for layer in convs:
        assert layer.kernel.lower().endswith("_f32") and layer.precision == "fp32"  # the kernel OpenVINO chose
        assert layer.provider == "openvino:CPU" and layer.flops > 0 and layer.params > 0
    assert {"node_conv2d", "node_conv2d_1", "node_conv2d_2"} <= {n for layer in convs for n in layer.origin}
    assert all(layer.origin or layer.inserted_by == "runtime" for layer in profile.layers)


@pytest.mark.parametrize("name", ["cuda", "tensorrt"])
def test_gpu_provider_profiles_on_the_gpu(name):
    backend = _usable(name)  # skips with the reason where onnxruntime-gpu or a GPU is missing
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    profile = backend.profile(model, fixture_feeds("cnn", count=2), runs=5, warmup=2)
    providers = {layer.provider for layer in profile.layers}
    assert backend.provider in providers, providers
    feeds = fixture_feeds("cnn", count=1)
    np.testing.assert_allclose(backend.create_session(model).run(None, feeds[0])[0],
                               ort_outputs(FIXTURES / "cnn.onnx", feeds)[0][0], rtol=1e-2, atol=1e-2)
