"""The per-layer profile: trace streaming and aggregation, coverage, names after fusion,
the compare mode finding a broken layer, FLOP rules, and every output format (the HTML
page rendered in headless Chromium)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from PIL import Image

from conftest import FIXTURES, fixture_feeds, real_model_or_skip, run_cli
from onnxsmith.backend import available_backends, get_backend
from onnxsmith.backends import ort_profiler
from onnxsmith.ceilings import Ceilings, machine_ceilings
from onnxsmith.cli.render_html import html_page
from onnxsmith.cli.render_roofline import COMPUTE, LABELLED, MEMORY
from onnxsmith.flops import TensorInfo, kernel_flops
from onnxsmith.layer_map import principal_origin
from onnxsmith.measure import Measurements
from onnxsmith.modelio import load_onnx
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.profile import Layer, Measurement, Profile, Totals, build_profile
from onnxsmith.profile_compare import tensor_sqnr
from onnxsmith.recipe import validate_recipe

CNN_ORIGINAL = {n.name for n in onnx.load(str(FIXTURES / "cnn.onnx")).graph.node}
COVERAGE_TOLERANCE = 0.15  # the target: layer times within 15% of end-to-end


def _cnn_batch(batch: int) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "cnn.npz") as npz:
        x = npz["input"]
    return {"input": np.resize(x, (batch, *x.shape[1:])).astype(np.float32)}


def _fused_cnn(tmp_path: Path) -> Path:
    out = tmp_path / "cnn_fused.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "fuse",
                     "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    return out


# --- the trace ------------------------------------------------------------------------------


def test_trace_is_streamed_event_by_event_like_json_load(tmp_path, monkeypatch):
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "trace")
    session = ort.InferenceSession(str(FIXTURES / "cnn.onnx"), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, _cnn_batch(2))
    trace = Path(session.end_profiling())
    monkeypatch.setattr(ort_profiler, "_READ_CHUNK", 37)  # events span many reads
    with open(trace) as stream:
        streamed = list(ort_profiler.iter_trace_events(stream))
    assert streamed == json.loads(trace.read_text())
    assert sum(e["name"] == "model_run" for e in streamed) == 3


def test_runs_are_split_at_model_run_and_warmup_is_dropped():
    def node(name, dur, sections=0):
        stats = {"main_thread": {"block_size": [1] * sections}}
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": "Conv", "provider": "CPUExecutionProvider",
                "input_type_shape": [{"float": [1, 3, 8, 8]}, {"float": [4, 3, 3, 3]}], "output_type_shape": [{"float": [1, 4, 8, 8]}],
                "thread_scheduling_stats": stats}}

    run = {"cat": "Session", "name": "model_run", "dur": 1}
    events = [node("a", 900), run,  # warm-up
              node("a", 100), node("loop", 10), node("loop", 20), run,
              node("a", 300, sections=2), run]
    traced = ort_profiler.kernel_runs_from_trace(io.StringIO(json.dumps(events)), warmup=1)
    kernels = traced.kernels
    assert traced.timed == 2
    by_name = {k.node: k for k in kernels}
    assert by_name["a"].times_ms == [0.1, 0.3]
    assert by_name["loop"].times_ms == [0.03, 0.0]  # summed inside a run, 0 where it did not run
    assert by_name["a"].inputs[1] == TensorInfo((4, 3, 3, 3), "float")
    # the profiler's own cost is taken off every event (a Loop's kernel pays it per iteration), plus its
    # cost per parallel section for a kernel that ran on the thread pool; never below zero
    overhead = ort_profiler.ProfilerOverhead(serial_ms=0.015, section_ms=0.02)
    corrected = ort_profiler.kernel_runs_from_trace(io.StringIO(json.dumps(events)), warmup=1, overhead=overhead)
    by_name = {k.node: k for k in corrected.kernels}
    assert by_name["a"].times_ms == pytest.approx([0.085, 0.245])
    assert by_name["loop"].times_ms == pytest.approx([0.0 + 0.005, 0.0])
    assert corrected.mean_overhead_ms == pytest.approx((0.015 + 0.010 + 0.015 + 0.055) / 4)  # taken off, per timed event


def test_the_per_section_overhead_is_taken_off_only_where_it_stands_out_of_the_noise():
    """The parallel probe's cost less the serial one's counts only above twice its standard
    error: a difference the samples' spread could make would move every parallel kernel by noise."""
    quiet = ort_profiler.median_estimate([0.0085, 0.0086, 0.0084, 0.0086, 0.0085, 0.0087, 0.0084, 0.0085, 0.0086])
    serial = ort_profiler.median_estimate([0.0033, 0.0032, 0.0033, 0.0034, 0.0033, 0.0033, 0.0032, 0.0033, 0.0034])
    assert quiet.ms == pytest.approx(0.0085) and 0 < quiet.error_ms < 0.0001
    assert ort_profiler.section_overhead(serial, quiet) == pytest.approx(0.0052)
    noisy = ort_profiler.median_estimate([-0.02, 0.03, 0.0085, -0.01, 0.045, 0.0, 0.02, -0.015, 0.03])
    assert noisy.ms == pytest.approx(0.0085) and noisy.error_ms > 0.005
    assert ort_profiler.section_overhead(serial, noisy) == 0.0
    # one preempted sample does not widen the error (median absolute deviation, not the standard deviation)
    assert ort_profiler.median_estimate([0.0085, 0.0086, 0.0084, 0.0086, 0.0085, 0.0087, 0.0084, 0.0085, 0.9]).error_ms < 0.0001


def test_coverage_is_the_share_of_each_run_its_kernels_took_less_the_profilers_cost():
    """Coverage compares a run's kernels with that run's own model_run event (one clock), so it
    cannot pass 1, whatever the plain session's latency or the overhead estimate."""
    def node(name, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": "Relu", "provider": "CPUExecutionProvider"}}

    def run(dur):
        return {"cat": "Session", "name": "model_run", "dur": dur}

    events = [node("a", 50), run(60),  # warm-up
              node("a", 100), node("b", 30), run(200),
              node("a", 290), node("b", 10), run(300)]
    plain = ort_profiler.kernel_runs_from_trace(io.StringIO(json.dumps(events)), warmup=1)
    assert plain.coverage == pytest.approx([130 / 200, 1.0])
    corrected = ort_profiler.kernel_runs_from_trace(io.StringIO(json.dumps(events)), warmup=1,
                                                   overhead=ort_profiler.ProfilerOverhead(serial_ms=0.005))
    assert corrected.coverage == pytest.approx([120 / 190, 290 / 290])
    measured = Measurement("cpu", corrected.kernels, e2e_ms=[0.05, 0.05], session_ms=1.0, peak_rss_mb=None,
                           run_coverage=corrected.coverage)  # a plain run 4x faster than the profiled ones
    make, f32 = onnx.helper, onnx.TensorProto.FLOAT
    model = ir.from_proto(make.make_model(make.make_graph(
        [make.make_node("Relu", ["x"], ["y"], name="a"), make.make_node("Relu", ["y"], ["z"], name="b")], "g",
        [make.make_tensor_value_info("x", f32, [1])], [make.make_tensor_value_info("z", f32, [1])])))
    assert build_profile(measured, model, warmup=1).total.coverage == pytest.approx((120 / 190 + 1.0) / 2)


def test_end_to_end_time_comes_from_a_plain_session_run_interleaved_with_the_profiled_one(monkeypatch):
    calls = []

    class Recorded:
        def __init__(self, session, kind):
            self.session, self.kind = session, kind

        def run(self, names, feed):
            calls.append(self.kind)
            return self.session.run(names, feed)

        def end_profiling(self):
            return self.session.end_profiling()

    real = ort_profiler.make_session

    def recording(model, **kwargs):
        options = kwargs.get("session_options")
        kind = "profiled" if options is not None and options.enable_profiling else "plain"
        return Recorded(real(model, **kwargs), f"probe {kind}" if model.graph.name == "calibration" else kind)

    monkeypatch.setattr(ort_profiler, "make_session", recording)
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    measured = ort_profiler.profile_session(model, [_cnn_batch(2)], backend="cpu", providers=["CPUExecutionProvider"],
                                            runs=4, warmup=2)
    assert calls[0] == "plain"  # its first run, before the profiled session exists
    model_runs = [c for c in calls if not c.startswith("probe")]
    rounds = [model_runs[i:i + 2] for i in range(1, len(model_runs), 2)]
    assert rounds == [["plain", "profiled"], ["profiled", "plain"]] * 3  # warm-up and timed rounds, order alternating
    # the profiler's own cost is probed after every round, with and without the profiler, on a serial
    # and a parallel chain
    probe = ["probe profiled", "probe plain"] * 2
    assert calls[1:19] == ["plain", "profiled", *probe, "profiled", "plain", *probe, "plain", "profiled", *probe]
    assert len(measured.e2e_ms) == 4 and all(len(k.times_ms) == 4 for k in measured.kernels)
    assert measured.kernel_overhead_ms > 0


def test_a_big_model_is_profiled_in_one_session_that_also_gives_its_end_to_end_time(monkeypatch, caplog):
    """A model big enough for sessions to share its weights (any model, here): one profiled session:
    every run of it but the first is in the trace, warm-up dropped, and timed end to end."""
    created = []
    real = ort_profiler.make_session

    def counting(model, **kwargs):
        if model.graph.name != "calibration":
            created.append(kwargs.get("session_options"))
        return real(model, **kwargs)

    monkeypatch.setattr(ort_profiler, "make_session", counting)
    monkeypatch.setattr(ort_profiler, "sharing_pays", lambda model: True)
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    with caplog.at_level("WARNING"):
        measured = ort_profiler.profile_session(model, [_cnn_batch(2)], backend="cpu", providers=["CPUExecutionProvider"],
                                                runs=4, warmup=2)
    assert len(created) == 1 and created[0].enable_profiling
    assert "timed runs" not in caplog.text  # the first run, before the loop, counted as warm-up
    assert len(measured.e2e_ms) == 4 and all(len(k.times_ms) == 4 for k in measured.kernels)
    per_run = [sum(k.times_ms[i] for k in measured.kernels) for i in range(4)]
    assert all(0 < kernels <= e2e for kernels, e2e in zip(per_run, measured.e2e_ms, strict=True))  # its kernels, in its time


def _coverage_profile(model, feeds, attempts: int = 3):
    """A cpu profile, measured again (up to ``attempts`` times) while its coverage misses the
    target: on a loaded shared machine one measurement can be off, while a broken trace
    reading or aggregation misses it every time."""
    for _ in range(attempts):
        profile = get_backend("cpu").profile(model, feeds, runs=30, warmup=3)
        if abs(profile.total.coverage - 1.0) <= COVERAGE_TOLERANCE:
            break
    return profile


def test_layer_times_cover_end_to_end_latency_on_cnn_at_batch_64():
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    profile = _coverage_profile(model, [_cnn_batch(64)])
    assert abs(profile.total.coverage - 1.0) <= COVERAGE_TOLERANCE, profile.total
    assert profile.runs == 30 and profile.total.session_ms > 0
    assert [layer.median_ms for layer in profile.layers] == sorted((layer.median_ms for layer in profile.layers), reverse=True)
    assert all(layer.origin or layer.inserted_by for layer in profile.layers)
    covered = {name for layer in profile.layers for name in layer.origin}
    assert {"node_conv2d", "node_conv2d_1", "node_conv2d_2", "node_linear"} <= covered
    assert abs(sum(layer.share for layer in profile.layers) - 1.0) < 1e-6


@pytest.mark.realmodel
def test_layer_times_cover_end_to_end_latency_on_ppocr_det():
    from realmodels import det_input, text_photos

    path = real_model_or_skip("ppocr_det")
    model, _ = load_onnx(path)
    feed = {"x": det_input(text_photos()["page"], (192, 384))}
    profile = _coverage_profile(model, [feed])
    assert abs(profile.total.coverage - 1.0) <= COVERAGE_TOLERANCE, profile.total
    original = {n.name for n in onnx.load(str(path)).graph.node}
    assert all(set(layer.origin) <= original and (layer.origin or layer.inserted_by == "runtime") for layer in profile.layers)
    assert profile.layers[0].op_type == "Conv" and profile.layers[0].flops > 0


# --- names after a fusion ---------------------------------------------------------------------


def test_fused_layers_are_named_by_the_original_nodes(tmp_path):
    fused = _fused_cnn(tmp_path)
    fused_nodes = {n.name for n in onnx.load(str(fused)).graph.node}
    assert not {"node__native_batch_norm_legit_no_training__0", "node_conv2d"} <= fused_nodes  # Conv+BN really fused
    result = run_cli("profile", str(fused), "--calib", str(FIXTURES / "cnn.npz"), "--runs", "5", "--format", "json")
    assert result.code == 0, result.stderr
    layers = result.json()["profile"]["layers"]
    convs = [layer for layer in layers if layer["op_type"] == "Conv"]
    assert len(convs) == 3
    for conv, bn in [("node_conv2d", "node__native_batch_norm_legit_no_training__0"),
                     ("node_conv2d_1", "node__native_batch_norm_legit_no_training_1__0"),
                     ("node_conv2d_2", "node__native_batch_norm_legit_no_training_2__0")]:
        assert any({conv, bn} <= set(layer["origin"]) for layer in convs), (conv, convs)
    for layer in layers:
        assert set(layer["origin"]) <= CNN_ORIGINAL
        assert layer["origin"] or layer["inserted_by"]


def test_a_paddle_conv_with_its_batchnorm_folded_in_is_named_as_the_conv(tmp_path):
    """Paddle exports unnamed nodes; after fuse folds a BatchNormalization into its Conv, the
    layer's origin (sorted) starts with the BatchNormalization, but the layer is the Conv."""
    make, f32 = onnx.helper, onnx.TensorProto.FLOAT
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array(a.astype(np.float32), name) for name, a in [
        ("w", rng.standard_normal((8, 3, 3, 3))), ("scale", rng.uniform(0.5, 1.5, 8)), ("bias", rng.standard_normal(8)),
        ("mean", rng.standard_normal(8)), ("var", rng.uniform(0.5, 1.5, 8))]]
    graph = make.make_graph([
        make.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        make.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"]),
        make.make_node("Relu", ["b"], ["y"])], "paddle_like",
        [make.make_tensor_value_info("x", f32, [1, 3, 32, 32])], [make.make_tensor_value_info("y", f32, [1, 8, 32, 32])], weights)
    source, fused = tmp_path / "paddle_like.onnx", tmp_path / "fused.onnx"
    onnx.save(make.make_model(graph, opset_imports=[make.make_opsetid("", 17)]), str(source))
    built = run_cli("optimize", str(source), "-o", str(fused), "--passes", "fuse", "--latency-rounds", "0", "--profile-runs", "0")
    assert built.code == 0, built.stderr
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(fused)).graph.node}
    result = run_cli("profile", str(fused), "--runs", "3", "--format", "json")
    assert result.code == 0, result.stderr
    conv = next(layer for layer in result.json()["profile"]["layers"] if layer["op_type"] in ("Conv", "FusedConv"))
    assert any(name.startswith("BatchNormalization") for name in conv["origin"]), conv
    assert conv["name"].startswith("Conv") and conv["name"] in conv["origin"], conv


@pytest.mark.parametrize("origin, op_type, name", [
    (["BatchNormalization@0", "Constant_3", "Conv@0"], "Conv", "Conv@0"),  # Paddle Conv+BN
    (["Add@11", "Constant_165", "Conv@20", "HardSigmoid@2"], "FusedConv", "Conv@20"),
    (["node__native_batch_norm_legit_no_training__0", "node_conv2d"], "QLinearConv", "node_conv2d"),
    (["MatMul@0", "Add@43"], "Gemm", "MatMul@0"),  # a heavy op named by the heavy op it was
    (["BatchNormalization@22", "Constant_43", "Conv@32", "Add@23"], "Reshape", "BatchNormalization@22"),  # not the Conv's name
    (["Constant_1", "Relu_3"], "Relu", "Relu_3"),
    (["ConvTranspose@1", "BatchNormalization@1"], "ConvTranspose", "ConvTranspose@1"),
    (["a/ConvTranspose", "b/Conv"], "Conv", "b/Conv"),
])
def test_a_fused_layer_is_named_by_the_original_node_it_computes(origin, op_type, name):
    assert principal_origin(origin, op_type) == name


def test_openvino_names_the_layers_it_made_from_a_fused_node_by_that_node(tmp_path):
    """OpenVINO translates contrib ops (MultiHeadAttention, SkipLayerNormalization) into layers
    of its own naming (``MVN_29``, ``Transpose_104``); they are found by what lies downstream."""
    ok, why = available_backends()["openvino"]().available()
    if not ok:
        pytest.skip(why)
    backend = get_backend("openvino")
    out = tmp_path / "transformer_fused.onnx"
    # fused for OpenVINO: for ONNX Runtime CPU, whose SkipLayerNormalization is slow, fuse makes none
    result = run_cli("optimize", str(FIXTURES / "transformer.onnx"), "-o", str(out), "--passes", "fuse", "--backend", "openvino",
                     "--calib", str(FIXTURES / "transformer.npz"), "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    model, _ = load_onnx(out)
    assert {"MultiHeadAttention", "SkipLayerNormalization"} <= {node.op_type for node in model.graph}
    original = {n.name for n in onnx.load(str(FIXTURES / "transformer.onnx")).graph.node}
    profile = backend.profile(model, fixture_feeds("transformer", count=1), runs=2, warmup=1)
    assert [layer.node for layer in profile.layers if layer.inserted_by == "runtime"] == []
    assert all(set(layer.origin) <= original and (layer.origin or layer.inserted_by) for layer in profile.layers)
    made = [layer for layer in profile.layers if layer.op_type == "MVN" and not layer.node.startswith("node_")]
    assert made and all(layer.origin for layer in made)  # layer norms OpenVINO split out of SkipLayerNormalization


def test_optimize_puts_before_and_after_profiles_into_the_report(tmp_path):
    recipe = validate_recipe({"passes": ["fuse"], "calibration": {"data": str(FIXTURES / "cnn.npz")}})
    report = optimize(str(FIXTURES / "cnn.onnx"), tmp_path / "out.onnx", recipe, OptimizeOptions(latency_rounds=3, profile_runs=3))
    data = report.to_dict()["profile"]
    assert data["before"]["runs"] == 3 and data["after"]["runs"] == 3
    assert any(layer["before_ms"] is not None for layer in data["after"]["layers"])
    # end to end, the compare reuses optimize's interleaved before/after timing
    compare, latency = data["after"]["compare"], report.to_dict()["summary"]["latency_ms"]
    assert compare["timing"]["method"] == "interleaved"
    assert (compare["before_ms"], compare["after_ms"], compare["speedup"]) == (latency["before"], latency["after"], latency["speedup"])
    plain = optimize(str(FIXTURES / "cnn.onnx"), tmp_path / "plain.onnx", recipe, OptimizeOptions(latency_rounds=0))
    assert plain.profile is None


# --- compare ------------------------------------------------------------------------------------


def _break_conv(tmp_path: Path, weight: str) -> Path:
    proto = onnx.load(str(FIXTURES / "cnn.onnx"))
    init = next(t for t in proto.graph.initializer if t.name == weight)
    values = onnx.numpy_helper.to_array(init)
    broken = np.random.default_rng(0).standard_normal(values.shape).astype(values.dtype)
    init.CopyFrom(onnx.numpy_helper.from_array(broken, weight))
    path = tmp_path / "cnn_broken.onnx"
    onnx.save(proto, str(path))
    return path


def test_compare_finds_the_first_broken_layer(tmp_path):
    broken = _break_conv(tmp_path, "block.conv1.weight")  # node_conv2d_1, the second Conv
    result = run_cli("profile", str(broken), "--compare", str(FIXTURES / "cnn.onnx"), "--calib", str(FIXTURES / "cnn.npz"),
                     "--runs", "3", "--format", "json")
    assert result.code == 0, result.stderr
    profile = result.json()["profile"]
    first = profile["compare"]["first_divergence"]
    assert profile["compare"]["timing"]["method"] == "interleaved" and profile["compare"]["timing"]["rounds"] == 3
    assert profile["compare"]["speedup"] == pytest.approx(profile["compare"]["before_ms"] / profile["compare"]["after_ms"])
    layers = {layer["name"]: layer for layer in profile["layers"]}
    assert "node_conv2d_1" in layers[first["name"]]["origin"]
    assert first["sqnr_db"] < 10
    stem = next(layer for layer in profile["layers"] if "node_conv2d" in layer["origin"])
    assert stem["name"] in profile["compare"]["exact"]  # before the broken layer, outputs are identical
    assert all(layer["before_ms"] is not None and layer["speedup"] is not None for layer in profile["layers"] if layer["op_type"] == "Conv")


def test_sqnr_in_chunks_equals_sqnr_all_at_once(tmp_path):
    reference, _ = load_onnx(FIXTURES / "cnn.onnx")
    broken, _ = load_onnx(_break_conv(tmp_path, "block.conv2.weight"))
    names = ["relu", "relu_1", "getitem_6", "add_40", "relu_2", "mean", "logits"]
    backend = get_backend("cpu")
    feeds = [_cnn_batch(2)]
    small = Measurements(max_bytes=2 * 2 * 16 * 16 * 16 * 4)  # two 2x16x16x16 activations per chunk (each model: half)
    chunked = tensor_sqnr(backend, reference, broken, feeds, names, measure=small)
    whole = tensor_sqnr(backend, reference, broken, feeds, names)
    assert small.counts["sessions"] > 2 * 2  # several chunks, two models each
    assert chunked.keys() == whole.keys() == set(names)
    assert chunked == pytest.approx(whole)
    assert chunked["relu"] == chunked["relu_1"] == float("inf") and chunked["getitem_6"] < 10


# --- FLOP rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "inputs", "output", "flops"), [
    ("Conv", [(1, 16, 8, 8), (32, 16, 3, 3), (32,)], (1, 32, 8, 8), 2 * 32 * 64 * 16 * 9),
    ("Conv", [(1, 32, 8, 8), (32, 1, 3, 3)], (1, 32, 8, 8), 2 * 32 * 64 * 9),  # depthwise
    ("ConvTranspose", [(1, 8, 4, 4), (8, 4, 2, 2)], (1, 4, 8, 8), 2 * 8 * 16 * 4 * 4),
    ("MatMul", [(2, 5, 64), (64, 32)], (2, 5, 32), 2 * 2 * 5 * 32 * 64),
    ("Gemm", [(4, 16), (10, 16), (10,)], (4, 10), 2 * 4 * 10 * 16),
    ("MultiHeadAttention", [(1, 8, 64), (1, 12, 64), (1, 12, 64)], (1, 8, 64), 2 * 2 * 8 * 12 * 64),
    ("Relu", [(2, 3, 4)], (2, 3, 4), 24),
    ("Reshape", [(2, 3, 4), (2,)], (6, 4), 0),
])
def test_flops_from_shapes(op, inputs, output, flops):
    tensors = [TensorInfo(shape, "float") for shape in inputs]
    assert kernel_flops(op, tensors, [TensorInfo(output, "float")]) == flops


# --- formats --------------------------------------------------------------------------------


def test_every_format_is_written(tmp_path):
    summary = tmp_path / "summary.md"
    common = ["profile", str(FIXTURES / "mlp.onnx"), "--calib", str(FIXTURES / "mlp.npz"), "--runs", "5"]
    outputs = {}
    for fmt in ("json", "md", "csv", "html"):
        out = tmp_path / f"profile.{fmt}"
        result = run_cli(*common, "--format", fmt, "-o", str(out), env={"GITHUB_STEP_SUMMARY": str(summary)})
        assert result.code == 0, result.stderr
        outputs[fmt] = out.read_text()
    data = json.loads(outputs["json"])
    assert data["schema_version"] == 1
    profile = data["profile"]
    assert {"backend", "runs", "total", "layers"} <= profile.keys()
    assert {"median_ms", "p90_ms", "layers_sum_ms", "coverage"} <= profile["total"].keys()
    keys = {"name", "origin", "op_type", "kernel", "provider", "median_ms", "p90_ms", "share", "flops", "params", "bytes", "precision"}
    assert all(keys <= layer.keys() and "sqnr_db" not in layer for layer in profile["layers"])
    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    # separate profiling runs: layers of near-equal time may swap places, so compare as sets
    assert sorted(r["name"] for r in rows) == sorted(layer["name"] for layer in profile["layers"])
    assert outputs["md"].startswith("### Profile of `mlp.onnx` on `cpu`") and len(outputs["md"].splitlines()) < 30
    assert summary.read_text().count("### Profile of `mlp.onnx` on `cpu`") == 4  # appended by every run
    assert "<svg" in outputs["html"] and "<script" not in outputs["html"] and "http://" not in outputs["html"].replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    table = run_cli(*common)
    assert table.code == 0 and "Time by op type" in table.stdout and "coverage" in table.stdout


class _Elements(HTMLParser):
    """Every element of a page as (tag, attributes, its own text), in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        element = (tag, dict(attrs), [])
        self.found.append(element)
        if tag not in ("col", "meta", "br", "line", "rect", "circle"):
            self._open.append(element[2])

    def handle_endtag(self, tag):
        if tag not in ("col", "meta", "br", "line", "rect", "circle") and self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            self._open[-1].append(data)

    def all(self, tag: str, css: str = "") -> list[tuple[dict[str, str], str]]:
        return [(attrs, "".join(text)) for t, attrs, text in self.found
                if t == tag and set(css.split()) <= set(attrs.get("class", "").split())]


_CEILINGS = Ceilings(peak_gflops=200.0, bandwidth_gbs=25.0, compute_how="fp32 MatMul 512x512x512 on ONNX Runtime (MLAS)",
                     memory_how="copy of 64 MiB on 2 threads", machine="Test CPU (x86_64 AVX2, 2 cores)")


def _synthetic_profile(layers: int = 14) -> dict:
    """A profile of ``layers`` layers of spread-out intensity and time, one with a very long name."""
    rows = []
    for i in range(layers):
        ms = 0.5 / (i + 1)
        flops = int(1.18e6 * (i % 5 + 1) * 10 ** (i % 3)) if i % 4 != 3 else 0
        moved = 58_400 * (i % 4 + 1)
        name = f"/backbone/stage{i}/block/conv_with_a_rather_long_exported_name_{i}/Conv" if i == 1 else f"Conv@{i}"
        rows.append(Layer(name=name, origin=[f"BatchNormalization@{i}", f"Conv@{i}"], op_type="Conv",
                          kernel="com.microsoft.nchwc::Conv", provider="CPUExecutionProvider", median_ms=ms, p90_ms=ms * 1.2,
                          share=0.0, flops=flops, params=2320 * (i + 1), bytes=moved, precision="fp32", node=f"k{i}", order=i,
                          intensity=flops / moved if flops else None, gflops_per_s=flops / (ms * 1e6) if flops else None,
                          before_ms=ms * 1.5, after_ms=ms, speedup=1.5, sqnr_db=None if i % 2 else 45.0))
    total_ms = sum(layer.median_ms for layer in rows)
    for layer in rows:
        layer.share = layer.median_ms / total_ms
    profile = Profile(backend="cpu", runs=5, warmup=1, layers=rows,
                      total=Totals(median_ms=total_ms * 1.1, p90_ms=total_ms * 1.3, layers_sum_ms=total_ms, coverage=0.91,
                                   session_ms=12.0, peak_rss_mb=100.0),
                      compare={"other": "original.onnx", "before_ms": total_ms * 1.6, "after_ms": total_ms * 1.1, "speedup": 1.45,
                               "threshold_db": 30.0, "first_divergence": None, "exact": [], "removed": []})
    return profile.to_dict()


def test_html_page_draws_the_machine_ceilings_names_the_slowest_layers_and_scales_its_numbers():
    profile = _synthetic_profile()
    page = html_page(profile, "synthetic", _CEILINGS)
    assert "<script" not in page and not re.search(r"(https?:)?//", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    found = _Elements(page)
    # the roofline's two ceilings, their values, and where they come from
    (compute, _), = found.all("line", "ceiling compute")
    (memory, _), = found.all("line", "ceiling memory")
    assert compute["y1"] == compute["y2"] and compute["stroke"] == COMPUTE  # flat from the ridge
    assert float(memory["y2"]) < float(memory["y1"]) and memory["x2"] == compute["x1"] and memory["stroke"] == MEMORY  # rising to it
    assert "200 GFLOP/s" in found.all("text", "ceiling-label compute")[0][1]
    assert "25.0 GB/s" in found.all("text", "ceiling-label memory")[0][1]
    source = " ".join(text for _, text in found.all("text", "ceiling-source"))
    assert "measured on this machine" in source and "MatMul" in source and "copy of 64 MiB" in source
    # the slowest layers with FLOPs are named beside their points
    slowest = [layer["name"] for layer in profile["layers"] if layer["gflops_per_s"]][:LABELLED]
    labels = [text for _, text in found.all("text", "point-label")]
    assert len(labels) == LABELLED and all(any(label.startswith(name[:20]) for label in labels) for name in slowest), labels
    # every bar's value label starts past the longest bar of its row
    right, rows = 0.0, 0
    for tag, attrs, _ in found.found:
        if tag == "rect" and "bar" in attrs.get("class", ""):
            right = max(right, float(attrs["x"]) + float(attrs["width"]))
        elif tag == "text" and attrs.get("class") == "value":
            assert float(attrs["x"]) >= right + 4
            right, rows = 0.0, rows + 1
    assert rows == len(profile["layers"]) + len(profile["by_op_type"])
    # the table: fixed layout within the page, share in percent, FLOPs and bytes with units, long names wrap
    assert "table-layout:fixed" in page and "width:100%" in page
    assert sum(float(attrs["style"].removeprefix("width:").removesuffix("%")) for attrs, _ in found.all("col")) <= 100
    headers = [text for _, text in found.all("th")]
    cells = [text for _, text in found.all("td")]
    table = [dict(zip(headers, cells[i:i + len(headers)], strict=True)) for i in range(0, len(cells), len(headers))]
    first = table[0]
    assert first["share"].endswith("%") and first["FLOPs"] == "1.18 M" and first["bytes"] == "58.4 kB", first
    assert table[1]["layer"].startswith("/backbone/stage1") and "title" in found.all("td", "name")[1][0]


def test_machine_ceilings_are_measured_once_per_process():
    first = machine_ceilings(1)
    assert first is machine_ceilings(1)  # cached
    assert first.peak_gflops > 0.5 and first.bandwidth_gbs > 0.1 and first.ridge > 0
    assert "MatMul" in first.compute_how and "copy" in first.memory_how


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Run by the test in Chromium on a copy of the page (the page itself has no script): where the
# browser really put the plots' texts, bars and the table, at a 1400 px wide window.
_LAYOUT_PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const all = q => [...document.querySelectorAll(q)].map(box);
document.body.insertAdjacentHTML("beforeend", "<pre id='probe'>" + JSON.stringify({
  viewport: window.innerWidth, page: document.documentElement.scrollWidth,
  table: box(document.querySelector("table.layers")),
  svgs: [...document.querySelectorAll("svg.bars")].map(s => ({bars: [...s.querySelectorAll("rect.bar")].map(box),
                                                               values: [...s.querySelectorAll("text.value")].map(box)})),
  points: all("text.point-label"), ceilings: all("text.ceiling-label"), dots: all("svg.roofline circle"),
}) + "</pre>");
</script>"""


def _overlaps(a, b, slack=0.5) -> bool:
    return a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack and b[1] < a[3] - slack


def test_html_page_renders_its_plots_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = tmp_path / "profile.html"
    result = run_cli("profile", str(_fused_cnn(tmp_path)), "--compare", str(FIXTURES / "cnn.onnx"),
                     "--calib", str(FIXTURES / "cnn.npz"), "--runs", "5", "--format", "html", "-o", str(page))
    assert result.code == 0, result.stderr
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars", "--window-size=1400,2000"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[1] == 1400

    def painted(colour: str, tolerance: int = 12) -> np.ndarray:
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return np.all(np.abs(pixels - rgb) < tolerance, axis=-1)

    assert painted("#2f6fb0").sum() > 2_000 and painted("#c8a03c").sum() > 500  # the before/after bars were drawn
    assert painted(COMPUTE).sum() > 400 and painted(MEMORY).sum() > 400  # both ceilings, and their labels
    # the table's right border is inside the window, and none of its row lines runs on to the window's
    # edge: the table did not overflow 1400 px
    border = painted("#b9c3cf", tolerance=6)
    columns = np.nonzero(border.sum(axis=0) > 40)[0]
    assert columns.size and columns.max() < 1400 - 8 and not border[:, 1400 - 8:].any(), columns.max(initial=-1)

    # where Chromium laid things out, read from a copy of the page with a probe script
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", _LAYOUT_PROBE + "</body>"))
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120, check=False).stdout
    layout = json.loads(re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S).group(1).replace("&quot;", '"'))
    assert layout["viewport"] == 1400 and layout["page"] <= 1400, layout["page"]  # no horizontal scrolling
    assert layout["table"][2] <= 1400 - 8
    for svg in layout["svgs"]:
        assert svg["values"] and not any(_overlaps(v, b) for v in svg["values"] for b in svg["bars"])
        assert not any(_overlaps(a, b) for i, a in enumerate(svg["values"]) for b in svg["values"][i + 1:])
    labels = layout["points"]
    assert len(labels) == min(LABELLED, len(layout["dots"])) and len(layout["ceilings"]) == 2
    assert not any(_overlaps(a, b) for i, a in enumerate(labels + layout["ceilings"]) for b in (labels + layout["ceilings"])[i + 1:])


def test_the_layer_table_stays_readable_at_80_columns_and_shows_every_column_when_wide():
    common = ["profile", str(FIXTURES / "convnet.onnx"), "--calib", str(FIXTURES / "convnet.npz"), "--runs", "3"]
    narrow = run_cli(*common, env={"COLUMNS": "80"}).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "node_conv2d_3 (blocks.0.conv2)" in narrow  # whole names, with their PyTorch module
    assert "GFLOP/s" not in narrow and "--format csv has every field" in narrow
    wide = run_cli(*common, env={"COLUMNS": "200"}).stdout
    assert "GFLOP/s" in wide and "origin" in wide


def test_compare_of_an_int8_model_compares_a_folded_relu_with_the_relu_not_with_the_conv_before_it(tmp_path):
    """int8 folds a Conv's Relu into its output range; the tensor named after the Relu must hold
    clipped values in the int8 model too, or --compare reports a false divergence (-0.6 dB)."""
    out = tmp_path / "int8.onnx"
    built = run_cli("optimize", str(FIXTURES / "convnet.onnx"), "-o", str(out), "-p", "fuse,quantize{mode=int8,speed=rules}",
                    "--calib", str(FIXTURES / "convnet.npz"), "--latency-rounds", "0", "--profile-runs", "0")
    assert built.code == 0, built.stderr
    result = run_cli("profile", str(out), "--compare", str(FIXTURES / "convnet.onnx"), "--calib", str(FIXTURES / "convnet.npz"),
                     "--runs", "3", "--format", "json")
    profile = result.json()["profile"]
    assert profile["compare"]["first_divergence"] is None
    relus = {layer["tensor"]: layer["sqnr_db"] for layer in profile["layers"]
             if (layer["tensor"] or "").startswith("relu_") and layer["sqnr_db"] is not None}
    assert relus and min(relus.values()) > 30, relus
    # At 80 columns the compared table folds names and ops instead of cutting them off.
    narrow = run_cli("profile", str(out), "--compare", str(FIXTURES / "convnet.onnx"), "--calib", str(FIXTURES / "convnet.npz"),
                     "--runs", "3", env={"COLUMNS": "80"}).stdout
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    # Profiled alone, a QLinearConv is named by its Conv (not the folded BatchNorm or the Relu
    # the Q/DQ around it carry) and counts the FLOPs of the weight ORT pre-packed out of its trace.
    alone = run_cli("profile", str(out), "--calib", str(FIXTURES / "convnet.npz"), "--runs", "3", "--format", "json").json()["profile"]
    qconvs = [layer for layer in alone["layers"] if layer["op_type"] == "QLinearConv"]
    assert qconvs and all(layer["name"].startswith("node_conv2d") and layer["flops"] > 0 for layer in qconvs), qconvs


def test_a_layer_onnx_runtime_fused_is_named_by_its_nodes_and_not_folded_into_the_next_layer(tmp_path):
    """ONNX Runtime turns x * Sigmoid(x) into a QuickGelu it names ``<Mul>/QuickGeluFusion/``.
    Unresolved, that kernel named nothing, and the next Conv's layer took the Sigmoid and the
    Mul, so compare gave the SiLU's time to the Conv (YOLOv8n: no before time for most Convs)."""
    make, f32 = onnx.helper, onnx.TensorProto.FLOAT
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in [("w1", (16, 3, 3, 3)), ("w2", (16, 16, 3, 3))]]
    graph = make.make_graph([
        make.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        make.make_node("Sigmoid", ["c1"], ["s1"], name="act/Sigmoid"),
        make.make_node("Mul", ["c1", "s1"], ["a1"], name="act/Mul"),
        make.make_node("Conv", ["a1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")], "silu",
        [make.make_tensor_value_info("x", f32, [1, 3, 32, 32])], [make.make_tensor_value_info("y", f32, [1, 16, 32, 32])], weights)
    source = tmp_path / "silu.onnx"
    onnx.save(make.make_model(graph, opset_imports=[make.make_opsetid("", 17)]), str(source))
    result = run_cli("profile", str(source), "--runs", "3", "--format", "json")
    assert result.code == 0, result.stderr
    layers = result.json()["profile"]["layers"]
    silu = next(layer for layer in layers if layer["op_type"] == "QuickGelu")
    assert silu["node"].endswith("QuickGeluFusion/")  # what ONNX Runtime 1.32 names it; the test is about that name
    assert set(silu["origin"]) == {"act/Sigmoid", "act/Mul"} and silu["inserted_by"] is None
    conv2 = next(layer for layer in layers if "conv2" in layer["origin"])
    assert conv2["origin"] == ["conv2"]
