"""Before/after profiles matched through original node names (core/profile_compare.py),
on hand-made profiles shaped like ONNX Runtime's int8 ones."""

from __future__ import annotations

from onnxsmith.profile import Layer, Profile, Totals
from onnxsmith.profile_compare import compare_profiles


def _layer(name: str, origin: list[str], op_type: str, ms: float, order: int) -> Layer:
    return Layer(name, origin, op_type, op_type, "cpu", ms, ms, 0.0, 0, 0, 0, "fp32", name, order)


def _profile(layers: list[Layer]) -> Profile:
    total = sum(layer.median_ms for layer in layers)
    return Profile("cpu", 10, 3, Totals(total, total, total, 1.0, 1.0, None), layers)


def test_a_layer_goes_to_the_after_layer_that_stands_for_it_not_to_a_layout_transpose_that_spans_many():
    before = _profile([_layer("conv_a", ["conv_a", "bn_a", "relu_a"], "Conv", 0.9, 0),
                       _layer("conv_b", ["conv_b", "bn_b", "add_1", "relu_1"], "Conv", 0.8, 1)])
    # ONNX Runtime's NHWC transform adds a Transpose whose origin covers every layer around it
    # (more shared names with conv_b than conv_b's own QLinearConv has), and the fused layers
    # are named after the BatchNorm that fuse folded into each Conv
    after = _profile([_layer("nhwc", ["conv_a", "bn_a", "relu_a", "conv_b", "bn_b", "add_1", "relu_1"], "Transpose", 0.1, 0),
                      _layer("bn_a", ["bn_a", "conv_a", "relu_a"], "QLinearConv", 0.3, 1),
                      _layer("bn_b", ["bn_b", "conv_b"], "QLinearConv", 0.4, 2)])
    rows = {layer.name: layer for layer in compare_profiles(before, after, sqnr={}, other="original").layers}
    assert set(rows) == {"nhwc", "conv_a", "conv_b"}  # the QLinearConvs take their Convs' names
    assert (rows["conv_a"].before_ms, rows["conv_a"].speedup) == (0.9, 3.0)
    assert rows["conv_b"].before_ms == 0.8 and rows["conv_b"].op_type == "QLinearConv"
    assert rows["nhwc"].before_ms is None  # no time counted twice


def test_a_layer_speedup_inside_the_run_to_run_spread_is_marked_within_the_noise():
    def spread(layer: Layer, iqr_ms: float) -> Layer:
        layer.iqr_ms = iqr_ms
        return layer

    before = _profile([spread(_layer("conv", ["conv"], "Conv", 1.0, 0), 0.3), spread(_layer("add", ["add"], "Add", 0.10, 1), 0.01)])
    after = _profile([spread(_layer("conv", ["conv"], "QLinearConv", 0.5, 0), 0.1),  # 2x, far outside 0.3 ms of spread
                      spread(_layer("add", ["add"], "Add", 0.095, 1), 0.02)])  # 1.05x inside 0.02 ms of spread
    rows = {layer.name: layer for layer in compare_profiles(before, after, sqnr={}, other="original").layers}
    assert rows["conv"].speedup == 2.0 and rows["conv"].speedup_within_noise is False
    assert rows["add"].speedup > 1 and rows["add"].speedup_within_noise is True
