"""The explicit target (core/target.py): named CPUs, target files, what depends on them, and
OpenVINO's inference precision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES, fixture_feeds, ort_outputs, run_cli
from onnxsmith.backend import available_backends, get_backend
from onnxsmith.errors import RecipeError
from onnxsmith.modelio import load_onnx
from onnxsmith.target import PRESETS, detect_cpu, load_target


def test_named_cpus_say_what_their_int8_kernels_do():
    assert PRESETS["avx2"].u8s8_saturates and not PRESETS["avx2"].int8_dot
    for name in ("avx512-vnni", "avx512-vnni-bf16", "amx", "arm64"):
        assert PRESETS[name].int8_dot and not PRESETS[name].u8s8_saturates, name
    assert [name for name, cpu in PRESETS.items() if cpu.native_bf16] == ["avx512-vnni-bf16", "amx", "arm64"]
    assert PRESETS["amx"].isa == "x86_64 AMX" and PRESETS["avx512-vnni-bf16"].isa == "x86_64 AVX-512 VNNI BF16"


def test_cpu_dependent_capabilities_follow_the_stated_target():
    """ORT CPU's 7-bit weights (u8s8 saturation): read from the target, whatever CPU runs this test."""
    avx2 = get_backend("cpu", load_target("avx2")).capabilities
    vnni = get_backend("cpu", load_target("avx512-vnni")).capabilities
    arm = get_backend("cpu", load_target("arm64")).capabilities
    assert avx2.int8_reduce_range and not vnni.int8_reduce_range and not arm.int8_reduce_range


def test_a_target_file_saved_here_reads_back_as_this_cpu(tmp_path):
    path = tmp_path / "server.json"
    result = run_cli("target", "--save", str(path), "--json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "host" and {r["name"] for r in rows[1:]} == set(PRESETS)
    target = load_target(str(path))
    assert target.cpu.features == detect_cpu().features and target.cpu.arch == detect_cpu().arch
    assert not target.measured_elsewhere and target.warnings() == []


def test_building_for_another_cpu_is_recorded_and_warned(tmp_path):
    other = "avx2" if detect_cpu().int8_dot else "avx512-vnni"
    out = tmp_path / "cnn.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup",
                      "--target", other, "--threads", "1", "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"]["cpu"]["source"] == other and report["target"]["threads"] == 1
    assert report["target"]["measured_on"]["features"] == sorted(detect_cpu().features)
    assert any("int8 kernels round differently on the target" in w for w in report["warnings"])
    assert report["recipe"]["target"] == {"cpu": other, "threads": 1, "precision": "fp32", "costs": None}


@pytest.mark.parametrize("spec,problem", [
    ("no-such-cpu", "neither a known CPU nor a file"),
    ("bad.json", "needs 'arch'"),
])
def test_a_bad_target_is_one_clear_error(tmp_path, monkeypatch, spec, problem):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"cpu": {"model": "x"}}))
    with pytest.raises(RecipeError, match=problem):
        load_target(spec)
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "o.onnx"), "--target", spec)
    assert result.code != 0 and problem in result.stderr and not (tmp_path / "o.onnx").exists()


def test_only_backends_that_can_run_a_whole_model_in_bf16_accept_it():
    with pytest.raises(RecipeError, match="cannot run a whole model in bf16"):
        get_backend("cpu", load_target(precision="bf16"))


def _openvino():
    ok, why = available_backends()["openvino"]().available()
    if not ok:
        pytest.skip(why)


def test_openvino_runs_fp32_unless_told_otherwise():
    """Left alone, OpenVINO's CPU plugin computes in bf16 on CPUs with AVX512-BF16 or AMX; an
    fp32 model's exact checks and profiles must not depend on that."""
    _openvino()
    model, _ = load_onnx(FIXTURES / "cnn.onnx")
    feeds = fixture_feeds("cnn", count=2)
    backend = get_backend("openvino")
    session = backend.create_session(model)
    assert session.precision == "fp32"
    for feed, ref in zip(feeds, ort_outputs(FIXTURES / "cnn.onnx", feeds), strict=True):
        np.testing.assert_allclose(session.run(None, feed)[0], ref[0], rtol=1e-4, atol=1e-5)
    profile = backend.profile(model, feeds, runs=2, warmup=1)
    assert profile.precision == "fp32" and all("bf16" not in layer.kernel for layer in profile.layers)
    assert profile.to_dict()["target"]["cpu"]["isa"] == detect_cpu().isa


def test_openvino_bf16_is_a_measured_lossy_choice(tmp_path):
    """Needs a CPU with bf16 arithmetic (AVX512-BF16 or AMX): elsewhere OpenVINO compiles a bf16
    hint to f32, which the report then says."""
    _openvino()
    if not detect_cpu().native_bf16:
        pytest.skip("needs a CPU with native bf16 (AVX512-BF16, AMX)")
    out = tmp_path / "cnn.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup", "--backend", "openvino",
                      "--inference-precision", "bf16", "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "0", "--json",
                      "--metric", "drift")  # a continuous error: top-1 of a few samples may not move under bf16
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    runtime = report["summary"]["runtime_precision"]
    assert runtime["precision"] == "bf16" and 0 < runtime["drift"] == report["summary"]["drift"]
    assert report["passes"][0]["drift"] < runtime["drift"]  # cleanup itself is exact
    profiled = run_cli("profile", str(out), "--backend", "openvino", "--runs", "2", "--format", "json")
    assert profiled.code == 0, profiled.stderr
    assert json.loads(profiled.stdout)["profile"]["precision"] == "bf16"  # from the artifact's metadata


def test_openvino_optimize_times_the_artifact_against_the_original_with_openvino_defaults(tmp_path):
    """Where OpenVINO would pick another precision itself (bf16 on a CPU that runs it), the
    user's alternative to the artifact is the original compiled with its defaults: timed in the
    same interleaved run and shown. Where its default is fp32 there is nothing to add."""
    _openvino()
    default = get_backend("openvino").as_is_session(load_onnx(FIXTURES / "cnn.onnx")[0]).precision
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "cnn.onnx"), "--passes", "fuse", "--backend",
                     "openvino", "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "9", "--profile-runs", "0", "--json")
    assert result.code == 0, result.stderr
    latency = json.loads(result.stdout)["summary"]["latency_ms"]
    if default == "fp32":
        assert "as_is" not in latency
        return
    as_is = latency["as_is"]
    assert as_is["precision"] == default and as_is["rounds"] == 9 and as_is["after"] == latency["after"]
    assert as_is["speedup"] == pytest.approx(as_is["before"] / as_is["after"])
    table = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "t.onnx"), "--passes", "fuse", "--backend",
                    "openvino", "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "9", "--profile-runs", "0",
                    env={"COLUMNS": "120"})
    assert f"vs openvino's own defaults ({default})" in table.stdout
    warned = any("with its own defaults" in w for w in json.loads(result.stdout)["warnings"])
    assert warned == (as_is["verdict"] == "slower")  # said where the defaults ran the original faster in most rounds
