"""``optimize --auto`` (core/auto.py): every candidate is a row with a verdict, only a
candidate within budget is kept, a gain within the timing noise keeps the simplest, and the
artifact written is the kept candidate's. No test asserts which candidate is fastest (that
depends on the CPU); the choice rule is tested on given per-round timings."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from conftest import FIXTURES, ort_outputs, run_cli
from onnxsmith.auto import (CANDIDATES, DEFAULT_CANDIDATES, Trial, _advice, _as_is_advice, _base_by_timing, _keep,
                            _matmul_weight_share, auto_optimize)
from onnxsmith.backend import available_backends, get_backend
from onnxsmith.errors import AccuracyBudgetExceeded, InputError, RecipeError
from onnxsmith.latency import LatencyStats, consistently_faster
from onnxsmith.modelio import load_onnx
from onnxsmith.optimize import OptimizeOptions
from onnxsmith.recipe import Recipe

OPENVINO = "openvino" in available_backends() and available_backends()["openvino"]().available()[0]


def _recipe(name: str, **fields) -> Recipe:
    return Recipe.model_validate({"calibration": {"data": str(FIXTURES / f"{name}.npz")}, **fields})


def _stats(samples: list[float]) -> LatencyStats:
    return LatencyStats(float(np.median(samples)), float(np.percentile(samples, 90)), len(samples), tuple(samples))


def _trial(name: str, verdict: str = "within budget") -> Trial:
    return Trial(name, name, "fp32", verdict)


def test_consistently_faster_pairs_rounds_and_ignores_a_median_won_by_noise():
    base = _stats([10, 10, 10, 10, 10, 10, 10, 10, 10])
    assert consistently_faster(_stats([9, 9, 9, 9, 9, 9, 9, 9, 11]), base)
    # a better median, but slower in 4 of 9 rounds: not a gain
    assert not consistently_faster(_stats([8, 8, 8, 8, 8, 12, 12, 12, 12]), base)
    # drift shared by both sessions cancels: the candidate is faster in every round
    assert consistently_faster(_stats([9, 18, 9, 18, 9, 18, 9, 18, 9]), _stats([10, 20, 10, 20, 10, 20, 10, 20, 10]))


def test_keep_takes_the_fastest_consistent_gain_and_never_one_over_budget():
    base = [10.0] * 9
    stats = {"fuse": _stats(base), "int8": _stats([8.0] * 9), "bf16": _stats([6.0] * 9), "int4": _stats([9.0] * 9)}
    trials = [_trial("fuse"), _trial("int8"), _trial("bf16", "over budget"), _trial("int4")]
    for t in trials:
        t.ms = stats[t.name].median_ms
    kept = _keep(trials, stats)
    assert kept.name == "int8" and kept.verdict == "kept"
    assert [t.verdict for t in trials] == ["within budget", "kept", "over budget", "within budget"]


def test_keep_falls_back_to_the_simplest_when_no_gain_is_beyond_the_noise():
    stats = {"fuse": _stats([10.0] * 9), "int8": _stats([8, 8, 8, 8, 12, 12, 12, 12, 8])}
    trials = [_trial("fuse"), _trial("int8")]
    for t in trials:
        t.ms = stats[t.name].median_ms
    assert _keep(trials, stats).name == "fuse"
    assert trials[1].verdict == "within budget; no gain over fuse"


def test_advice_names_a_faster_backend_and_a_search_that_beat_nothing():
    kept = _trial("fuse", "kept")
    kept.speedup = 0.98
    slower_than_original = _advice(kept, _stats([10.2] * 9), _stats([10.0] * 9), [{"backend": "openvino", "vs_kept": 1.5}], "cpu")
    assert slower_than_original == [
        "openvino runs the original model 1.50x faster than the kept artifact runs on cpu here: try --auto --backend openvino",
        ("no candidate ran faster than the original model on cpu beyond the noise: the artifact is fuse's (0.98x); "
         "the original serves as well")]
    assert _advice(kept, _stats([8.0] * 9), _stats([10.0] * 9), [{"backend": "openvino", "vs_kept": 1.1}], "cpu") == []


def test_keep_refuses_when_nothing_is_within_budget():
    with pytest.raises(AccuracyBudgetExceeded, match="within the budget"):
        _keep([_trial("fuse", "failed: boom"), _trial("int8", "over budget")], {})


def test_the_opset_upgrade_is_the_base_only_when_it_was_faster_in_most_rounds():
    upgraded, why = _base_by_timing({"fuse": _stats([10.0] * 9), "opset+fuse": _stats([9, 9, 9, 9, 9, 9, 9, 11, 11])})
    assert upgraded == "opset{version=17},fuse" and "faster than fuse in most of 9 rounds" in why
    # a better median won in 5 of 9 rounds only: the simpler base
    plain, why = _base_by_timing({"fuse": _stats([10.0] * 9), "opset+fuse": _stats([8, 8, 8, 8, 8, 12, 12, 12, 12])})
    assert plain == "fuse{upgrade_opset=false}" and "not faster than fuse beyond the noise" in why


def test_lossy_candidates_run_on_the_chosen_exact_base(tmp_path):
    report = auto_optimize(str(FIXTURES / "opset11.onnx"), tmp_path / "o.onnx", _recipe("opset11", accuracy={"metric": "drift"}),
                           OptimizeOptions(latency_rounds=9), candidates=("fuse", "opset+fuse", "int8"))
    rows = {c["name"]: c for c in report.auto["candidates"]}
    base = report.auto["base"]
    assert base["passes"] in ("fuse{upgrade_opset=false}", "opset{version=17},fuse") and "ms vs" in base["why"]  # which one: this CPU's timing
    assert rows["int8"]["passes"] == base["passes"] + ",quantize{mode=int8}"
    assert rows["opset+fuse"]["passes"] == "opset{version=17},fuse" and rows["fuse"]["passes"] == "fuse{upgrade_opset=false}"


def test_matmul_weight_share_tells_a_transformer_from_a_cnn():
    assert _matmul_weight_share(load_onnx(FIXTURES / "transformer.onnx")[0]) > 0.5
    assert _matmul_weight_share(load_onnx(FIXTURES / "cnn.onnx")[0]) < 0.5


def test_auto_on_a_cnn_tries_every_default_candidate_and_writes_the_kept_one(tmp_path):
    out = tmp_path / "cnn.onnx"
    report = auto_optimize(str(FIXTURES / "cnn.onnx"), out, _recipe("cnn"), OptimizeOptions(latency_rounds=9))
    rows = {c["name"]: c for c in report.auto["candidates"]}
    assert tuple(rows) == DEFAULT_CANDIDATES
    assert rows["opset+fuse"]["verdict"] == "skipped: the model is at opset 20 already"
    assert rows["int4"]["verdict"].startswith("skipped: MatMul/Gemm hold")
    assert rows["bf16"]["verdict"] == "skipped: cpu has no bf16 runtime"
    kept = [c for c in rows.values() if c["verdict"] == "kept"]
    assert len(kept) == 1 and kept[0]["name"] == report.auto["kept"]
    budget = report.auto["budget"]
    assert budget["metric"] == report.accuracy["metric"] and kept[0]["drift"] <= budget["max_drift"]
    for row in rows.values():  # every candidate that was built was timed against the original, with its spread
        assert (row["speedup"] is None) == row["verdict"].startswith(("skipped", "failed")) == (row["speedup_iqr"] is None)
    assert report.summary.latency_ms["speedup"] == kept[0]["speedup"]
    assert report.summary.latency_ms["speedup_iqr"] == kept[0]["speedup_iqr"]
    assert report.summary.drift == kept[0]["drift"]

    # the artifact is the kept candidate's: it runs, and its outputs keep the budget's metric
    data = np.load(FIXTURES / "cnn.npz")
    feed = {name: data[name][:4] for name in data.files}
    [[got]], [[want]] = ort_outputs(out, [feed]), ort_outputs(FIXTURES / "cnn.onnx", [feed])
    if kept[0]["name"] in ("fuse", "opset+fuse"):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    else:
        assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.75
    saved = json.loads((tmp_path / "cnn.report.json").read_text())
    assert saved["auto"]["kept"] == kept[0]["name"]


def test_auto_never_keeps_a_candidate_over_budget(tmp_path):
    # unretrained channel pruning moves the cnn's outputs ~1e-5; fuse only by float reassociation (~1e-8)
    recipe = _recipe("cnn", accuracy={"metric": "drift", "max_drift": 1e-6})
    report = auto_optimize(str(FIXTURES / "cnn.onnx"), tmp_path / "c.onnx", recipe,
                           OptimizeOptions(latency_rounds=9), candidates=("fuse", "prune"))
    rows = {c["name"]: c for c in report.auto["candidates"]}
    assert rows["prune"]["verdict"] == "over budget" and rows["prune"]["drift"] > 1e-6
    assert report.auto["kept"] == "fuse" and report.summary.drift <= 1e-6

    with pytest.raises(AccuracyBudgetExceeded, match=r"no --auto candidate is within the budget \(drift per candidate: prune \d"):
        auto_optimize(str(FIXTURES / "cnn.onnx"), tmp_path / "d.onnx", recipe, OptimizeOptions(latency_rounds=9), candidates=("prune",))
    assert not (tmp_path / "d.onnx").exists()


def test_without_calibration_data_only_the_candidates_whose_passes_need_it_are_skipped(tmp_path):
    report = auto_optimize(str(FIXTURES / "transformer.onnx"), tmp_path / "t.onnx", Recipe.model_validate({}),
                           OptimizeOptions(latency_rounds=9), candidates=("fuse", "int8", "int4"))
    rows = {c["name"]: c for c in report.auto["candidates"]}
    assert rows["int8"]["verdict"] == "skipped: needs calibration data (--calib)"
    assert not rows["int4"]["verdict"].startswith("skipped")  # round-to-nearest int4 needs no data


def test_auto_refuses_to_overwrite_its_input(tmp_path):
    source = tmp_path / "mlp.onnx"
    source.write_bytes((FIXTURES / "mlp.onnx").read_bytes())
    with pytest.raises(InputError, match="is the input model"):
        auto_optimize(str(source), source, _recipe("mlp"))
    assert source.read_bytes() == (FIXTURES / "mlp.onnx").read_bytes()


def test_an_unknown_candidate_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="unknown --auto candidate"):
        auto_optimize(str(FIXTURES / "mlp.onnx"), tmp_path / "m.onnx", _recipe("mlp"), candidates=("fuse", "int3"))


@pytest.mark.skipif(not OPENVINO, reason="OpenVINO is not installed")
def test_auto_on_openvino_measures_or_explains_each_runtime_precision(tmp_path):
    report = auto_optimize(str(FIXTURES / "cnn.onnx"), tmp_path / "cnn.onnx", _recipe("cnn", backend="openvino"),
                           OptimizeOptions(latency_rounds=9), candidates=("fuse", "bf16", "fp16"))
    rows = {c["name"]: c for c in report.auto["candidates"]}
    for precision in ("bf16", "fp16"):
        verdict = rows[precision]["verdict"]
        # which precisions a CPU runs depends on its ISA: each is either measured or says what it ran instead
        assert rows[precision]["speedup"] is not None or verdict.startswith(f"skipped: the backend compiled a {precision} hint to")
    assert "cpu" in {h["backend"] for h in report.auto["other_backends"]}
    assert onnx.load(str(tmp_path / "cnn.onnx")).metadata_props  # written, with its provenance
    # the kept artifact against the original as OpenVINO compiles it when told nothing, where that is not fp32
    default = get_backend("openvino").as_is_session(ir.load(FIXTURES / "cnn.onnx")).precision
    as_is = report.summary.latency_ms.get("as_is")
    if default == "fp32":
        assert as_is is None
    else:
        assert as_is["precision"] == default and as_is["speedup"] > 0 and as_is["rounds"] >= 9 and as_is["verdict"]


def test_advice_says_when_the_runtime_defaults_run_the_original_as_fast_as_the_kept_artifact():
    kept, bf16 = _trial("int8", "kept"), _trial("bf16", "over budget")
    bf16.precision, bf16.drift = "bf16", 0.0625
    recipe = _recipe("cnn", backend="openvino")
    as_is = {"precision": "bf16", "speedup": 0.62, "verdict": "slower"}
    (line,) = _as_is_advice(kept, as_is, [kept, bf16], recipe)
    assert line.startswith("openvino with its own defaults (bf16 on this CPU) runs the original model at least as fast")
    assert "int8 runs 0.62x as fast as that, slower" in line and "bf16 went over the accuracy budget here (drift 0.0625)" in line
    (line,) = _as_is_advice(kept, {**as_is, "speedup": 1.02, "verdict": "within the noise"}, [kept], recipe)
    assert line.endswith("try --inference-precision bf16")  # no bf16 candidate was built
    bf16.verdict = "within budget; no gain over int8"
    assert _as_is_advice(kept, as_is, [kept, bf16], recipe)[0].endswith("bf16 was within budget but no faster than int8 beyond the noise")
    kept_bf16 = _trial("int8+bf16", "kept")
    kept_bf16.precision = "bf16"
    assert "the kept artifact runs bf16 too" in _as_is_advice(kept_bf16, as_is, [kept_bf16], recipe)[0]
    assert _as_is_advice(kept, {**as_is, "speedup": 1.4, "verdict": "faster"}, [kept, bf16], recipe) == []
    assert _as_is_advice(kept, None, [kept], recipe) == []


def test_cli_auto_prints_the_search_and_rejects_conflicting_flags(tmp_path):
    out = tmp_path / "mlp.onnx"
    ok = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--auto", "--auto-candidates", "fuse,int8",
                 "--calib", str(FIXTURES / "mlp.npz"), "--json")
    assert ok.code == 0, ok.stderr
    assert [c["name"] for c in ok.json()["auto"]["candidates"]] == ["fuse", "int8"]
    table = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(tmp_path / "t.onnx"), "--auto", "--auto-candidates", "fuse",
                    "--calib", str(FIXTURES / "mlp.npz"), env={"COLUMNS": "120"})
    assert re.search(r"│ fuse\s+│ \d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)", table.stdout), table.stdout  # the speedup with its spread
    assert "--auto int8 (fuse{upgrade_opset=false},quantize{mode=int8})" in ok.stderr

    both = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(tmp_path / "x.onnx"), "--auto", "--passes", "fuse")
    assert both.code == 2 and "--passes cannot be given with it" in both.stderr
    alone = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(tmp_path / "y.onnx"), "--auto-candidates", "fuse")
    assert alone.code == 2 and "without --auto" in alone.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()
    assert {c.name for c in CANDIDATES} - set(DEFAULT_CANDIDATES) == {"prune", "int8-all-ops", "int8-rules"}
