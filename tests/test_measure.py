"""The measurement service (core/measure.py) and its statistics, against arrays read directly."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from conftest import FIXTURES, fixture_feeds
from onnxsmith.backend import get_backend
from onnxsmith.measure import Measurements, exposed, model_digest
from onnxsmith.runtime import make_session
from onnxsmith.sources import load_source
from onnxsmith.statistics import AbsMaxRows, ChannelSums, Hessian, Histogram, MinMax, Shape

ONE_ACTIVATION = 16 * 16 * 16 * 4  # bytes of a 1x16x16x16 float activation of the cnn fixture


def _cnn() -> ir.Model:
    return load_source(str(FIXTURES / "cnn.onnx")).ir


def _direct(model: ir.Model, name: str, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """``name`` read without the service: a proto copy whose only output is that tensor."""
    proto = ir.to_proto(model)
    del proto.graph.output[:]
    proto.graph.output.append(onnx.ValueInfoProto(name=name))
    session = make_session(ir.from_proto(proto), optimize=False)
    return [session.run([name], feed)[0] for feed in feeds]


def _names(model: ir.Model, ops=("Conv", "Relu", "Add")) -> list[str]:
    return [n.outputs[0].name for n in model.graph if n.op_type in ops]


def test_statistics_equal_numpy_on_the_whole_arrays():
    model, feeds = _cnn(), fixture_feeds("cnn", count=3)
    name = _names(model, ("Conv",))[1]
    arrays = _direct(model, name, feeds)
    every = np.concatenate([a.ravel() for a in arrays]).astype(np.float64)
    channels = np.concatenate([np.moveaxis(a, 1, -1).reshape(-1, a.shape[1]) for a in arrays]).astype(np.float64)
    rows = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays]).astype(np.float64)
    measure = Measurements()
    got = {kind: measure.reduce(model, {name: statistic}, feeds)[name] for kind, statistic in {
        "minmax": MinMax(), "sums": ChannelSums(axis=1, gram=True), "hessian": Hessian(), "hist": Histogram(64),
        "abs": Histogram(64, absolute=True), "rows": AbsMaxRows(rows_per_feed=5), "shape": Shape()}.items()}
    assert got["minmax"] == (pytest.approx(every.min()), pytest.approx(every.max()))
    sums = got["sums"]
    assert sums.count == len(channels)
    np.testing.assert_allclose(sums.mean, channels.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sums.variance, channels.var(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sums.gram, channels.T @ channels, rtol=1e-9)
    np.testing.assert_allclose(got["hessian"], 2 * rows.T @ rows / len(rows), rtol=1e-5)
    low, high, counts = got["hist"]
    np.testing.assert_array_equal(counts, np.histogram(every.astype(np.float32), bins=64, range=(low, high))[0])
    _, _, absolute = got["abs"]
    limit = max(abs(low), abs(high))
    np.testing.assert_array_equal(absolute, np.histogram(np.abs(every.astype(np.float32)), bins=64, range=(0, limit))[0])
    np.testing.assert_allclose(got["rows"].absmax, np.abs(rows).max(axis=0), rtol=1e-6)
    assert got["rows"].rows.shape == (15, rows.shape[1])
    assert got["shape"] == arrays[0].shape


def test_chunks_keep_the_byte_bound_and_give_the_same_results():
    model, feeds = _cnn(), fixture_feeds("cnn", count=3)
    names = _names(model)
    small, whole = Measurements(max_bytes=2 * ONE_ACTIVATION), Measurements()
    streamed = list(small.stream(model, names, feeds))
    assert all(sum(a.nbytes for a in part.values()) <= 2 * ONE_ACTIVATION for _, part in streamed)
    assert small.counts["sessions"] >= len(names) // 2 and whole.counts["sessions"] == 0
    assert sorted({n for _, part in streamed for n in part}) == sorted(names)
    first = names[0]
    np.testing.assert_array_equal(next(part[first] for f, part in streamed if f == 0 and first in part),
                                  _direct(model, first, feeds[:1])[0])
    assert small.reduce(model, dict.fromkeys(names, MinMax()), feeds) == whole.reduce(model, dict.fromkeys(names, MinMax()), feeds)
    assert whole.counts["sessions"] == 1


def test_results_are_cached_until_a_weight_changes_in_place():
    """The digest covers every byte of every weight: a change past the first 4 KB (where an
    earlier cache key stopped reading) must not be served the old statistics."""
    model, feeds = _cnn(), fixture_feeds("cnn", count=2)
    conv = next(n for n in model.graph if n.op_type == "Conv" and n.inputs[1].const_value.nbytes > 4096)
    name, measure = conv.outputs[0].name, Measurements()
    before = measure.reduce(model, {name: ChannelSums(axis=1)}, feeds)[name]
    again = measure.reduce(model, {name: ChannelSums(axis=1)}, feeds)[name]
    assert again is before and measure.counts["sessions"] == 1 and measure.counts["cached"] >= 1
    digest = model_digest(model)
    weight = conv.inputs[1].const_value.numpy().copy()
    weight.reshape(-1)[-1] += 1.0  # the last byte of the weight, far past 4 KB
    conv.inputs[1].const_value = ir.tensor(weight, name=conv.inputs[1].name)
    assert model_digest(model) != digest
    after = measure.reduce(model, {name: ChannelSums(axis=1)}, feeds)[name]
    assert measure.counts["sessions"] == 2 and not np.allclose(after.square_sum, before.square_sum)


def test_compare_gives_the_pooled_error_energy():
    model, feeds = _cnn(), fixture_feeds("cnn", count=4)
    noisy = model.clone()
    conv = next(n for n in noisy.graph if n.op_type == "Conv")
    perturbed = ir.Value(name="w_perturbed", const_value=ir.tensor(conv.inputs[1].const_value.numpy() * 1.05))
    noisy.graph.register_initializer(perturbed)
    conv.replace_input_with(1, perturbed)
    name = conv.outputs[0].name
    noise, signal = Measurements().compare(model, noisy, [name], feeds)[name]
    ref = np.concatenate(_direct(model, name, feeds)).astype(np.float64)
    got = np.concatenate(_direct(noisy, name, feeds)).astype(np.float64)
    assert noise == pytest.approx(float(np.sum((got - ref) ** 2)), rel=1e-6)
    assert signal == pytest.approx(float(np.sum(ref**2)), rel=1e-6)
    assert np.sqrt(noise / signal) == pytest.approx(0.05, rel=0.2)  # a 5% weight change, roughly 5% out


def test_outputs_and_sessions_are_kept_per_model_and_backend():
    model, feeds = _cnn(), fixture_feeds("cnn", count=2)
    measure, cpu = Measurements(), get_backend("cpu")
    first = measure.outputs(model, feeds, cpu)
    assert measure.outputs(model, feeds, cpu) is first and measure.counts["sessions"] == 1
    reference = measure.outputs(model, feeds)  # no backend: ORT with its optimizations off
    assert measure.counts["sessions"] == 2
    name = model.graph.outputs[0].name
    np.testing.assert_allclose(first[0][name], reference[0][name], rtol=1e-4, atol=1e-5)
    assert measure.session(model, cpu) is measure.session(model, cpu)


def test_exposing_tensors_restores_the_outputs_and_refuses_unknown_names():
    model = _cnn()
    outputs = [v.name for v in model.graph.outputs]
    with exposed(model, _names(model)[:2]):
        assert len(model.graph.outputs) == len(outputs) + 2
    assert [v.name for v in model.graph.outputs] == outputs
    with pytest.raises(KeyError, match="no_such_tensor"), exposed(model, ["no_such_tensor"]):
        pass
    assert [v.name for v in model.graph.outputs] == outputs
