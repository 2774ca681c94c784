"""The integer-kernel check (passes/quantize/kernels.py) on two tiny QDQ graphs whose fate in
ONNX Runtime 1.32's CPU provider is known: a MatMul read by a Relu alone becomes
MatMulIntegerToFloat; one whose output goes through a Relu into a float MatMul is not fused
and runs float after DequantizeLinear. Both ways of reading the runtime graph (the saved
optimized model, and one profiled run of a session that reads a big model's weights in
place) must give the same answer."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxsmith.passes.quantize.kernels import integer_kernel_check, reads_int8_weight

SIZE = 64


def _qdq_matmul(float_matmul_after: bool) -> ir.Model:
    """x -> Q -> DQ -> MatMul(DQ(int8 w0)) -> Relu [-> MatMul(float w1)]."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.integers(-127, 128, (SIZE, SIZE)).astype(np.int8), "w0_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w0_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w0_zero"),
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(rng.standard_normal((SIZE, SIZE)).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="x_q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w0_q", "w0_scale", "w0_zero"], ["w0"], name="w0_dq"),
        helper.make_node("MatMul", ["x_dq", "w0"], ["h"], name="mm0"),
        helper.make_node("Relu", ["h"], ["r" if float_matmul_after else "y"], name="relu"),
    ]
    if float_matmul_after:
        nodes.append(helper.make_node("MatMul", ["r", "w1"], ["y"], name="mm1"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, SIZE])], initializers)
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _with_weights_in_files(model: ir.Model, folder) -> ir.Model:
    """``model`` saved with its weights in an external file and loaded back: such a model's
    sessions read its weights in place (shared_weights.sharing_pays), so the check profiles one run."""
    path = folder / "model.onnx"
    ir.save(model, path, external_data="model.onnx.data", size_threshold_bytes=0)
    return ir.load(path)


@pytest.mark.parametrize("weights_in_files", [False, True], ids=["saved-graph", "profiled-run"])
@pytest.mark.parametrize(("float_matmul_after", "expected"), [
    (False, ({"int8_kernels": 1, "float_fallbacks": 0}, [])),
    (True, ({"int8_kernels": 0, "float_fallbacks": 1}, ["mm0"])),
], ids=["fused", "float-after-dequantize"])
def test_integer_kernel_check_sees_what_onnxruntime_runs(tmp_path, weights_in_files, float_matmul_after, expected):
    # depends on ONNX Runtime's QDQ fusion rules (checked with 1.32 on x86); the fused case
    # holds on every CPU, as the MatMulIntegerToFloat fusion does not depend on the ISA
    model = _qdq_matmul(float_matmul_after)
    if weights_in_files:
        model = _with_weights_in_files(model, tmp_path)
    feed = {"x": np.random.default_rng(1).standard_normal((8, SIZE)).astype(np.float32)}
    assert integer_kernel_check(model, "CPUExecutionProvider", feed if weights_in_files else None) == expected


def test_reads_int8_weight_looks_at_the_weight_not_the_activation():
    model = _qdq_matmul(float_matmul_after=True)
    nodes = {node.name: node for node in model.graph}
    assert reads_int8_weight(nodes["mm0"])
    assert not reads_int8_weight(nodes["mm1"])  # float weight, though its input is not dequantized either
