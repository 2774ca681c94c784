"""Channel and head pruning on the real models of DESIGN.md (tests/realmodels.py).

The rewrite is checked on the real graphs without any tolerance for "lossy": removing random
channels (a third of every prunable group) must compute what the original computes with the
reading weights of those channels zeroed; removing attention heads must compute what MiniLM
computes with those heads' rows of the output projections zeroed. Task-level accuracy and
speed are measured in bench/channel_bench.py, not here.
"""

from __future__ import annotations


import numpy as np
import onnx_ir as ir
import pytest

from test_prune_channel import _copy, _zeroed_reads
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.graph_stats import graph_stats
from onnxsmith.passes.prune.channel_apply import remove_units, set_constant
from onnxsmith.passes.prune.channel_groups import analyse_channels, const_array
from onnxsmith.passes.prune.heads import prune_heads
from onnxsmith.runtime import make_session

from conftest import real_model_or_skip
from realmodels import det_input, minilm_inputs, photos, sentences, text_photos, yolo_input

pytestmark = pytest.mark.realmodel


def _model(name: str) -> ir.Model:
    return ir.load(real_model_or_skip(name))


def _feed(name: str) -> dict[str, np.ndarray]:
    if name == "yolov8n":
        return {"images": yolo_input(photos(["astronaut"])["astronaut"])}
    return {"x": det_input(text_photos()["page"], (192, 384))}


@pytest.mark.parametrize("name, prunable", [("yolov8n", 59), ("ppocr_det", 36)])
def test_real_graph_channel_removal_equals_zeroing_the_reads(name, prunable):
    model = _model(name)
    original = _copy(model)
    analysis = analyse_channels(model)
    assert len(analysis.prunable()) == prunable  # everything but the head's reshaped outputs / the model output
    rng = np.random.default_rng(0)
    removed = set()
    for group in analysis.prunable():
        removed |= set(rng.choice(group.units, size=group.size // 3, replace=False).tolist())
    feed = _feed(name)
    (expected,) = make_session(_zeroed_reads(original, analysis, removed), optimize=False).run(None, feed)
    remove_units(model, analysis, removed)
    (got,) = make_session(model, optimize=False).run(None, feed)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=max(1e-5, 1e-4 * float(np.abs(expected).max())))
    assert graph_stats(model).params < 0.75 * graph_stats(original).params


def test_minilm_heads_are_removed_exactly():
    model = _model("minilm")
    original = _copy(model)
    texts = sentences(10)
    calibration = minilm_inputs(texts[:4], seq_len=32)
    ctx = Context(calibration=Dataset({k: v[:, None] for k, v in calibration.items()}, "sentences"))
    result = prune_heads(model, ctx, ratio=0.25)
    assert result.counts["attention_blocks"] == 6 and result.counts["heads_after"] == 54
    zeroed = _copy(original)
    nodes = {n.name: n for n in zeroed.graph}
    for record in result.layers:
        node = nodes[record["layer"]]
        weight = const_array(node.inputs[1]).copy()
        for h in record["heads_removed"]:
            weight[h * 32:(h + 1) * 32] = 0.0
        set_constant(zeroed.graph, node, 1, weight)
    feed = minilm_inputs(texts[4:], seq_len=32)
    (expected,) = make_session(zeroed, optimize=False).run(None, feed)
    (got,) = make_session(model, optimize=False).run(None, feed)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert result.counts["params_after"] < 0.8 * result.counts["params_before"]
