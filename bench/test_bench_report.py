"""bench/run.py's bookkeeping: which artifacts are the same graph, the verdict per model, and
the Markdown sections it rewrites (no real models, no timing).

A check of bench/ itself, not of onnxsmith, so it lives here rather than in tests/ (which
never imports bench/): ``python -m pytest bench/test_bench_report.py``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import builds
import report_md


def _model(path, weight: float, *, producer: str = "a", meta: dict[str, str] | None = None):
    w = numpy_helper.from_array(np.full((2, 2), weight, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w],
    )
    model = helper.make_model(graph, producer_name=producer, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, meta or {})
    onnx.save(model, str(path))
    return path


def test_content_key_ignores_metadata_but_not_weights(tmp_path):
    base = builds.content_key(_model(tmp_path / "a.onnx", 1.0))
    assert builds.content_key(_model(tmp_path / "b.onnx", 1.0, producer="other", meta={"onnxsmith.recipe": "fuse"})) == base
    assert builds.content_key(_model(tmp_path / "c.onnx", 1.5)) != base


def _row(key: str, ours: bool, speedup: float | None, passed: bool = True, status: str = "ok") -> dict:
    return {"key": key, "tool": "onnxsmith" if ours else "ONNX Runtime", "label": key, "kind": "int8", "ours": ours,
            "status": status, "error": "", "passed": passed, "speedup": speedup, "scores": {"f1": 1.0 if passed else 0.5}}


@pytest.mark.parametrize(("ours", "theirs", "aa", "word"), [
    (1.50, 1.20, 1.0, "ahead"),
    (1.10, 1.40, 1.0, "behind"),
    (1.22, 1.20, 1.0, "even"),  # 1.7 % apart: inside the 5 % floor
    (1.30, 1.20, 1.12, "even"),  # 8 % apart, but the A/A control was 12 % off
])
def test_verdict_compares_the_fastest_rows_within_the_bound(ours, theirs, aa, word):
    rows = [_row("ours-int8", True, ours), _row("ort", False, theirs),
            _row("ours-fast-but-wrong", True, 9.0, passed=False), _row("theirs-broken", False, None, status="failed")]
    assert report_md.verdict({"rows": rows, "aa_ratio": aa}).startswith(word)


def test_verdict_when_one_side_has_nothing_within_the_bound():
    assert report_md.verdict({"rows": [_row("ours", True, 2.0, passed=False), _row("ort", False, 1.1)]}).startswith("behind")
    assert report_md.verdict({"rows": [_row("ours", True, 1.1), _row("ort", False, 3.0, passed=False)]}).startswith("ahead")


def _result(quick: bool) -> dict:
    twin = _row("onnxsim-dynamic", False, 1.0) | {"same_as": "onnxsim", "notes": ["the same graph as onnxsim (metadata aside): scored and timed once"]}
    ours = _row("ours-int8", True, 1.3) | {"phases": {"fuse": 2.0, "quantize": 30.0, "other": 5.0}, "notes": []}
    return {
        "model": "yolov8n", "metric": "f1", "metric_text": "detection F1", "bound": 0.95, "data": "photos",
        "calibration": 16, "evaluation": 19, "timed_shape": "1x3x320x320", "fp32_ms": 20.0, "fp32_mb": 12.2,
        "aa_ratio": 1.01, "rounds": 15, "quick": quick,
        "phases": {"data": 3.0, "tools": 60.0, "tools_cpu": 50.0, "scoring": 4.0, "timing": 30.0},
        "rows": [ours, _row("onnxsim", False, 1.0) | {"notes": []}, twin],
    }


def test_render_labels_quick_runs_and_says_where_the_time_went(tmp_path):
    summary, per_model = report_md.render({"yolov8n": _result(quick=True)}, {})
    assert "| yolov8n (quick run) |" in summary
    assert "### yolov8n (quick run)" in per_model
    assert "time in the tool: fuse 2 s, quantize 30 s, other 5 s" in per_model
    assert "the same graph as onnxsim" in per_model
    assert "tools 60 s wall (50 s CPU)" in per_model
    _, full = report_md.render({"yolov8n": _result(quick=False)}, {})
    assert "### yolov8n\n" in full and "quick" not in full


def test_write_section_replaces_only_its_own_section(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n## fuse\n\nkeep me\n\n## summary\n\nold\n### sub\nold too\n\n## later\n\nkeep too\n")
    report_md.write_section(doc, "## summary", "## summary\n\nnew\n")
    text = doc.read_text()
    assert "old" not in text and "new" in text
    assert text.index("keep me") < text.index("new") < text.index("keep too")
    report_md.write_section(doc, "## appended", "## appended\n\nx\n")
    assert doc.read_text().rstrip().endswith("## appended\n\nx")


def test_builds_start_longest_first_and_backfill_only_what_fits(tmp_path):
    import time

    import anchors

    def job(key: str, seconds: float, mb: float) -> builds.Job:
        return builds.Job("m", anchors.BY_KEY[key], tmp_path, tmp_path / f"{key}.onnx", tmp_path, seconds, mb)

    prune, int8, fuse, slim = job("ours-prune", 300, 1000), job("ours-int8", 250, 9000), job("ours-fuse", 20, 500), job("onnxslim", 320, 500)
    now = time.perf_counter()
    assert builds._next_fitting([int8, fuse], {}, 4000) is int8  # alone, anything runs
    assert builds._next_fitting([int8, fuse], {prune: now}, 10000) is int8  # fits beside
    # int8 does not fit beside prune: a job that ends before prune may go first, a long one may not
    assert builds._next_fitting([int8, slim, fuse], {prune: now}, 8000) is fuse
    assert builds._next_fitting([int8, slim, fuse], {prune: now - 290}, 8000) is None  # even fuse would outlast prune
    assert builds._next_fitting([], {prune: now}, 8000) is None
