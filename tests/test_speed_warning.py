"""A lossy artifact no faster than the original on the backend is called out (optimize's
warnings), judged on the per-round timings of the interleaved run, not on one median."""

from __future__ import annotations

import numpy as np
import onnx

from conftest import FIXTURES, run_cli
from onnxsmith.latency import LatencyStats, speedup_summary
from onnxsmith.optimize import _speed_warning
from onnxsmith.passes.quantize.int8 import int8_not_faster
from onnxsmith.report import PassRecord


def _stats(samples: list[float]) -> LatencyStats:
    return LatencyStats(float(np.median(samples)), float(np.percentile(samples, 90)), len(samples), tuple(samples))


def _record(name: str, *, exact: bool, modified: bool = True) -> PassRecord:
    return PassRecord(name, {}, 0.1, 10, 10, modified, exact)


def test_a_lossy_pass_that_buys_no_speed_is_a_warning():
    timed = {"before": _stats([10.0] * 9), "after": _stats([9.5, 10.5] * 4 + [9.9])}  # faster in 5 of 9 rounds: noise
    assert _speed_warning([_record("fuse", exact=True), _record("quantize", exact=False)], timed, "cpu") == [
        "the lossy pass(es) quantize left the model no faster on cpu (1.01x, not faster in most of 9 rounds): "
        "the artifact loses accuracy for no speed here; try --auto, or drop them"]


def test_no_warning_when_the_lossy_artifact_is_faster_or_nothing_lossy_ran():
    faster = {"before": _stats([10.0] * 9), "after": _stats([8.0] * 9)}
    slower = {"before": _stats([10.0] * 9), "after": _stats([12.0] * 9)}
    assert _speed_warning([_record("quantize", exact=False)], faster, "cpu") == []
    assert _speed_warning([_record("fuse", exact=True)], slower, "cpu") == []  # exact: nothing lost
    assert _speed_warning([_record("quantize", exact=False, modified=False)], slower, "cpu") == []  # changed nothing
    assert _speed_warning([_record("quantize", exact=False)], None, "cpu") == []  # not timed (--latency-rounds 0)


def test_int8_that_quantizes_no_layer_hands_back_the_model_and_says_why(tmp_path):
    """The tiny transformer's hidden size 32 is below what the speed rules let int8 have, so no
    layer is int8: the pass must not claim a change (no ✓ for nothing), and says why."""
    out = tmp_path / "t.onnx"
    result = run_cli("optimize", str(FIXTURES / "transformer.onnx"), "-o", str(out), "--passes", "quantize{mode=int8,speed=rules}",
                     "--calib", str(FIXTURES / "transformer.npz"), "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    record = result.json()["passes"][-1]
    assert not record["modified"] and record["counts"]["layers_quantized"] == 0
    assert record["warnings"] == [
        f"no layer is int8 on cpu: 0 kept float by the accuracy guard or the user, {record['counts']['layers_float_by_rule']} by "
        "the speed rules, the timing or as output heads (the per-layer rows say why); the model is returned unchanged"]
    assert all(row["precision"] == "fp32" and row["reason"] for row in record["layers"])
    assert "DequantizeLinear" not in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_int8_is_kept_only_where_it_was_faster_than_float_in_most_rounds():
    float_ms = _stats([10.0] * 15)
    assert int8_not_faster(float_ms, _stats([8.0] * 15), "cpu") is None
    assert int8_not_faster(float_ms, _stats([12.0] * 15), "cpu") == (
        "no faster than float end to end: 12.000 ms against 10.000 ms (0.83x; faster in fewer than three quarters "
        "of 15 interleaved rounds on cpu)")
    noisy = _stats([8.0] * 10 + [12.0] * 5)  # a better median, but faster in only 10 of 15 rounds
    assert int8_not_faster(float_ms, noisy, "cpu").startswith("no faster than float end to end: 8.000 ms against 10.000 ms (1.25x")


def test_a_speedup_is_called_a_change_only_when_it_held_in_most_rounds():
    base = _stats([10.0] * 9)
    faster = speedup_summary(base, _stats([8.0] * 8 + [11.0]))
    assert faster["verdict"] == "faster" and faster["speedup"] == 10.0 / 8.0 and faster["rounds"] == 9
    assert faster["speedup_iqr"] == [1.25, 1.25]
    assert speedup_summary(base, _stats([12.0] * 9))["verdict"] == "slower"
    noisy = speedup_summary(base, _stats([8.0, 12.0] * 4 + [8.0]))  # a better median, won in 5 of 9 rounds
    assert noisy["verdict"] == "within the noise" and noisy["speedup_iqr"][0] < 1 < noisy["speedup_iqr"][1]
    assert speedup_summary(_stats([10.0] * 3), _stats([5.0] * 3))["verdict"] == "too few rounds to tell"


def test_optimize_shows_the_spread_and_warns_when_the_rounds_are_too_few(tmp_path):
    out = tmp_path / "cnn.onnx"
    few = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "-p", "fuse", "--latency-rounds", "3", "--json")
    assert few.code == 0, few.stderr
    latency = few.json()["summary"]["latency_ms"]
    assert latency["rounds"] == 3 and latency["verdict"] == "too few rounds to tell" and len(latency["speedup_iqr"]) == 2
    assert "--latency-rounds 3 is too few" in " ".join(few.json()["warnings"])
    table = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "-p", "fuse", "--latency-rounds", "9")
    assert "speedup per round (IQR)" in table.stdout and "over 9 rounds" in table.stdout
    assert "too few" not in table.stderr
