"""Structured pruning: channel groups, real removal, allocation, refit, and attention heads.

The exactness check used throughout: removing a set of channels (without refit) must compute
exactly what the original model computes when every layer that reads those channels has the
matching input weights set to zero, since nothing else can see a channel (everything between
a producer and its readers is channel-wise).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import channel_models as cm
from conftest import FIXTURES, run_cli
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.errors import RecipeError
from onnxsmith.passes.prune.channel import prune_channels
from onnxsmith.passes.prune.channel_apply import remove_units, set_constant
from onnxsmith.passes.prune.channel_groups import analyse_channels, const_array
from onnxsmith.passes.prune.heads import prune_heads
from onnxsmith.runtime import make_session, run_all

STRUCTURES = {
    # builder: the groups' layer sets (layers whose outputs are in one group), frozen ones excluded
    "residual": [{"conv11", "conv3"}, {"conv7"}],
    "concat": [{"conv3"}, {"conv7"}],
    "depthwise": [{"conv3", "conv7"}],
    "with_batchnorm": [{"conv2"}],
    "gemm_chain": [{"gemm3"}, {"gemm7"}],
    "split_c2f": [{"conv3"}, {"conv3", "conv13"}, {"conv9"}],
    "squeeze_excite": [{"conv3", "conv12"}, {"conv8"}],
    "branches": [{"conv3"}, {"conv7", "conv10"}],
}


def _copy(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


def _outputs(model: ir.Model, feeds) -> list[np.ndarray]:
    return [next(iter(o.values())) for o in run_all(make_session(model, optimize=False), feeds)]


def _ctx(model: ir.Model, n: int = 6, seed: int = 0) -> Context:
    feeds = cm.feeds(model, n, seed)
    return Context(calibration=Dataset({"x": np.stack([f["x"] for f in feeds])}, "test"), seed=0)


def _layer_sets(analysis, prunable_only=True):
    return [{analysis.layer_of(s).node.name for s in g.key if analysis.layer_of(s)}
            for g in analysis.groups if g.frozen is None or not prunable_only]


def _zeroed_reads(model: ir.Model, analysis, removed: set[int]) -> ir.Model:
    """The original with the input weights of every removed channel zeroed in the layers reading it."""
    copy = _copy(model)
    nodes = {n.name: n for n in copy.graph}
    for layer in analysis.layers:
        if layer.in_slot is None or layer.depthwise:
            continue
        gone = [j for j, u in enumerate(analysis.roots[layer.in_slot]) if u in removed]
        node = nodes[layer.node.name]
        weight = const_array(node.inputs[layer.weight_index]).copy()
        np.moveaxis(weight, layer.in_axis, 0)[gone] = 0.0
        set_constant(copy.graph, node, layer.weight_index, weight)  # weights may be Constant nodes
    return copy


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_channel_groups_tie_what_must_shrink_together(name):
    analysis = analyse_channels(getattr(cm, name)())
    assert sorted(map(sorted, _layer_sets(analysis))) == sorted(map(sorted, STRUCTURES[name]))
    # the model output's channels are never prunable
    assert all(g.frozen for g in analysis.groups if any(analysis.slots[s].value.is_graph_output() for s in g.key))


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_removing_channels_equals_zeroing_their_reads(name):
    model = getattr(cm, name)()
    original = _copy(model)
    analysis = analyse_channels(model)
    rng = np.random.default_rng(0)
    removed = set()
    for group in analysis.prunable():
        removed |= set(rng.choice(group.units, size=group.size // 2, replace=False).tolist())
    expected = _outputs(_zeroed_reads(original, analysis, removed), cm.feeds(model, 3, seed=5))
    kept = remove_units(model, analysis, removed)
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)  # recorded shapes agree with the ops
    got = _outputs(model, cm.feeds(model, 3, seed=5))
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape  # the output keeps its channels
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    for group in analysis.prunable():  # every tensor made of one group's channels lost as many
        own = [s for s in group.key if set(analysis.roots[s]) <= set(group.units)]
        assert own and all(len(kept[s]) == len(analysis.slots[s].ids) - group.size // 2 for s in own)


def test_depthwise_group_and_split_sizes_follow_the_kept_channels():
    model = cm.depthwise()
    analysis = analyse_channels(model)
    (group,) = analysis.prunable()
    remove_units(model, analysis, set(group.units[:5]))
    dw = next(n for n in model.graph if n.op_type == "Conv" and n.attributes["group"].value > 1)
    assert dw.attributes["group"].value == 7 == const_array(dw.inputs[1]).shape[0] == const_array(dw.inputs[2]).shape[0]

    model = cm.split_c2f()
    analysis = analyse_channels(model)
    second_half = next(g for g in analysis.prunable() if len(g.key) > 4)  # tied through the residual Add
    remove_units(model, analysis, set(second_half.units[:3]))
    split = next(n for n in model.graph if n.op_type == "Split")
    assert const_array(split.inputs[1]).tolist() == [8, 5]


def test_what_the_analysis_cannot_follow_is_left_alone_with_its_reason():
    model = cm.reshape_head()
    before = {n: v.const_value.numpy().copy() for n, v in model.graph.initializers.items()}
    result = prune_channels(model, _ctx(model), ratio=0.5)
    assert not result.modified and result.counts["groups_prunable"] == 0
    assert any("Reshape 'reshape6' mixes the channel axis" in note for note in result.notes)
    assert all(np.array_equal(v.const_value.numpy(), before[n]) for n, v in model.graph.initializers.items())


def test_ratio_zero_changes_nothing():
    model = cm.residual()
    feeds = cm.feeds(model, 2, seed=3)
    before = _outputs(model, feeds)
    result = prune_channels(model, _ctx(model), ratio=0.0)
    assert not result.modified and result.counts["macs_after"] == result.counts["macs_before"]
    for b, a in zip(before, _outputs(model, feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_uniform_reaches_the_requested_channel_counts():
    model = cm.residual()
    result = prune_channels(model, _ctx(model), ratio=0.5, allocation="uniform", importance="l2", refit=False)
    channels = {r["layer"]: (r["channels_after"], r["in_channels_after"]) for r in result.layers}
    # conv1 and conv_b are tied (16 -> 8 both), conv_a 12 -> 6, the head keeps its 3 outputs
    assert channels == {"conv3": (8, None), "conv7": (6, 8), "conv11": (8, 6), "conv16": (3, 8)}
    weights = {n.name: const_array(n.inputs[1]).shape for n in model.graph if n.op_type == "Conv"}
    assert weights == {"conv3": (8, 4, 3, 3), "conv7": (6, 8, 3, 3), "conv11": (8, 6, 3, 3), "conv16": (3, 8, 1, 1)}
    assert result.counts["macs_after"] == sum(r["macs_after"] for r in result.layers)
    assert _outputs(model, cm.feeds(model, 1))[0].shape == (1, 3, 12, 12)


def test_adaptive_saves_as_much_as_uniform_and_errs_less():
    model = cm.split_c2f()
    ctx = _ctx(model, n=8)
    uniform, adaptive = _copy(model), _copy(model)
    u = prune_channels(uniform, ctx, ratio=0.5, allocation="uniform", refit=False)
    a = prune_channels(adaptive, ctx, ratio=0.5, allocation="adaptive", refit=False)
    assert a.counts["macs_after"] <= u.counts["macs_after"] < u.counts["macs_before"]
    feeds = cm.feeds(model, 4, seed=9)
    reference = _outputs(model, feeds)
    err = {name: np.mean([np.sum((o - r) ** 2) / np.sum(r**2) for o, r in zip(_outputs(m, feeds), reference, strict=True)])
           for name, m in (("uniform", uniform), ("adaptive", adaptive))}
    assert err["adaptive"] < err["uniform"]


def test_refit_lowers_the_layer_error_and_the_output_error():
    """Against the no-refit baseline (sliced weights, removed channels' mean folded into the bias)."""
    model = cm.concat()
    ctx = _ctx(model, n=8)
    refit, plain = _copy(model), _copy(model)
    with_refit = prune_channels(refit, ctx, ratio=0.5, allocation="uniform")
    without = prune_channels(plain, ctx, ratio=0.5, allocation="uniform", refit=False)
    readers = [r for r in with_refit.layers if r["in_channels_after"] is not None and r["in_channels_after"] < r["in_channels_before"]]
    assert readers and with_refit.counts["layers_refit"] == len(readers)
    for record in readers:
        assert record["error"] < 0.9 * record["error_no_refit"]
    assert all(r["error"] == r["error_no_refit"] for r in without.layers if r["error"] is not None)
    feeds = cm.feeds(model, 4, seed=11)  # held out: not the calibration feeds
    reference = _outputs(model, feeds)

    def error(m):
        return np.mean([np.sum((o - r) ** 2) / np.sum(r**2) for o, r in zip(_outputs(m, feeds), reference, strict=True)])

    assert error(refit) < 0.8 * error(plain)


def test_bad_options_are_user_errors():
    model = cm.residual()
    with pytest.raises(RecipeError, match="ratio"):
        prune_channels(model, _ctx(model), ratio=1.0)
    with pytest.raises(RecipeError, match="importance"):
        prune_channels(model, _ctx(model), ratio=0.3, importance="taylor")
    with pytest.raises(RecipeError, match="allocation"):
        prune_channels(model, _ctx(model), ratio=0.3, allocation="global")
    with pytest.raises(RecipeError, match="importance"):
        prune_heads(cm.attention(), Context(), ratio=0.3, importance="taylor")


# --- attention heads ---------------------------------------------------------------------


def _attention_ctx(model: ir.Model) -> Context:
    return _ctx(model, n=4)


@pytest.mark.parametrize("static", [True, False], ids=["static-reshapes", "minus-one-reshapes"])
def test_removed_heads_equal_zeroed_output_projection_rows(static):
    model = cm.attention(static=static)
    original = _copy(model)
    result = prune_heads(model, _attention_ctx(model), ratio=0.5)
    (record,) = result.layers
    assert record["heads_before"] == 4 and record["heads_after"] == 2 and result.counts["heads_after"] == 2
    gone = record["heads_removed"]
    zeroed = _copy(original)
    out = next(n for n in zeroed.graph if n.name == record["layer"])
    weight = const_array(out.inputs[1]).copy()
    for h in gone:
        weight[h * 8:(h + 1) * 8] = 0.0
    set_constant(zeroed.graph, out, 1, weight)
    feeds = cm.feeds(model, 3, seed=4)
    for e, g in zip(_outputs(zeroed, feeds), _outputs(model, feeds), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    assert const_array(next(n for n in model.graph if n.name == record["layer"]).inputs[1]).shape == (16, 16)
    assert record["params_after"] < record["params_before"] and record["macs_after"] < record["macs_before"]
    assert 0 < record["error"] < 1


def test_heads_ratio_zero_is_exact_and_l2_needs_no_data():
    model = cm.attention()
    feeds = cm.feeds(model, 2)
    before = _outputs(model, feeds)
    result = prune_heads(model, _attention_ctx(model), ratio=0.0)
    assert not result.modified and result.counts["heads_after"] == 4
    for b, a in zip(before, _outputs(model, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
    pruned = prune_heads(model, Context(), ratio=0.25, importance="l2")
    assert pruned.counts["heads_after"] == 3
    assert _outputs(model, feeds)[0].shape == before[0].shape


def test_cli_prunes_channels_of_the_cnn_fixture(tmp_path):
    """cleanup folds the exporter's computed axes and shapes; then the residual block's convs lose channels."""
    out = tmp_path / "cnn.onnx"
    run = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup,prune{method=channel,ratio=0.3}",
                  "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "0", "--json")
    assert run.code == 0, run.stderr
    report = run.json()
    (record,) = [p for p in report["passes"] if p["name"] == "prune"]
    counts = record["counts"]
    assert counts["groups_prunable"] == 2 and counts["macs_after"] <= 0.75 * counts["macs_before"]
    layers = {r["layer"]: r for r in record["layers"]}
    assert layers and all(r["macs_after"] < r["macs_before"] for r in layers.values())
    assert report["summary"]["params"]["after"] < report["summary"]["params"]["before"]
    def conv_weights(path):
        proto = onnx.load(str(path))
        shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
        return {n.name: shapes.get(n.input[1]) for n in proto.graph.node if n.op_type == "Conv"}

    after = conv_weights(out)
    assert sorted(n for n, shape in after.items() if shape[0] < 16 or shape[1] not in (3, 16)) == sorted(layers)
    assert report["summary"]["drift"] < 0.05


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1]},
    {"strides": [2, 2], "pads": [1, 0, 2, 1]},
    {"dilations": [2, 2], "pads": [2, 2, 2, 2]},
    {"strides": [2, 1], "auto_pad": "SAME_UPPER"},
], ids=["pad1", "stride2-asym", "dilation2", "same-upper"])
def test_im2col_patches_times_the_weight_are_the_conv_outputs(attrs):
    from onnx import TensorProto, helper, numpy_helper

    from onnxsmith.passes.prune import im2col
    from onnxsmith.passes.prune.channel_graph import WeightLayer

    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    (y,) = make_session(model, optimize=False).run(None, {"x": x})
    layer = WeightLayer(next(iter(model.graph)), "conv", 1, 0, 1)
    rows = im2col.rows(layer, x, rng, limit=40)
    assert len(rows) == min(40, y.shape[0] * y.shape[2] * y.shape[3])
    got = im2col.patches(layer, x, rows) @ w.reshape(5, -1).T
    expected = np.moveaxis(y, 1, -1).reshape(-1, 5)[rows]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_softmax_that_is_not_attention_is_left_alone_with_the_reason():
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="classifier_softmax", axis=-1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    result = prune_heads(model, Context(), ratio=0.5, importance="l2")
    assert not result.modified and result.counts["attention_blocks"] == 0
    assert any("'classifier_softmax' is not a recognised attention block" in note for note in result.notes)
