"""PyTorch sources: module:factory and .pt2 archives exported with the dynamo exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ort_outputs, run_cli  # noqa: E402
from onnxsmith.errors import InputError  # noqa: E402
from onnxsmith.optimize import OptimizeOptions, optimize  # noqa: E402
from onnxsmith.recipe import validate_recipe  # noqa: E402
from onnxsmith.sources import load_source  # noqa: E402
from torch_models import tiny_cnn  # noqa: E402

pytestmark = pytest.mark.torch


SHAPE = (1, 3, 16, 16)


def _assert_matches_torch(onnx_path) -> None:
    """The ONNX model's outputs (ONNX Runtime, its optimizations off) on a few random inputs
    equal the torch module's within float32 rounding, so a wrong export or a wrong rewrite fails."""
    xs = [np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32) for seed in range(3)]
    module = tiny_cnn().eval()
    with torch.no_grad():
        expected = [module(torch.from_numpy(x)).numpy() for x in xs]
    import onnx

    (name,) = [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]
    got = ort_outputs(onnx_path, [{name: x} for x in xs])
    for (out,), want in zip(got, expected, strict=True):
        assert out.shape == want.shape
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_factory_export_matches_torch(tmp_path):
    import onnx_ir as ir

    model = load_source("torch_models:tiny_cnn", [SHAPE])
    ir.save(model.ir, tmp_path / "exported.onnx")
    _assert_matches_torch(tmp_path / "exported.onnx")
    assert len(model.sha256) == 64


def test_pt2_export_through_the_cli(tmp_path):
    program = torch.export.export(tiny_cnn().eval(), (torch.randn(*SHAPE),))
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(program, pt2)
    out = tmp_path / "tiny.onnx"
    result = run_cli("optimize", str(pt2), "-o", str(out), "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["source"]["format"] == "torch"
    assert report["summary"]["drift"] < 1e-5  # cleanup against the export
    _assert_matches_torch(out)  # and the artifact against torch itself


def test_pt2_with_pickled_payload_is_refused(tmp_path):
    program = torch.export.export(tiny_cnn().eval(), (torch.randn(1, 3, 16, 16),))
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(program, pt2)
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                for entry in config["config"].values():
                    entry["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(InputError, match="never unpickles"):
        load_source(str(tampered))


def test_factory_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="needs example input shapes"):
        load_source("torch_models:tiny_cnn", [])
    with pytest.raises(InputError, match="not a torch.nn.Module"):
        load_source("torch_models:not_a_module", [(1,)])
    with pytest.raises(InputError, match="cannot import"):
        load_source("no_such_module_xyz:factory", [(1,)])


def test_factory_pipeline_end_to_end(tmp_path):
    recipe = validate_recipe({"passes": ["cleanup"]})
    report = optimize("torch_models:tiny_cnn", tmp_path / "t.onnx", recipe,
                      OptimizeOptions(input_shapes=[SHAPE], latency_rounds=0))
    assert report.summary.nodes["after"] <= report.summary.nodes["before"]
    assert report.data["evaluation"]["random"] is True
    _assert_matches_torch(tmp_path / "t.onnx")


def test_a_factory_in_the_current_folder_imports_quietly_and_its_layers_carry_their_modules(tmp_path):
    """As `python -c` would: the package beside the user, no PYTHONPATH; torch's own warnings stay off stderr."""
    package = tmp_path / "tinypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))\n\n\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return Net()\n")
    console_script = str(Path(sys.executable).parent / "onnxsmith")  # not `python -m`: it would add the folder itself
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([console_script, "optimize", "tinypkg.nets:make", "-o", "out/t.onnx", "--input-shape", "1x3x16x16",
                             "-p", "fuse", "--latency-rounds", "3", "--profile-runs", "3", "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("✓")] == []  # only the pass lines
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)["profile"]["after"]["layers"]}
    # the Conv with its BatchNorm folded and its Relu fused is the Conv of module `conv`
    assert layers["node_conv2d"]["module"] == "conv" and layers["node_linear"]["module"] == "fc"
