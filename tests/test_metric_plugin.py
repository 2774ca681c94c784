"""--metric package.module:function: a user's drift metric drives the report and the guard."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, ROOT, ort_outputs, run_cli
from onnxsmith.data import Dataset, split_dataset
from onnxsmith.errors import RecipeError
from onnxsmith.metrics import default_drift, load_metric

PLUGIN_ENV = {"PYTHONPATH": str(ROOT / "tests")}


def test_load_metric_defaults_and_imports_by_name(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    assert load_metric(None) is default_drift
    metric = load_metric("plugins.user_metrics:max_abs")
    ref = [{"y": np.zeros((1, 3), np.float32)}]
    assert metric(ref, [{"y": np.array([[0.0, -2.5, 1.0]], np.float32)}]) == 2.5


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "neither a built-in task metric nor of the form"),
    ("plugins.missing_module:f", "cannot be imported"),
    ("plugins.user_metrics:missing", "has no function 'missing'"),
])
def test_bad_metric_specs_are_refused_with_the_reason(spec, message, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    with pytest.raises(RecipeError, match=message):
        load_metric(spec)


def test_metric_returning_no_number_is_refused(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    ref = [{"y": np.zeros((1, 3), np.float32)}]
    with pytest.raises(RecipeError, match="not a number"):
        load_metric("plugins.user_metrics:not_a_number")(ref, ref)


def test_cli_metric_sets_the_reported_drift_and_the_budget(tmp_path):
    out = tmp_path / "mlp.onnx"
    args = ["optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--passes", "quantize{guard=false,skip_slow=false}",
            "--calib", str(FIXTURES / "mlp.npz"), "--latency-rounds", "0", "--metric", "plugins.user_metrics:max_abs"]
    result = run_cli(*args, env=PLUGIN_ENV)
    assert result.code == 0, result.stderr
    report = json.loads(out.with_name("mlp.report.json").read_text())
    assert report["recipe"]["accuracy"]["metric"] == "plugins.user_metrics:max_abs"
    # The reported drift is the user's max-abs error on the held-out quarter of the data.
    with np.load(FIXTURES / "mlp.npz") as npz:
        _, held_out = split_dataset(Dataset({"x": npz["x"]}, "mlp.npz"))
    eval_feeds = [{"x": f["x"][None]} for f in held_out.feeds()]  # the model takes batches of 1
    expected = max(float(np.max(np.abs(g[0].astype(np.float64) - r[0])))
                   for r, g in zip(ort_outputs(FIXTURES / "mlp.onnx", eval_feeds), ort_outputs(out, eval_feeds)))
    assert report["summary"]["drift"] == pytest.approx(expected, rel=1e-3)

    tight = tmp_path / "tight.onnx"
    failed = run_cli(*args[:3], str(tight), *args[4:], "--max-drift", str(expected / 10), env=PLUGIN_ENV)
    assert failed.code == 4 and "exceeds the budget" in failed.stderr and not tight.exists()


def test_cli_metric_that_cannot_be_imported_fails_before_running(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--calib", str(FIXTURES / "mlp.npz"),
                     "--metric", "nowhere.at_all:f")
    assert result.code == 2 and "cannot be imported" in result.stderr and not out.exists()


def test_plugin_metric_may_take_the_feeds(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    metric = load_metric("plugins.user_metrics:max_abs_where_fed_nonzero")
    ref = [{"y": np.zeros((1, 3), np.float32)}]
    got = [{"y": np.array([[0.5, -9.0, 1.0]], np.float32)}]
    assert metric(ref, got, [{"mask": np.array([[1, 0, 1]])}]) == 1.0  # the -9 sits where the mask is 0


def test_embedding_cosine_pools_over_the_masked_tokens_only():
    metric = load_metric("embedding-cosine")
    hidden = np.array([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], np.float32)  # [batch 1, 3 tokens, dim 2]
    feeds = [{"attention_mask": np.array([[1, 1, 0]])}]
    padding_moved = hidden.copy()
    padding_moved[0, 2] = [-50.0, 80.0]
    assert metric([{"h": hidden}], [{"h": padding_moved}], feeds) == pytest.approx(0.0, abs=1e-12)
    token_moved = hidden.copy()
    token_moved[0, 0] = [1.0, 1.0]  # pooled embedding (0.5, 0.5) -> (0.5, 1.0)
    expected = 1 - 0.75 / (np.sqrt(0.5) * np.sqrt(1.25))
    assert metric([{"h": hidden}], [{"h": token_moved}], feeds) == pytest.approx(expected, rel=1e-9)
    # Without a mask every token is pooled, so the padding's move now counts.
    assert metric([{"h": hidden}], [{"h": padding_moved}], [{}]) > 0.5


def test_embedding_cosine_takes_pooled_outputs_as_they_are_and_refuses_models_without_embeddings():
    metric = load_metric("embedding-cosine")
    pooled = np.array([[3.0, 4.0]], np.float32)
    assert metric([{"e": pooled}], [{"e": -pooled}], [{}]) == pytest.approx(2.0)
    with pytest.raises(RecipeError, match="no float output"):
        metric([{"boxes": np.zeros((1, 3, 4, 4), np.float32)}], [{"boxes": np.ones((1, 3, 4, 4), np.float32)}], [{}])


def test_cli_embedding_cosine_budgets_the_pooled_embeddings(tmp_path):
    model, data = FIXTURES / "transformer.onnx", FIXTURES / "transformer.npz"
    out = tmp_path / "t.onnx"
    args = ["optimize", str(model), "-o", str(out), "--passes", "prune{ratio=0.3}",
            "--calib", str(data), "--latency-rounds", "0", "--metric", "embedding-cosine"]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    report = json.loads(out.with_name("t.report.json").read_text())
    assert report["recipe"]["accuracy"]["metric"] == "embedding-cosine"
    assert not any("judged padded tokens" in w for w in report["warnings"])
    with np.load(data) as npz:
        _, held_out = split_dataset(Dataset({k: npz[k] for k in npz.files}, "transformer.npz"))
    feeds = [{k: v[None] for k, v in f.items()} for f in held_out.feeds()]
    assert any((f["attention_mask"] == 0).any() for f in feeds)  # padding is there to be left out
    cosines = []
    for feed, r, g in zip(feeds, ort_outputs(model, feeds), ort_outputs(out, feeds)):
        mask = feed["attention_mask"][0, :, None] != 0
        a, b = (np.asarray(x, np.float64)[0][mask[:, 0]].mean(axis=0) for x in (r[0], g[0]))
        cosines.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    expected = 1 - float(np.mean(cosines))
    assert expected > 0
    assert report["summary"]["drift"] == pytest.approx(expected, rel=1e-3)

    tight = tmp_path / "tight.onnx"
    failed = run_cli(*args[:3], str(tight), *args[4:], "--max-drift", str(expected / 10))
    assert failed.code == 4 and "exceeds the budget" in failed.stderr and not tight.exists()


def test_drift_metric_on_padded_tokens_points_to_the_task_metric(tmp_path):
    out = tmp_path / "t.onnx"
    result = run_cli("optimize", str(FIXTURES / "transformer.onnx"), "-o", str(out), "--passes", "prune{ratio=0.3}",
                     "--calib", str(FIXTURES / "transformer.npz"), "--latency-rounds", "0", "--metric", "drift")
    assert result.code == 0, result.stderr
    warnings = json.loads(out.with_name("t.report.json").read_text())["warnings"]
    assert any("judged padded tokens" in w and "--metric embedding-cosine" in w for w in warnings), warnings


def test_top1_counts_the_rows_whose_class_changed():
    metric = load_metric("top1")
    reference = [{"logits": np.array([[0.1, 2.0, 0.3], [1.0, 0.0, 0.5]], np.float32)},
                 {"logits": np.array([[5.0, 1.0, 0.0], [0.0, 0.2, 0.1]], np.float32)}]
    candidate = [{"logits": np.array([[0.1, 1.9, 2.5], [0.9, 0.1, 0.5]], np.float32)},  # row 1 flips to class 2
                 {"logits": np.array([[4.0, 1.0, 0.0], [0.0, 0.2, 0.3]], np.float32)}]  # row 4 flips to class 2
    assert metric(reference, candidate, [{}, {}]) == pytest.approx(0.5)
    assert metric(reference, reference, [{}, {}]) == 0.0
    with pytest.raises(RecipeError, match="no float output"):
        metric([{"ids": np.array([[1, 2]])}], [{"ids": np.array([[2, 1]])}], [{}])


def _linear_classifier(path, npz, samples: int = 40):
    """x [1, 16] -> MatMul -> logits [1, 8], random weights, and ``samples`` random inputs: classes vary."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["logits"], name="fc")], "classifier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    np.savez(npz, x=rng.standard_normal((samples, 1, 16)).astype(np.float32))


def test_cli_top1_budgets_the_classes_of_held_out_samples(tmp_path):
    model, data = tmp_path / "classifier.onnx", tmp_path / "classifier.npz"
    _linear_classifier(model, data)
    out = tmp_path / "c.onnx"
    # an explicit held-out size: judged on those 10 alone, near misses not counted (test_task_choice.py has the rest)
    args = ["optimize", str(model), "-o", str(out), "--passes", "prune{ratio=0.5}", "--calib", str(data),
            "--latency-rounds", "0", "--metric", "top1", "--eval-samples", "10"]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    with np.load(data) as npz:
        _, held_out = split_dataset(Dataset({"x": npz["x"]}, "classifier.npz"), eval_samples=10)
    feeds = held_out.feeds()
    classes = [int(np.argmax(r[0])) for r in ort_outputs(model, feeds)]
    flips = [int(np.argmax(r[0]) != np.argmax(g[0])) for r, g in zip(ort_outputs(model, feeds), ort_outputs(out, feeds))]
    assert len(set(classes)) > 2 and 0 < sum(flips) < len(flips)  # varied classes, some moved by pruning half the weights
    report = json.loads(out.with_name("c.report.json").read_text())
    assert report["summary"]["drift"] == pytest.approx(np.mean(flips))
    failed = run_cli(*args[:3], str(tmp_path / "tight.onnx"), *args[4:], "--max-drift", "0")
    assert failed.code == 4 and not (tmp_path / "tight.onnx").exists()


def test_mean_pool_uses_the_attention_mask_and_cosine():
    from onnxsmith.task_metrics import mean_pool, row_cosine

    hidden = np.array([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])  # the padded position is huge
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 1.0]])
    cos = row_cosine(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]]))
    np.testing.assert_allclose(cos, [0.0, 1.0, 1.0])
