"""The budgeted metric comes from the model's signature (core/task_choice.py), and the new task metrics judge the task.

Each signature is a tiny real ONNX graph run by ONNX Runtime; the end-to-end tests run
``onnxsmith optimize`` and read the report.
"""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, run_cli
from onnxsmith.detections import yolo_decode
from onnxsmith.metrics import DEFAULT_DRIFT_BUDGET, default_drift
from onnxsmith.runtime import make_session, run_all
from onnxsmith.optimize import OptimizeOptions, prepare
from onnxsmith.recipe import validate_recipe
from onnxsmith.task_choice import Shortfall, choose_metric, recognise_task
from onnxsmith.task_metrics import TASK_METRICS, counting_near_misses, ctc_greedy_paths, ctc_text_disagreement, detection_disagreement

RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, initializers=()) -> ir.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _recognise(model: ir.Model, feeds: list[dict[str, np.ndarray]]) -> tuple[str, str]:
    reference = run_all(make_session(model), feeds)
    return recognise_task(model, reference, feeds)


def _float_input(name: str, shape: list[int]):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _classifier(softmax: bool) -> ir.Model:
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits" if not softmax else "z"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], axis=-1))
    return _model(nodes, [_float_input("x", [1, 8])], [_float_input("logits", [1, 5])],
                  [("w", RNG.standard_normal((8, 5)).astype(np.float32)), ("b", np.zeros(5, np.float32))])


@pytest.mark.parametrize("softmax, what", [(False, "logits from a Gemm"), (True, "probabilities")])
def test_a_classifier_is_judged_by_top1(softmax, what):
    name, reason = _recognise(_classifier(softmax), [{"x": RNG.standard_normal((1, 8)).astype(np.float32)} for _ in range(3)])
    assert name == "top1" and what in reason and "'logits' [1, 5]" in reason


def test_features_after_an_activation_are_not_taken_for_logits():
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                   [_float_input("x", [1, 8])], [_float_input("y", [1, 6])], [("w", RNG.standard_normal((8, 6)).astype(np.float32))])
    name, reason = _recognise(model, [{"x": RNG.standard_normal((1, 8)).astype(np.float32)}])
    assert name == "drift" and "no task signature" in reason


def _encoder(pooled: bool) -> ir.Model:
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 6])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 6])
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
             helper.make_node("Mul", ["h", "m3"], ["y" if not pooled else "t"])]
    dim = 128 if pooled else 16
    if pooled:
        nodes.append(helper.make_node("ReduceMean", ["t"], ["y"], axes=[1], keepdims=0))
    out = _float_input("y", [1, dim] if pooled else [1, 6, dim])
    return _model(nodes, [ids, mask], [out], [("table", RNG.standard_normal((50, dim)).astype(np.float32)),
                                              ("axis", np.array([2], np.int64))])


@pytest.mark.parametrize("pooled", [False, True])
def test_an_encoder_with_an_attention_mask_is_judged_by_embedding_cosine(pooled):
    feeds = [{"input_ids": RNG.integers(0, 50, (1, 6)), "attention_mask": np.array([[1, 1, 1, 1, 0, 0]])}]
    name, reason = _recognise(_encoder(pooled), feeds)
    assert name == "embedding-cosine" and "'attention_mask' [1, 6]" in reason
    assert ("pooled embeddings" if pooled else "token states") in reason


def _ctc(blank_bias: float) -> ir.Model:
    bias = np.zeros(7, np.float32)
    bias[0] = blank_bias
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["zb"]),
             helper.make_node("Softmax", ["zb"], ["p"], axis=-1)]
    return _model(nodes, [_float_input("x", [1, 12, 4])], [_float_input("p", [1, 12, 7])],
                  [("w", RNG.standard_normal((4, 7)).astype(np.float32)), ("b", bias)])


def test_softmax_steps_with_a_dominant_class_0_are_a_ctc_recogniser_and_without_one_a_token_classifier():
    feeds = [{"x": RNG.standard_normal((1, 12, 4)).astype(np.float32)} for _ in range(2)]
    name, reason = _recognise(_ctc(blank_bias=3.0), feeds)
    assert name == "ctc-text" and "CTC's blank" in reason
    name, _ = _recognise(_ctc(blank_bias=-5.0), feeds)
    assert name == "drift"  # per-step probabilities without blanks: no rank-2 classifier either


def _detector() -> ir.Model:
    """[1, 4 + 2, 100]: boxes = 100 * x[:, :4], scores = sigmoid(x[:, 4:])."""
    nodes = [helper.make_node("Split", ["x", "parts"], ["box", "cls"], axis=1),
             helper.make_node("Mul", ["box", "hundred"], ["boxes"]), helper.make_node("Sigmoid", ["cls"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1)]
    return _model(nodes, [_float_input("x", [1, 6, 100])], [_float_input("y", [1, 6, 100])],
                  [("parts", np.array([4, 2], np.int64)), ("hundred", np.array(100.0, np.float32))])


def _detector_feed(confident: bool) -> dict[str, np.ndarray]:
    x = RNG.uniform(0.2, 1.0, (1, 6, 100)).astype(np.float32)
    x[:, 4:] = -4.0  # sigmoid 0.018: below any detection threshold
    if confident:
        x[0, 4, :3] = 3.0  # three candidates of class 0 at 0.95
    return {"x": x}


def test_a_yolo_style_head_is_judged_by_matched_detections_only_when_it_detects_something():
    name, reason = _recognise(_detector(), [_detector_feed(True)])
    assert name == "detection-f1" and "YOLOv8-style" in reason
    name, reason = _recognise(_detector(), [_detector_feed(False)])
    assert name == "drift" and "detects nothing" in reason


def test_a_task_metric_that_float_rounding_moves_gives_way_to_the_drift():
    """Every candidate scored right at the 0.25 threshold: a 1e-5 change flips which ones are detections."""
    model, feed = _detector(), _detector_feed(False)
    feed["x"][:, 4] = np.log(0.25 / 0.75)  # sigmoid = 0.25
    feeds = [feed]
    reference = run_all(make_session(model), feeds)
    choice = choose_metric(None, None, model, reference, feeds)
    assert choice.name == "drift" and "float rounding" in choice.reason and "detection-f1" in choice.reason
    confident = [_detector_feed(True)]
    assert choose_metric(None, None, model, run_all(make_session(model), confident), confident).name == "detection-f1"


def test_a_probability_map_keeps_the_default_drift_and_says_so():
    model = _model([helper.make_node("Sigmoid", ["x"], ["y"])], [_float_input("x", [1, 1, 8, 8])], [_float_input("y", [1, 1, 8, 8])])
    name, reason = _recognise(model, [{"x": RNG.standard_normal((1, 1, 8, 8)).astype(np.float32)}])
    assert name == "drift" and "scores in [0, 1]" in reason


def test_an_explicit_metric_wins_and_a_recipe_budget_replaces_the_metrics_own():
    model = _classifier(False)
    feeds = [{"x": RNG.standard_normal((1, 8)).astype(np.float32)}]
    reference = run_all(make_session(model), feeds)
    drift = choose_metric("drift", None, model, reference, feeds)
    assert (drift.metric, drift.budget, drift.reason) == (default_drift, DEFAULT_DRIFT_BUDGET, "chosen with --metric")
    auto = choose_metric(None, None, model, reference, feeds)
    assert (auto.name, auto.budget, auto.describe()["budget_from"]) == ("top1", TASK_METRICS["top1"].budget, "metric default")
    given = choose_metric("auto", 0.2, model, reference, feeds)
    assert (given.name, given.describe()["budget"], given.describe()["budget_from"]) == ("top1", 0.2, "recipe")


def test_ctc_text_counts_sequences_whose_greedy_decoding_changed():
    steps = np.zeros((2, 5, 4), np.float32)  # two sequences: "1 1 _ 2 _" -> (1, 2) and "3 _ 3 3 _" -> (3, 3)
    for row, path in enumerate([[1, 1, 0, 2, 0], [3, 0, 3, 3, 0]]):
        steps[row, np.arange(5), path] = 1.0
    assert ctc_greedy_paths(steps) == [(1, 2), (3, 3)]
    moved = steps.copy()
    moved[0, 1] = [0.0, 0.4, 0.6, 0.0]  # step 1 of sequence 0 now reads class 2: (1, 2, 2)
    same_text = steps.copy()
    same_text[1, 4] = [0.0, 0.0, 0.0, 1.0]  # a repeat of 3 merges: the text is unchanged
    ref = [{"p": steps}]
    assert ctc_text_disagreement(ref, [{"p": same_text}], []) == 0.0
    assert ctc_text_disagreement(ref, [{"p": moved}], []) == 0.5


def test_detection_f1_drops_when_a_box_moves_or_vanishes():
    out = np.zeros((1, 6, 100), np.float32)
    out[0, :4, :2] = [[20, 80], [20, 80], [10, 10], [10, 10]]  # two 10x10 boxes at (20, 20) and (80, 80)
    out[0, 4, :2] = 0.9
    ref = [{"y": out}]
    assert detection_disagreement(ref, [{"y": out.copy()}], []) == 0.0
    moved = out.copy()
    moved[0, 0, 0] = 28  # IoU 0.11 with where it was: one of two boxes unmatched
    assert detection_disagreement(ref, [{"y": moved}], []) == pytest.approx(0.5)
    gone = out.copy()
    gone[0, 4, 1] = 0.1
    assert detection_disagreement(ref, [{"y": gone}], []) == pytest.approx(1 - 2 * 1 / 3)


def test_detection_f1_sees_a_score_cross_any_threshold_of_the_band_not_only_025():
    out = np.zeros((1, 6, 100), np.float32)
    out[0, :4, :2] = [[20, 80], [20, 80], [10, 10], [10, 10]]
    out[0, 4, :2] = [0.9, 0.32]
    ref = [{"y": out}]
    lower = out.copy()
    lower[0, 4, 1] = 0.28  # still found at 0.25, lost at 0.3
    assert yolo_decode(lower[0]).scores.size == 2
    assert detection_disagreement(ref, [{"y": lower}], []) == pytest.approx((1 - 2 * 1 / 3) / 5)  # F1 2/3 at one threshold of five
    assert detection_disagreement(ref, [{"y": np.swapaxes(out, 1, 2)}], []) == 0.0  # [batch, boxes, attributes] too


def test_optimize_reports_the_metric_it_chose_and_budgets_it(tmp_path):
    out = tmp_path / "transformer.onnx"
    result = run_cli("optimize", str(FIXTURES / "transformer.onnx"), "-o", str(out), "--passes", "quantize{mode=int8,skip_slow=false}",
                     "--calib", str(FIXTURES / "transformer.npz"), "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    report = json.loads(out.with_name("transformer.report.json").read_text())
    accuracy = report["accuracy"]
    assert accuracy["metric"] == "embedding-cosine" and "attention_mask" in accuracy["reason"]
    assert (accuracy["budget"], accuracy["budget_from"]) == (TASK_METRICS["embedding-cosine"].budget, "metric default")
    assert report["summary"]["drift"] <= accuracy["budget"]
    assert not any("padded tokens" in w for w in report["warnings"])  # the task metric already leaves padding out


def test_metric_drift_restores_the_per_channel_drift_and_a_recipe_budget_is_reported_as_such(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--passes", "quantize{mode=int8,skip_slow=false}",
                     "--calib", str(FIXTURES / "mlp.npz"), "--latency-rounds", "0", "--metric", "drift", "--max-drift", "0.5")
    assert result.code == 0, result.stderr
    accuracy = json.loads(out.with_name("mlp.report.json").read_text())["accuracy"]
    assert accuracy == {"metric": "drift", "meaning": "worst per-channel output drift", "reason": "chosen with --metric",
                        "budget": 0.5, "budget_from": "recipe"}


@pytest.mark.parametrize("budget, judged", [(None, 16), ("0.25", 12), ("0.9", 4)])
def test_a_counting_budget_that_the_held_out_samples_cannot_show_is_judged_on_more_samples_and_warned(tmp_path, budget, judged):
    """cnn.npz's held-out quarter is 4 of 16 samples: no changed top-1 among them cannot show a
    0.01 budget holds (rule of three: 3/n), so the guard judges all 16 (near misses counted),
    and the report says so and how many samples would show it. A budget of 0.25 needs 12 (no
    more are run), one of 0.9 only the 4 held out."""
    args = ["optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "c.onnx"), "--calib", str(FIXTURES / "cnn.npz"),
            "--passes", "quantize{mode=int8,skip_slow=false,guard=false}", "--latency-rounds", "0", "--json"]
    result = run_cli(*args, *(["--max-drift", budget] if budget else []))
    assert result.code == 0, result.stderr
    report = result.json()
    accuracy, samples = report["accuracy"], report["data"]["evaluation"]["samples"]
    assert accuracy["metric"] == "top1"
    found = [w for w in report["warnings"] if "cannot show that the top1 budget" in w]
    assert samples == judged
    if judged > 4:
        assert (f"the 4 rows of 4 held-out samples cannot show a top1 budget of {budget or 0.01}, so it is judged on {judged} "
                "real samples (calibration ones too) and a row that 2 times the error would change counts as changed" in accuracy["reason"])
    else:
        assert "judged on" not in accuracy["reason"]
    if budget is None:
        assert found == ["16 samples (16 rows) cannot show that the top1 budget 0.01 holds: with no row changed, up to 19% of "
                         "new rows may still change; give at least 300 samples (a larger --calib)"]
    else:
        assert not found


def test_counting_metrics_count_rows_sequences_and_detections_not_samples():
    """The rule of three counts what the metric counts: a batch of 6 crops is 6 rows for top1
    and 6 sequences for ctc-text; detection-f1 counts the original's detections at 0.25."""
    assert TASK_METRICS["top1"].counted([{"p": np.zeros((6, 3), np.float32)}] * 2) == 12
    assert TASK_METRICS["ctc-text"].counted([{"p": np.zeros((6, 40, 97), np.float32)}] * 2) == 12
    three = run_all(make_session(_detector()), [_detector_feed(True)])  # three confident candidates of class 0 (NMS may merge some)
    assert TASK_METRICS["detection-f1"].counted(three) == len(yolo_decode(three[0]["y"][0]).scores) > 0
    assert TASK_METRICS["detection-f1"].counted(run_all(make_session(_detector()), [_detector_feed(False)])) == 0
    assert TASK_METRICS["embedding-cosine"].counted is None


def test_the_shortfall_says_how_many_samples_would_show_a_counting_budget():
    model = _classifier(False)
    feeds = [{"x": RNG.standard_normal((1, 8)).astype(np.float32)} for _ in range(4)]
    choice = choose_metric(None, None, model, run_all(make_session(model), feeds), feeds)
    batched = [{"logits": np.zeros((6, 5), np.float32)}] * 4  # 24 rows on 4 samples: 300 rows need 50 samples
    assert choice.shortfall(batched) == Shortfall("rows", 24, 4, 300, 50)
    assert choice.shortfall([{"logits": np.zeros((300, 5), np.float32)}]) is None
    assert choose_metric("drift", None, model, batched, feeds).shortfall(batched) is None


def test_a_detector_with_few_held_out_detections_is_judged_on_every_real_sample_with_near_misses(tmp_path):
    """16 samples of one detection each: the 4 held out hold 4 detections where a 0.02 budget
    needs 150, so all 16 are judged, and a detection that twice the error would flip counts."""
    model_path = tmp_path / "det.onnx"
    ir.save(_detector(), model_path)
    x = np.full((16, 6, 100), -4.0, np.float32)
    x[:, :4] = RNG.uniform(0.2, 1.0, (16, 4, 100))
    x[:, 4, 0] = 3.0  # one confident box per sample
    np.savez(tmp_path / "det.npz", x=x)
    recipe = validate_recipe({"calibration": {"data": str(tmp_path / "det.npz")}})
    prepared = prepare(str(model_path), tmp_path / "out.onnx", recipe, OptimizeOptions(), [recipe])
    assert prepared.choice.name == "detection-f1" and len(prepared.evaluation) == 16
    assert ("the 4 detections of 4 held-out samples cannot show a detection-f1 budget of 0.02, so it is judged on 16 real "
            "samples (calibration ones too) and a detection that 2 times the error would change counts as changed"
            in prepared.choice.reason)
    reference = prepared.reference
    near = [{"y": r["y"].copy()} for r in reference]
    near[0]["y"][0, 4, 0] = 0.3 + (reference[0]["y"][0, 4, 0] - 0.3) * 0.45  # 0.59: found at every threshold; doubled error 0.23: lost at 0.25-0.35
    assert TASK_METRICS["detection-f1"].function(reference, near, []) == 0.0
    assert prepared.choice.metric(reference, near, []) > 0.0


def test_near_misses_count_a_sample_that_twice_the_error_would_change():
    """Row 0 is a near miss: the candidate keeps its class with a margin of 0.1 left of 0.3, and
    twice its error would flip it; row 1's error is far from its margin."""
    judged = counting_near_misses(TASK_METRICS["top1"].function)
    reference = [{"p": np.array([[0.65, 0.35], [0.9, 0.1]], np.float32)}]
    near = [{"p": np.array([[0.55, 0.45], [0.89, 0.11]], np.float32)}]
    assert TASK_METRICS["top1"].function(reference, near, []) == 0.0
    assert judged(reference, near, []) == 0.5
    assert judged(reference, [{"p": np.array([[0.62, 0.38], [0.9, 0.1]], np.float32)}], []) == 0.0
    assert judged(reference, [{"p": np.array([[0.4, 0.6], [0.9, 0.1]], np.float32)}], []) == 0.5  # a real change still counts
