"""CI gates (core/gates.py): --min-speedup and --max-size write the artifact and exit 5;
--max-drift writes nothing and exits 4; with --json the report is on stdout either way."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import FIXTURES, run_cli
from onnxsmith.errors import GateFailed
from onnxsmith.gates import check_gates, gate_rows
from onnxsmith.latency import LatencyStats, speedup_summary
from onnxsmith.recipe import GatesSpec, parse_size


def _optimize(out, *extra, env=None):
    return run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--calib", str(FIXTURES / "cnn.npz"), "-p", "fuse",
                   *extra, env=env)


def test_a_failed_speed_or_size_gate_writes_the_artifact_and_exits_5(tmp_path):
    out = tmp_path / "cnn.onnx"
    # no exact fusion makes the cnn 1000x faster, and no model fits in 1 kB: both gates fail on any CPU
    step = tmp_path / "step_summary.md"
    result = _optimize(out, "--min-speedup", "1000", "--max-size", "1kB", "--latency-rounds", "3", "--json",
                       env={"GITHUB_STEP_SUMMARY": str(step)})
    assert result.code == 5, result.stderr
    assert "gate failed: speedup" in result.stderr and "exceeds --max-size 1000 bytes" in result.stderr
    report = result.json()
    gates = {row["gate"]: row for row in report["gates"]}
    assert set(gates) == {"min_speedup", "max_size"} and not any(row["passed"] for row in gates.values())
    assert gates["max_size"]["value"] == report["summary"]["bytes"]["after"] == out.stat().st_size
    assert gates["min_speedup"]["value"] == report["summary"]["latency_ms"]["speedup"]
    assert json.loads((tmp_path / "cnn.report.json").read_text())["gates"] == report["gates"]
    # the CI step summary names the model, the passes, and each gate's verdict
    summary = step.read_text()
    assert summary.startswith("### onnxsmith optimize: `cnn.onnx` → `cnn.onnx`") and "Passes: `fuse` on `cpu`" in summary
    assert "| min_speedup | 1000.00x |" in summary and "| max_size | 1000 B |" in summary and summary.count("**FAILED**") == 2


def _report_with_rounds(ratios: list[float]) -> SimpleNamespace:
    """A report stand-in whose timing had these per-round speedups (the original at 10 ms each round)."""
    before = LatencyStats(10.0, 10.0, len(ratios), tuple(10.0 for _ in ratios))
    after_samples = tuple(10.0 / r for r in ratios)
    after = LatencyStats(sorted(after_samples)[len(ratios) // 2], max(after_samples), len(ratios), after_samples)
    return SimpleNamespace(summary=SimpleNamespace(latency_ms=speedup_summary(before, after), drift=0.0, bytes={"after": 1}))


@pytest.mark.parametrize(("ratios", "passed", "why"), [
    ([1.5] * 9, True, ""),
    # median 1.3x, but the artifact was no faster in 3 of the 9 rounds: not at least 1.2x in most rounds
    ([0.9, 1.3, 1.0, 1.3, 1.3, 1.0, 1.3, 1.4, 1.3], False, "at least 1.00x in 3 of 4 rounds"),
    ([1.5] * 3, False, "--latency-rounds 9 or more"),
])
def test_the_speed_gate_holds_only_when_most_rounds_reached_it(ratios, passed, why):
    report = _report_with_rounds(ratios)
    report.gates = gate_rows(GatesSpec(min_speedup=1.2), None, report)
    assert report.gates[0]["passed"] is passed
    if passed:
        check_gates(report)
    else:
        with pytest.raises(GateFailed, match=why.replace(".", r"\.")):
            check_gates(report)


def test_a_recipe_file_sets_the_gates_like_the_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes: [fuse]\ngates: {max_size: 1kB, min_speedup: 1000}\n")
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "cnn.onnx"), "--recipe", str(recipe),
                     "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "9", "--json")
    assert result.code == 5, result.stderr
    gates = {row["gate"]: row for row in result.json()["gates"]}
    assert gates["max_size"]["limit"] == 1000 and gates["min_speedup"]["limit"] == 1000 and not any(r["passed"] for r in gates.values())


def test_gates_that_hold_exit_0_and_are_listed(tmp_path):
    result = _optimize(tmp_path / "cnn.onnx", "--max-size", "100MB", "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    assert "gate max_size:" in result.stdout and "passed" in result.stdout


def test_a_failed_accuracy_gate_writes_nothing_but_prints_the_report_with_json(tmp_path):
    out = tmp_path / "cnn.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--calib", str(FIXTURES / "cnn.npz"),
                     "-p", "fuse,prune{method=channel,ratio=0.5}", "--metric", "drift", "--max-drift", "1e-9",
                     "--latency-rounds", "0", "--json")
    assert result.code == 4, result.stderr
    report = result.json()
    assert report["gates"] == [{"gate": "max_drift", "limit": 1e-9, "value": report["summary"]["drift"], "passed": False}]
    assert report["artifact"] == {} and list(tmp_path.iterdir()) == []


def test_min_speedup_without_timing_is_refused_before_any_work(tmp_path):
    result = _optimize(tmp_path / "cnn.onnx", "--min-speedup", "1.1", "--latency-rounds", "0")
    assert result.code == 2 and "--min-speedup needs the timing" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_size_is_a_recipe_error(tmp_path):
    result = _optimize(tmp_path / "cnn.onnx", "--max-size", "25 parsecs")
    assert result.code == 2 and "'25 parsecs' is not a size" in result.stderr


@pytest.mark.parametrize("text,size", [("123", 123), ("25MB", 25_000_000), ("1.5 GiB", 1_610_612_736), ("800kB", 800_000)])
def test_sizes_read_with_their_units(text, size):
    assert parse_size(text) == size
