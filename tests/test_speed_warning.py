"""A lossy artifact no faster than the original on the backend is called out (optimize's
warnings), judged on the per-round timings of the interleaved run, not on one median."""

from __future__ import annotations

import numpy as np
import onnx

from conftest import FIXTURES, run_cli
from onnxsmith.latency import LatencyStats
from onnxsmith.optimize import _speed_warning
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
