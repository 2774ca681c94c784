"""Bias correction: the quantized layer's mean output shift dW . E[x] is cancelled."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from conftest import ort_outputs
from onnxsmith.measure import Measurements
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.passes.quantize.bias_correction import apply_bias_corrections, bias_corrections
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.runtime import make_session, run_all


def _depthwise_model(path, channels=16, seed=0):
    """One depthwise 3x3 Conv: 9 weights per output channel, so rounding them shifts the mean.
    (int8 would not make a depthwise output layer faster on CPU: the tests ask for it, ops=[Conv].)"""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.3, (channels, 1, 3, 3)).astype(np.float32)
    weight[:, 0, 0, 0] = 1.0  # one large weight per channel sets the scale; the others round coarsely
    bias = rng.normal(0, 0.1, channels).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=channels, pads=[1, 1, 1, 1], name="dw")
    graph = helper.make_graph(
        [node], "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    # Inputs with a large positive mean: the shift dW . E[x] is then large against the noise.
    data = (3.0 + rng.normal(0, 0.5, (64, 1, channels, 8, 8))).astype(np.float32)
    np.savez(path.with_suffix(".npz"), x=data)
    return data


def _mean_channel_shift(model_path, reference_path, feeds):
    ref = np.concatenate([r[0] for r in ort_outputs(reference_path, feeds)])
    got = np.concatenate([g[0] for g in ort_outputs(model_path, feeds)])
    return np.abs((got - ref).mean(axis=(0, 2, 3)))


def test_bias_correction_cancels_the_mean_shift_on_held_out_inputs(tmp_path):
    source = tmp_path / "dw.onnx"
    _depthwise_model(source)
    held_out = [{"x": (3.0 + np.random.default_rng(99).normal(0, 0.5, (1, 16, 8, 8))).astype(np.float32)} for _ in range(8)]
    shifts = {}
    for flag in ("true", "false"):
        out = tmp_path / f"dw_{flag}.onnx"
        recipe = validate_recipe({"passes": parse_pipeline(f"quantize{{guard=false,ops=[Conv],bias_correction={flag}}}"),
                                  "calibration": {"data": str(source.with_suffix(".npz"))}})
        report = optimize(str(source), out, recipe, OptimizeOptions(latency_rounds=0))
        assert report.passes[-1].counts.get("biases_corrected", 0) == (1 if flag == "true" else 0)
        shifts[flag] = _mean_channel_shift(out, source, held_out)
    assert shifts["false"].mean() > 1e-3  # the uncorrected layer really is biased
    assert shifts["true"].mean() < 0.5 * shifts["false"].mean()


def test_matmul_add_correction_is_dw_times_the_input_mean():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (8, 4)).astype(np.float32)
    b = rng.normal(0, 1, 4).astype(np.float32)
    w_q = np.round(w * 4) / 4  # a stand-in "quantized" weight, fed through DequantizeLinear
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    float_model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    q_graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["wq", "s"], ["w_dq"], name="dq"),
         helper.make_node("MatMul", ["x", "w_dq"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array((w_q * 4).astype(np.int8), "wq"), numpy_helper.from_array(np.float32(0.25), "s"),
         numpy_helper.from_array(b, "b")],
    )
    quantized = ir.from_proto(helper.make_model(q_graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    feeds = [{"x": rng.normal(2, 1, (2, 8)).astype(np.float32)} for _ in range(5)]
    corrections = bias_corrections(Measurements(), float_model, quantized, ["mm"], feeds)
    mean = np.concatenate([f["x"] for f in feeds]).mean(axis=0)
    np.testing.assert_allclose(corrections["mm"], mean @ (w_q.astype(np.float64) - w), rtol=1e-5, atol=1e-6)
    corrected = apply_bias_corrections(float_model, corrections)
    new_bias = next(v for n in corrected.graph if n.op_type == "Add" for v in n.inputs if v.const_value is not None)
    np.testing.assert_allclose(new_bias.const_value.numpy(), b - corrections["mm"], rtol=1e-5, atol=1e-6)
    assert float_model.graph.initializers["b"].const_value.numpy().tolist() == b.tolist()  # the input is untouched
    assert run_all(make_session(corrected), feeds[:1])[0]["y"].shape == (2, 4)


def test_corrected_bias_replaces_the_float_one_without_leaving_it_behind(tmp_path):
    # ONNX Runtime warns once per unread initializer when it loads a model: none may be left
    source = tmp_path / "dw.onnx"
    _depthwise_model(source)
    model = ir.load(source)
    corrected = apply_bias_corrections(model, {"dw": np.full(16, 0.25, np.float32)})
    assert "b" not in corrected.graph.initializers and "b" in model.graph.initializers
    bias = corrected.graph.node(0).inputs[2].const_value.numpy()
    np.testing.assert_allclose(bias, model.graph.initializers["b"].const_value.numpy() - 0.25, rtol=1e-6)


def _dequantized(name: str, weight: np.ndarray, axis: int) -> tuple[list, np.ndarray]:
    """A per-channel int8 DequantizeLinear of ``weight`` along ``axis`` (initializers, node) and its values."""
    others = tuple(i for i in range(weight.ndim) if i != axis)
    scale = (np.abs(weight).max(axis=others) / 127).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.round(weight / scale.reshape(shape)).astype(np.int8)
    inits = [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale, f"{name}_s"),
             numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_z")]
    node = helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"], axis=axis)
    return [inits, node], q.astype(np.float64) * scale.reshape(shape).astype(np.float64)


def test_shifts_computed_block_by_block_equal_the_whole_weight_formula(monkeypatch):
    """A grouped Conv (per-channel along axis 0) and a Gemm with transB: the shift, computed a
    few rows at a time, is dW . E[x] over the whole weight (groups reading their own inputs)."""
    from onnxsmith.passes.quantize import bias_correction

    monkeypatch.setattr(bias_correction, "_BLOCK_VALUES", 20)  # a few output channels per block
    rng = np.random.default_rng(3)
    conv_w = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)  # 2 groups of 3 inputs -> 4 outputs each
    gemm_w = rng.normal(0, 0.5, (5, 6)).astype(np.float32)  # transB: [N=5, K=6]
    (conv_inits, conv_dq), conv_deq = _dequantized("cw", conv_w, 0)
    (gemm_inits, gemm_dq), gemm_deq = _dequantized("gw", gemm_w, 0)

    def model(conv_weight: str, gemm_weight: str, extra_nodes: list, extra_inits: list) -> ir.Model:
        nodes = [*extra_nodes,
                 helper.make_node("Conv", ["x", conv_weight, "cb"], ["c"], name="conv", group=2, pads=[1, 1, 1, 1]),
                 helper.make_node("Gemm", ["v", gemm_weight, "gb"], ["g"], name="gemm", transB=1, alpha=0.5)]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4, 4]),
                         helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 6])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, None), helper.make_tensor_value_info("g", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.zeros(8, np.float32), "cb"), numpy_helper.from_array(np.zeros(5, np.float32), "gb"),
             *extra_inits])
        return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))

    float_model = model("cw", "gw", [], [numpy_helper.from_array(conv_w, "cw"), numpy_helper.from_array(gemm_w, "gw")])
    quantized = model("cw_dq", "gw_dq", [conv_dq, gemm_dq], [*conv_inits, *gemm_inits])
    feeds = [{"x": rng.normal(1, 1, (1, 6, 4, 4)).astype(np.float32), "v": rng.normal(1, 1, (2, 6)).astype(np.float32)}
             for _ in range(3)]
    corrections = bias_corrections(Measurements(), float_model, quantized, ["conv", "gemm"], feeds)
    x_mean = np.concatenate([f["x"] for f in feeds]).mean(axis=(0, 2, 3))
    v_mean = np.concatenate([f["v"] for f in feeds]).mean(axis=0)
    delta = conv_deq - conv_w.astype(np.float64)
    expected_conv = [np.sum(delta[o] * x_mean[(o // 4) * 3:(o // 4) * 3 + 3, None, None]) for o in range(8)]
    np.testing.assert_allclose(corrections["conv"], expected_conv, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(corrections["gemm"], 0.5 * (gemm_deq - gemm_w.astype(np.float64)) @ v_mean, rtol=1e-6, atol=1e-9)
