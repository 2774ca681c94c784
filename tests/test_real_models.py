"""The exact passes (``cleanup``, ``opset``) on real PaddleOCR models, checked independently.

The models come from the rapidocr-onnxruntime wheel (tests/realmodels.py). Calibration data
is rendered text, preprocessed as rapidocr does; the artifact is compared with the original
on other, held-out images in a session of our own, not through the pipeline's own check.
Without network the tests skip, except on CI (``CI`` set), where they fail.

The cls model declares its batch dim as ``dim_value: -1`` (Paddle2ONNX's way to say
"dynamic"); ``test_negative_batch_dim_is_dynamic`` checks that onnxsmith reads it so,
with and without calibration data.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxsmith.optimize import OptimizeOptions, optimize, report_path_for
from onnxsmith.recipe import validate_recipe

from conftest import real_model_or_skip
from realmodels import minilm_inputs, real_image_batch, sentences

pytestmark = pytest.mark.realmodel

DET_SIZE = (160, 320)  # calibration size; held-out images also use another one (dynamic H/W)
CALIB_SAMPLES = 8
PIPELINES = {
    "cleanup": ["cleanup"],
    "cleanup+opset17": ["cleanup", {"opset": {"version": 17}}],
    "fuse": ["fuse"],
}
# model -> (input kind of realmodels, original ai.onnx opset)
MODELS = {"ppocr_det": ("det", 12), "ppocr_cls": ("cls", 11)}
# pipeline -> the opset after it: fuse upgrades both to 14 for their HardSwish patterns
OPSET_AFTER = {"cleanup": None, "cleanup+opset17": 17, "fuse": 14}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, batch: list[np.ndarray]) -> list[list[np.ndarray]]:
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x}) for x in batch]


def _ai_onnx_opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _calibration(kind: str) -> np.ndarray:
    return real_image_batch(kind, CALIB_SAMPLES, seed=0, size=DET_SIZE)


def _held_out(kind: str) -> list[np.ndarray]:
    """Inputs never seen in calibration (other seeds); det also at another size (its H/W
    are dynamic), cls also as one batch of 4 (rapidocr classifies lines in batches)."""
    batch = list(real_image_batch(kind, 3, seed=1000, size=DET_SIZE))
    if kind == "det":
        batch += list(real_image_batch(kind, 2, seed=2000, size=(96, 224)))
    else:
        batch.append(np.concatenate(list(real_image_batch(kind, 4, seed=2000))))
    return batch


@pytest.fixture(scope="module")
def sources() -> dict[str, Path]:
    """Per model, the cached original file."""
    return {name: real_model_or_skip(name) for name in MODELS}


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One calibration .npz per model, keyed by its input name ``x``."""
    folder = tmp_path_factory.mktemp("calib")
    paths = {}
    for name, (kind, _) in MODELS.items():
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], x=_calibration(kind))
    return paths


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("name", list(MODELS))
def test_exact_passes_keep_outputs(
    name: str, pipeline: str, sources: dict[str, Path], calib_npz: dict[str, Path], tmp_path: Path
) -> None:
    original = source = sources[name]
    kind, original_opset = MODELS[name]
    sha_before = _sha256(source)
    passes = PIPELINES[pipeline]
    recipe = validate_recipe({"passes": passes, "calibration": {"data": str(calib_npz[name])}})
    output = tmp_path / f"{name}.onnx"

    report = optimize(str(source), output, recipe, OptimizeOptions(latency_rounds=0))

    assert _sha256(source) == sha_before, "the input model was modified"
    assert output.is_file() and report_path_for(output).is_file()
    assert [p.name for p in report.passes] == [p if isinstance(p, str) else next(iter(p)) for p in passes]
    assert report.summary.nodes["after"] <= report.summary.nodes["before"]
    assert report.source["sha256"] == sha_before
    onnx.checker.check_model(str(output))
    assert _ai_onnx_opset(output) == (OPSET_AFTER[pipeline] or original_opset)

    inputs = _held_out(kind)
    expected = _run(_session(original), inputs)
    got = _run(_session(output), inputs)
    for x, want, have in zip(inputs, expected, got, strict=True):
        assert len(have) == len(want)
        for w, h in zip(want, have, strict=True):
            assert h.shape == w.shape, f"output shape changed for input {x.shape}"
            np.testing.assert_allclose(h, w, rtol=1e-4, atol=1e-5)
    if kind == "cls":  # task-level: the same orientation decisions
        assert [h[0].argmax(axis=1).tolist() for h in got] == [w[0].argmax(axis=1).tolist() for w in expected]


def test_cli_subprocess_json(sources: dict[str, Path], calib_npz: dict[str, Path], tmp_path: Path) -> None:
    source = sources["ppocr_cls"]
    output = tmp_path / "cls-opt.onnx"
    cmd = [
        sys.executable, "-m", "onnxsmith", "optimize", str(source), "-o", str(output),
        "--passes", "cleanup,opset{version=17}", "--calib", str(calib_npz["ppocr_cls"]),
        "--json", "--latency-rounds", "3",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)

    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)  # exactly one JSON document, nothing else on stdout
    assert report["schema_version"] == 1
    assert [next(iter(p)) for p in report["recipe"]["passes"]] == ["cleanup", "opset"]
    assert output.is_file()
    assert report_path_for(output).is_file()
    assert json.loads(report_path_for(output).read_text())["schema_version"] == 1
    assert _ai_onnx_opset(output) == 17


def test_negative_batch_dim_is_dynamic(sources: dict[str, Path], calib_npz: dict[str, Path], tmp_path: Path) -> None:
    source = sources["ppocr_cls"]  # its input is x [-1, 3, ?, ?]
    assert onnx.load(str(source)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    recipe = validate_recipe({"passes": ["cleanup"], "calibration": {"data": str(calib_npz["ppocr_cls"])}})
    report = optimize(str(source), tmp_path / "cls.onnx", recipe, OptimizeOptions(latency_rounds=0))
    assert report.data["evaluation"]["samples"] == 8  # all 8: a top1 budget needs more than the 2 held out (task_choice.py)
    # without data: random feeds shaped from the inputs, the -1 batch taken as 1
    proc = subprocess.run(
        [sys.executable, "-m", "onnxsmith", "optimize", str(source), "-o", str(tmp_path / "r.onnx"),
         "--input-shape", "1x3x48x192", "--latency-rounds", "0", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_fuse_on_minilm_fuses_attention_and_keeps_embeddings(tmp_path: Path) -> None:
    """The transformer fusions on the real all-MiniLM-L6-v2 export, with real sentences."""
    source = real_model_or_skip("minilm")
    npz = tmp_path / "calib.npz"
    np.savez(npz, **minilm_inputs(sentences(8), seq_len=64))
    recipe = validate_recipe({"passes": ["fuse"], "calibration": {"data": str(npz)}})
    output = tmp_path / "minilm.onnx"
    report = optimize(str(source), output, recipe, OptimizeOptions(latency_rounds=0))

    counts = report.passes[0].counts
    # ORT CPU's SkipLayerNormalization is slow: the 12 residual LayerNorms stay, on the 2-D view
    assert counts["attention"] >= 6 and counts["residual-2d"] == 12 and "skip-layernorm" not in counts
    nodes = onnx.load(str(output)).graph.node
    attention = [n for n in nodes if n.op_type == "Attention"]
    assert len(attention) == 6  # one per layer, packed QKV weight folded, no redundant qkv_hidden_sizes
    assert all(a.name != "qkv_hidden_sizes" for n in attention for a in n.attribute)
    initializers = {i.name for i in onnx.load(str(output), load_external_data=False).graph.initializer}
    assert all(n.input[1] in initializers for n in attention)
    assert [n.op_type for n in nodes].count("LayerNormalization") == 13
    held_out = minilm_inputs(sentences(6, start=8), seq_len=64)
    expected, got = _session(source).run(None, held_out)[0], _session(output).run(None, held_out)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    mask = held_out["attention_mask"][..., None]
    pooled = [(h * mask).sum(1) / mask.sum(1) for h in (expected, got)]
    cosine = (pooled[0] * pooled[1]).sum(1) / np.linalg.norm(pooled[0], axis=1) / np.linalg.norm(pooled[1], axis=1)
    assert cosine.min() > 0.99999
