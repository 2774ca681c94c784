"""Per-layer int8 speed measured on the target (passes/quantize/layer_speed.py) and the int8
plan that follows it. Timings vary from run to run and CPU to CPU: the tests check how the
measurements are attributed and that decisions agree with them, never a time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, fixture_feeds, run_cli
from onnxsmith.backend import get_backend
from onnxsmith.context import Context
from onnxsmith.data import Dataset
from onnxsmith.passes.quantize.layer_speed import LayerSpeed, SpeedTable, _by_layer, _fastest_block, _qdq_owners, measure_layer_speed
from onnxsmith.registry import create_pass
from onnxsmith.sources import load_source
from onnxsmith.target import detect_cpu, load_target


def _qdq_chain() -> ir.Model:
    """x -Q-DQ-> conv_a -Q-DQ-> conv_b -Q-DQ-> y: one entry Q/DQ pair, one between, one exit."""
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["a"], name="conv_a"),
        helper.make_node("QuantizeLinear", ["a", "s"], ["aq"], name="q_mid"),
        helper.make_node("DequantizeLinear", ["aq", "s"], ["ad"], name="dq_mid"),
        helper.make_node("Conv", ["ad", "wd"], ["b"], name="conv_b"),
        helper.make_node("QuantizeLinear", ["b", "s"], ["bq"], name="q_out"),
        helper.make_node("DequantizeLinear", ["bq", "s"], ["y"], name="dq_out"),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [w, scale])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def test_qdq_kernels_are_charged_to_the_layer_they_feed_else_the_one_they_convert():
    owners = _qdq_owners(_qdq_chain(), {"conv_a", "conv_b"})
    assert owners["q_in"] == owners["dq_in"] == ["conv_a"]  # region entry: the layer it feeds
    assert owners["dq_w"] == ["conv_a", "conv_b"]  # a shared weight's DQ: shared out
    assert owners["q_mid"] == owners["dq_mid"] == ["conv_b"]  # between two layers: the reader
    assert owners["q_out"] == owners["dq_out"] == ["conv_b"]  # region exit: the layer it converts


def test_a_layer_pays_only_when_its_gain_beats_the_noise():
    assert LayerSpeed(float_ms=1.0, int8_ms=0.5, noise_ms=0.1).pays
    assert not LayerSpeed(float_ms=1.0, int8_ms=0.95, noise_ms=0.1).pays  # within the noise
    assert not LayerSpeed(float_ms=0.2, int8_ms=0.3, noise_ms=0.0).pays  # slower in int8
    table = SpeedTable({"a": LayerSpeed(1.0, 0.4, 0.0), "b": LayerSpeed(0.5, 0.6, 0.0)}, float_ms=2.0, int8_ms=1.5)
    assert table.predict_ms({"a"}) == 1.4 and table.predict_ms({"a", "b"}) == 1.5 and table.predict_ms(set()) == 2.0


def _cnn_int8(pipeline: str, target: str = "host"):
    model = load_source(str(FIXTURES / "cnn.onnx")).ir
    feeds = fixture_feeds("cnn", count=8)
    dataset = Dataset({k: np.stack([f[k] for f in feeds]) for k in feeds[0]}, "cnn.npz")
    ctx = Context(backend=get_backend("cpu", load_target(target)), calibration=dataset)
    options = dict(pair.split("=") for pair in pipeline.split(",")) if pipeline else {}
    return create_pass("quantize", options).run(model, ctx)


def test_measured_speeds_cover_every_planned_layer_and_both_runs():
    model = load_source(str(FIXTURES / "cnn.onnx")).ir
    float_model = model.clone()
    quantized = _cnn_int8("guard=false,skip_slow=false").model
    layers = [n.name for n in float_model.graph if n.op_type == "Conv"]
    backend, feeds = get_backend("cpu"), fixture_feeds("cnn", count=2)
    table = measure_layer_speed(backend, float_model, quantized, layers, feeds, runs=5)
    assert set(table.layers) == set(layers)
    assert all(speed.float_ms >= 0 and speed.int8_ms >= 0 for speed in table.layers.values())
    assert table.float_ms > 0 and table.int8_ms > 0
    # Every layer is charged a kernel in both runs. (Not "> 0 ms": ORT's profiler counts whole
    # microseconds, and a median of these tiny convs is 0 us on a fast CPU.)
    wanted = set(layers)
    assert set(_by_layer(backend.profile(float_model, feeds, runs=2), wanted, {})[0]) == wanted
    assert set(_by_layer(backend.profile(quantized, feeds, runs=2), wanted, _qdq_owners(quantized, wanted))[0]) == wanted


def test_the_two_models_are_profiled_in_alternating_blocks_and_each_layer_keeps_its_fastest(monkeypatch):
    model = load_source(str(FIXTURES / "cnn.onnx")).ir
    quantized = _cnn_int8("guard=false,skip_slow=false").model
    layers = [n.name for n in model.graph if n.op_type == "Conv"]
    backend, feeds = get_backend("cpu"), fixture_feeds("cnn", count=2)
    profiled, profile = [], backend.profile

    def recording(candidate, *args, **kwargs):
        profiled.append("float" if candidate is model else "int8")
        return profile(candidate, *args, **kwargs)

    monkeypatch.setattr(backend, "profile", recording)
    table = measure_layer_speed(backend, model, quantized, layers, feeds, runs=6)
    assert profiled == ["float", "int8", "float", "int8"]  # a burst of load cannot spoil both blocks of one model
    assert set(table.layers) == set(layers)
    # per layer, the block where it ran fastest, with that block's noise
    assert _fastest_block([({"a": 2.0, "b": 1.0}, {"a": 0.2, "b": 0.1}), ({"a": 1.5, "b": 3.0}, {"a": 0.5, "b": 0.9})]) == (
        {"a": 1.5, "b": 1.0}, {"a": 0.5, "b": 0.1})


def test_the_int8_plan_keeps_float_exactly_the_layers_measured_no_faster():
    result = _cnn_int8("guard=false")
    rows = {row["layer"]: row for row in result.layers if "gain_ms" in row}
    assert rows, result.layers
    assert any("int8 speed measured per layer" in note for note in result.notes)
    assert any("predicted from the per-layer timing" in note for note in result.notes)
    for row in rows.values():  # float where timed no faster; or every layer, where int8 lost end to end
        measured_slow = row.get("reason", "").startswith("measured on cpu")
        handed_back = row.get("reason", "").startswith("planned int8, but no faster than float end to end")
        if handed_back:
            assert not result.modified and result.warnings, row
        assert (measured_slow or handed_back) == (row["precision"] == "fp32"), row
        if measured_slow:
            assert row["gain_ms"] <= 0 or "no faster than the noise" in row["reason"]
        else:
            assert row["gain_ms"] > 0


@pytest.mark.parametrize("int8_faster", [True, False, "second run"])
def test_int8_is_kept_only_where_it_beat_the_float_model_end_to_end(monkeypatch, int8_faster):
    """The end-to-end check's decision, with the clock fixed: every layer measured faster in
    int8, then the whole int8 model faster (kept) or slower in two runs (the float model
    handed back), or slower in a first run only (a burst of load: kept on the second)."""
    from onnxsmith.latency import LatencyStats
    from onnxsmith.passes.quantize import int8

    def every_layer_pays(backend, float_model, int8_model, layers, feeds, **_):
        return SpeedTable({name: LayerSpeed(1.0, 0.5, 0.01) for name in layers}, float_ms=4.0, int8_ms=2.0)

    end_to_end_runs = []

    def timed(sessions, feed, *, rounds, **_):
        if set(sessions) == {"int8", "float"}:
            end_to_end_runs.append(rounds)
        faster = int8_faster is True or (int8_faster == "second run" and len(end_to_end_runs) == 2)
        ms = {"float": 10.0, "int8": 8.0 if faster else 12.0}
        return {name: LatencyStats(ms.get(name, 10.0), ms.get(name, 10.0), rounds, (ms.get(name, 10.0),) * rounds) for name in sessions}

    monkeypatch.setattr(int8, "measure_layer_speed", every_layer_pays)
    monkeypatch.setattr(int8, "measure_interleaved", timed)
    result = _cnn_int8("guard=false")
    ops = {node.op_type for node in result.model.graph}
    rows = [row for row in result.layers if "gain_ms" in row]
    assert rows
    assert end_to_end_runs == ([15] if int8_faster is True else [15, 15])
    if int8_faster:
        assert result.modified and "DequantizeLinear" in ops and not result.warnings
        assert "verified end to end on cpu: int8 8.000 ms against float's 10.000 ms" in "\n".join(result.notes)
        assert all(row["precision"] == "int8" for row in rows)
        if int8_faster == "second run":
            assert "a first run found int8 no faster (int8 12.000 ms against 10.000 ms); a second found it faster" in "\n".join(result.notes)
    else:
        assert not result.modified and "DequantizeLinear" not in ops
        assert result.warnings == ["int8 is no faster than float end to end: 12.000 ms against 10.000 ms (0.83x; faster in "
                                   "fewer than three quarters of 15 interleaved rounds on cpu), twice (first run: int8 12.000 ms "
                                   "against 10.000 ms); the model is returned unchanged (use speed=rules to keep int8 regardless)"]
        assert all(row["precision"] == "fp32" and row["reason"].startswith("planned int8, but no faster") for row in rows)


@pytest.mark.parametrize("moved_gain", [-0.5, -0.001], ids=["clearly-slower", "within-noise"])
def test_layers_timed_slower_together_beyond_their_noise_are_not_verified_end_to_end(monkeypatch, moved_gain):
    """With the clock fixed: half the layers pay, the other half measure ``moved_gain`` ms each
    (noise 0.01 ms). Clearly slower together, they are not admitted for an end-to-end check
    (no guard of the full plan, no timing of it); within the noise, the check runs."""
    from onnxsmith.latency import LatencyStats
    from onnxsmith.passes.quantize import int8

    def half_pays(backend, float_model, int8_model, layers, feeds, **_):
        return SpeedTable({name: LayerSpeed(1.0, 0.5 if i % 2 else 1.0 - moved_gain, 0.01) for i, name in enumerate(layers)},
                          float_ms=4.0, int8_ms=3.0)

    compared: list[frozenset] = []

    def timed(sessions, feed, *, rounds, **_):
        compared.append(frozenset(sessions))
        return {name: LatencyStats(10.0, 10.0, rounds, (10.0,) * rounds) for name in sessions}

    monkeypatch.setattr(int8, "measure_layer_speed", half_pays)
    monkeypatch.setattr(int8, "measure_interleaved", timed)
    result = _cnn_int8("guard=false")
    skipped = [note for note in result.notes if note.startswith("not verified end to end")]
    if moved_gain < -0.01:
        assert skipped and frozenset({"timed", "full"}) not in compared
    else:
        assert not skipped and frozenset({"timed", "full"}) in compared


def test_building_for_another_cpu_uses_the_rules_not_this_machines_timing():
    other = "avx2" if load_target().cpu.int8_dot else "avx512-vnni"
    result = _cnn_int8("guard=false", target=other)
    assert not any("gain_ms" in row for row in result.layers)
    assert not any("int8 speed measured per layer" in note for note in result.notes)
    assert any("multiply-adds per value moved" in row.get("reason", "") for row in result.layers)  # the stem, by rule


def _optimize_cnn(tmp_path, name: str, *extra: str) -> dict:
    out = tmp_path / f"{name}.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup,quantize{guard=false}",
                     "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "0", "--json", *extra)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_costs_saved_on_one_machine_decide_the_build_on_another_the_same_way_every_time(tmp_path):
    costs = tmp_path / "costs.json"
    _optimize_cnn(tmp_path, "timed", "--save-costs", str(costs))
    table = json.loads(costs.read_text())
    assert table["backend"] == "cpu" and table["cpu"]["features"] == sorted(detect_cpu().features) and table["layers"]
    first, again = _optimize_cnn(tmp_path, "a", "--costs", str(costs)), _optimize_cnn(tmp_path, "b", "--costs", str(costs))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()  # no timing: the same artifact
    rows = {row["layer"]: row for row in first["passes"][-1]["layers"]}
    for name, cost in table["layers"].items():
        pays = cost["float_ms"] - cost["int8_ms"] > cost["noise_ms"]
        assert rows[name]["precision"] == ("int8" if pays else "fp32"), (name, cost, rows[name])
    assert first["target"]["cpu"]["features"] == table["cpu"]["features"]
    assert first["recipe"]["target"]["costs"] == str(costs) and again["passes"][-1]["layers"] == first["passes"][-1]["layers"]


def test_a_cost_table_that_says_a_layer_is_slower_keeps_it_float(tmp_path):
    costs = tmp_path / "costs.json"
    _optimize_cnn(tmp_path, "timed", "--save-costs", str(costs))
    table = json.loads(costs.read_text())
    for cost in table["layers"].values():
        cost.update(float_ms=1.0, int8_ms=0.2, noise_ms=0.01)
    slow = sorted(table["layers"])[0]
    table["layers"][slow].update(int8_ms=2.0)
    costs.write_text(json.dumps(table))
    rows = {row["layer"]: row for row in _optimize_cnn(tmp_path, "decided", "--costs", str(costs))["passes"][-1]["layers"]}
    assert rows[slow]["precision"] == "fp32" and "the cost table" in rows[slow]["reason"]
    assert all(rows[name]["precision"] == "int8" for name in table["layers"] if name != slow)


@pytest.mark.parametrize("content,problem", [
    ("not json", "is not JSON"),
    (json.dumps({"schema": 1, "backend": "cpu", "layers": {"a": {"float_ms": -1, "int8_ms": 0, "noise_ms": 0}}}), "needs float_ms"),
    (json.dumps({"schema": 1, "backend": "openvino", "layers": {}, "cpu": {"arch": "x86_64", "features": []}}), "measured on backend"),
])
def test_a_bad_cost_table_is_one_clear_error(tmp_path, content, problem):
    costs = tmp_path / "costs.json"
    costs.write_text(content)
    out = tmp_path / "o.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup", "--costs", str(costs))
    assert result.code == 2 and problem in result.stderr and not out.exists()
