"""Nothing onnxsmith writes may land on what it reads, nor leave a batch's OUTDIR (issue 17 items 2 and 4)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import onnx
import pytest
import yaml

from conftest import FIXTURES, run_cli

from onnxsmith.errors import InputError
from onnxsmith.paths_guard import refuse_escape, refuse_overlap


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line_refusal(result, *patterns: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for pattern in patterns:
        assert pattern in lines[0], lines[0]


def _external_model(folder: Path, name: str, data_name: str) -> Path:
    """fixtures/external.onnx saved as ``folder/name`` with its weights in ``folder/data_name``."""
    model = onnx.load(str(FIXTURES / "external.onnx"))  # with its external data
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / name), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=0)
    assert (folder / data_name).stat().st_size > 0
    return folder / name


def test_output_named_as_the_input_data_file_is_refused(tmp_path):
    model = _external_model(tmp_path, "m.onnx", "weights.onnx")
    before = _hashes(tmp_path)
    result = run_cli("optimize", str(model), "-o", str(tmp_path / "weights.onnx"), "--latency-rounds", "0")
    _one_line_refusal(result, "the output", "is the input model's external data file", "choose another -o path")
    assert _hashes(tmp_path) == before  # nothing written: no report, no data file, the weights intact


def test_artifact_data_file_landing_on_the_input_data_file_is_refused(tmp_path):
    model = _external_model(tmp_path, "src.onnx", "o.onnx.data")
    before = _hashes(tmp_path)
    result = run_cli("optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--latency-rounds", "0")
    _one_line_refusal(result, "the output's data file", "o.onnx.data is the input model's external data file")
    assert _hashes(tmp_path) == before


def test_profile_output_onto_an_input_or_nowhere_is_refused_before_profiling(tmp_path):
    model = _external_model(tmp_path, "m.onnx", "m.onnx.data")
    other = _external_model(tmp_path / "other", "o.onnx", "o.onnx.data")
    before = _hashes(tmp_path), _hashes(other.parent)
    onto_data = run_cli("profile", str(model), "--format", "json", "-o", str(tmp_path / "m.onnx.data"))
    _one_line_refusal(onto_data, "the profile", "is the model's external data file", "choose another -o path")
    onto_compare = run_cli("profile", str(model), "--compare", str(other), "--format", "html", "-o", str(other))
    _one_line_refusal(onto_compare, "is the --compare model")
    nowhere = run_cli("profile", str(model), "--format", "md", "-o", "/proc/profile.md")
    _one_line_refusal(nowhere, "cannot be written")
    assert (_hashes(tmp_path), _hashes(other.parent)) == before


def test_save_recipe_onto_the_recipe_and_a_dump_dir_holding_the_model_are_refused(tmp_path):
    shutil.copy(FIXTURES / "mlp.onnx", tmp_path / "m.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# mine\npasses: [cleanup]\n")
    before = _hashes(tmp_path)
    result = run_cli("optimize", str(tmp_path / "m.onnx"), "--recipe", str(recipe), "--save-recipe", str(recipe), "--dry-run")
    _one_line_refusal(result, "the --save-recipe file", "is the recipe")
    result = run_cli("optimize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out" / "o.onnx"), "--dump-dir", str(tmp_path),
                     "--latency-rounds", "0")
    _one_line_refusal(result, "the --dump-dir folder", "holds the input model")
    assert _hashes(tmp_path) == before and not (tmp_path / "out").exists()


def test_batch_whose_outputs_name_each_others_sources_is_refused(tmp_path):
    shutil.copy(FIXTURES / "cnn.onnx", tmp_path / "a.onnx")
    shutil.copy(FIXTURES / "mlp.onnx", tmp_path / "b.onnx")
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump([{"model": "a.onnx", "output": "b.onnx"}, {"model": "b.onnx", "output": "a.onnx"}]))
    before = _hashes(tmp_path)
    result = run_cli("batch", str(manifest), "-o", str(tmp_path), "-j", "1", "--latency-rounds", "0")
    _one_line_refusal(result, f"the output {tmp_path / 'b.onnx'} is the model {tmp_path / 'b.onnx'}",
                      f"give the entry of {tmp_path / 'a.onnx'} another `output`")
    assert _hashes(tmp_path) == before  # both sources intact; no ledger, lock or summary written either


def test_batch_refuses_to_write_through_a_link_out_of_outdir(tmp_path):
    shutil.copy(FIXTURES / "cnn.onnx", tmp_path / "cnn.onnx")
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump([{"model": "cnn.onnx", "output": "sub/cnn.onnx"}]))
    outside, out = tmp_path / "elsewhere", tmp_path / "out"
    outside.mkdir()
    (outside / "cnn.onnx").write_text("someone else's file\n")
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    result = run_cli("batch", str(manifest), "-o", str(out), "-j", "1", "--latency-rounds", "0")
    _one_line_refusal(result, f"the output {out / 'sub/cnn.onnx'} would be written outside {out}, to {outside / 'cnn.onnx'}",
                      "through a symbolic link", "remove the link")
    assert (outside / "cnn.onnx").read_text() == "someone else's file\n" and sorted(os.listdir(outside)) == ["cnn.onnx"]
    assert sorted(os.listdir(out)) == ["sub"]  # refused before the lock, the ledger or a summary


def test_guard_sees_hard_links_and_links_to_a_read_file(tmp_path):
    read = tmp_path / "m.onnx"
    read.write_bytes(b"model")
    os.link(read, tmp_path / "hard.onnx")
    (tmp_path / "soft.onnx").symlink_to(read)
    for name in ("hard.onnx", "soft.onnx"):
        with pytest.raises(InputError, match=f"the output {tmp_path / name} is the input model"):
            refuse_overlap([("the input model", read)], [("the output", tmp_path / name, "choose another -o path")])
    refuse_overlap([("the input model", read)], [("the output", tmp_path / "new.onnx", "choose another -o path")])
    with pytest.raises(InputError, match="are the same file"):
        refuse_overlap([], [("the output", tmp_path / "hard.onnx", "x"), ("the report", tmp_path / "m.onnx", "x")])
    refuse_escape(tmp_path, [("the output", tmp_path / "a" / "b.onnx")])
    with pytest.raises(InputError, match="outside"):
        refuse_escape(tmp_path / "sub", [("the output", tmp_path / "sub" / ".." / "x.onnx")])
