"""The command line through a real subprocess: commands, outputs, and every bad-input case."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from conftest import FIXTURES, ROOT, fixture_feeds, ort_outputs, run_cli
from onnxsmith import __version__

REPORT_KEYS = {"schema_version", "tool_version", "source", "backend", "recipe", "passes", "summary", "data"}


def test_help_and_version_do_not_load_heavy_libraries():
    code = (
        "import sys\n"
        "from onnxsmith.cli.main import run\n"
        "for argv in (['onnxsmith', '--help'], ['onnxsmith', 'optimize', '--help'], ['onnxsmith', '--version']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        run()\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "print('LOADED', sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'onnx_ir', 'numpy') if m in sys.modules))\n"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in proc.stdout
    assert "--passes" in proc.stdout and "onnxsmith 0." in proc.stdout


def test_version_via_module():
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.startswith("onnxsmith ")


def test_inspect_json_reports_external_data_and_shapes():
    result = run_cli("inspect", str(FIXTURES / "external.onnx"), "--json")
    assert result.code == 0, result.stderr
    info = result.json()
    assert info["external_data"] == [{"file": "external.onnx.data", "bytes": (FIXTURES / "external.onnx.data").stat().st_size}]
    assert info["inputs"] == [{"name": "x", "dtype": "float", "shape": ["batch", 64]}]
    assert info["opsets"][""] == 20
    assert info["params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert info["provenance"] is None


def test_inspect_table_shows_shapes():
    result = run_cli("inspect", str(FIXTURES / "cnn.onnx"))
    assert result.code == 0
    assert "[batch, 3, 32, 32]" in result.stdout and "BatchNormalization" in result.stdout


def test_passes_lists_options_with_defaults():
    result = run_cli("passes", "--json")
    by_name = {p["name"]: p for p in result.json()}
    assert {"cleanup", "opset"} <= set(by_name)
    assert {"name": "version", "type": "int", "default": 17}.items() <= by_name["opset"]["params"][0].items()
    table = run_cli("passes").stdout
    assert "opset" in table and "version" in table
    # a catalogue says how it is selected: fuse's rules by only/disable, prune's methods by method=
    assert "fuse rules (select with fuse{only=[...]}" in table and "prune methods (choose with prune{method=...})" in table


def test_optimize_json_writes_artifact_report_and_provenance(tmp_path):
    out = tmp_path / "cnn.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup,opset{version=21}",
                     "--calib", str(FIXTURES / "cnn.npz"), "--latency-rounds", "5", "--json")
    assert result.code == 0, result.stderr
    report = result.json()  # stdout holds the JSON document and nothing else
    assert REPORT_KEYS <= set(report)
    assert report == json.loads((tmp_path / "cnn.report.json").read_text())
    assert [p["name"] for p in report["passes"]] == ["cleanup", "opset"]
    for p in report["passes"]:
        assert {"params", "seconds", "nodes_before", "nodes_after", "modified", "drift"} <= set(p)
    summary = report["summary"]
    assert summary["nodes"]["after"] < summary["nodes"]["before"]
    assert summary["latency_ms"]["speedup"] == pytest.approx(summary["latency_ms"]["before"] / summary["latency_ms"]["after"])
    assert summary["outputs"]["logits"]["cosine"] > 0.999999
    # cnn is a classifier (top1): 4 held-out samples cannot show its budget, so all 16 are judged (test_task_choice.py)
    assert report["data"]["evaluation"]["samples"] == 16 and report["data"]["calibration"]["samples"] == 12
    assert "✓ cleanup" in result.stderr  # progress goes to stderr

    inspected = run_cli("inspect", str(out), "--json").json()
    assert inspected["provenance"]["source_sha256"] == report["source"]["sha256"]
    assert [next(iter(p)) for p in inspected["provenance"]["recipe"]["passes"]] == ["cleanup", "opset"]


def test_optimize_table_output_and_random_data_warning(tmp_path):
    out = tmp_path / "mlp.onnx"
    result = run_cli("optimize", str(FIXTURES / "mlp.onnx"), "-o", str(out), "--latency-rounds", "3")
    assert result.code == 0, result.stderr
    assert "Summary" in result.stdout and "latency" in result.stdout
    assert "RANDOM inputs" in result.stderr
    report = json.loads((tmp_path / "mlp.report.json").read_text())
    assert report["data"]["evaluation"]["random"] is True
    assert any("RANDOM" in w for w in report["warnings"])


def test_external_data_model_is_written_with_external_data(tmp_path):
    out = tmp_path / "ext.onnx"
    result = run_cli("optimize", str(FIXTURES / "external.onnx"), "-o", str(out), "--calib", str(FIXTURES / "external.npz"),
                     "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    assert (tmp_path / "ext.onnx.data").stat().st_size > 300_000
    assert out.stat().st_size < 10_000
    assert result.json()["artifact"]["external_data"] is True


def test_recipe_file_dry_run_and_save_recipe_round_trip(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"calibration: {{data: {FIXTURES / 'cnn.npz'}, eval_samples: 3}}\npasses:\n  - cleanup\n  - opset: {{version: 19}}\n")
    saved = tmp_path / "saved.yaml"
    dry = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "--recipe", str(recipe), "--backend", "cpu", "--dry-run", "--json",
                  "--save-recipe", str(saved))
    assert dry.code == 0, dry.stderr
    resolved = dry.json()
    assert resolved["passes"][1] == {"opset": {"version": 19}}
    assert yaml.safe_load(saved.read_text()) == resolved
    out = tmp_path / "cnn.onnx"
    replay = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--recipe", str(saved), "--latency-rounds", "0", "--json")
    assert replay.code == 0, replay.stderr
    assert replay.json()["recipe"] == resolved
    assert replay.json()["data"]["evaluation"]["samples"] == 3


def test_dump_dir_writes_the_model_after_each_pass(tmp_path):
    """Each dump is the model as its pass left it: what cleanup makes of the original, then
    fuse's FusedConvs, then the same graph at opset 21, which is the artifact's graph; and each
    computes what the original does."""
    import onnx_ir as ir

    from onnxsmith.context import Context
    from onnxsmith.registry import create_pass

    dump, out = tmp_path / "dump", tmp_path / "o.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--passes", "cleanup,fuse,opset{version=21}",
                     "--dump-dir", str(dump), "--latency-rounds", "0")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in dump.iterdir()) == ["01-cleanup.onnx", "02-fuse.onnx", "03-opset.onnx"]
    dumped = {p.stem.split("-", 1)[1]: onnx.load(str(p)) for p in dump.iterdir()}
    original = onnx.load(str(FIXTURES / "cnn.onnx"))

    def ops(model: onnx.ModelProto) -> list[str]:
        return [node.op_type for node in model.graph.node]

    def opset(model: onnx.ModelProto) -> int:
        return {o.domain: o.version for o in model.opset_import}[""]

    cleaned = ir.load(FIXTURES / "cnn.onnx")
    create_pass("cleanup").apply(cleaned, Context())
    assert ops(dumped["cleanup"]) == [node.op_type for node in cleaned.graph]
    assert len(ops(dumped["cleanup"])) < len(ops(original)) and opset(dumped["cleanup"]) == opset(original)
    assert "FusedConv" in ops(dumped["fuse"]) and "FusedConv" not in ops(dumped["cleanup"])
    assert len(ops(dumped["fuse"])) < len(ops(dumped["cleanup"])) and opset(dumped["fuse"]) == opset(original)
    assert ops(dumped["opset"]) == ops(dumped["fuse"]) and opset(dumped["opset"]) == 21 != opset(original)
    assert dumped["opset"].graph.SerializeToString() == onnx.load(str(out)).graph.SerializeToString()

    feeds = fixture_feeds("cnn", count=3)
    reference = ort_outputs(FIXTURES / "cnn.onnx", feeds)
    for path in sorted(dump.iterdir()):
        for ref, got in zip(reference, ort_outputs(path, feeds), strict=True):
            for r, g in zip(ref, got, strict=True):
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=path.name)


def test_accuracy_budget_gate_fails_and_writes_nothing(tmp_path):
    out = tmp_path / "cnn.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--calib", str(FIXTURES / "cnn.npz"),
                     "--max-drift", "0", "--metric", "drift", "--latency-rounds", "0")
    assert result.code == 4
    assert "exceeds the budget" in result.stderr
    assert list(tmp_path.iterdir()) == []


def _assert_clean_failure(result, tmp_path, *patterns):
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    out_dir = tmp_path / "out"
    assert not out_dir.exists() or list(out_dir.iterdir()) == [], "no output may be left behind"


def _optimize(tmp_path, model, *extra):
    return run_cli("optimize", str(model), "-o", str(tmp_path / "out" / "o.onnx"), "--latency-rounds", "0", *extra)


def test_missing_file(tmp_path):
    _assert_clean_failure(_optimize(tmp_path, tmp_path / "nope.onnx"), tmp_path, "not found")


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model\n" * 10)
    _assert_clean_failure(_optimize(tmp_path, bad), tmp_path, "bad.onnx")


def test_truncated_model(tmp_path):
    data = (FIXTURES / "cnn.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    _assert_clean_failure(_optimize(tmp_path, cut), tmp_path, "cut.onnx")


def test_missing_external_data(tmp_path):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(FIXTURES / "external.onnx", lonely / "external.onnx")
    _assert_clean_failure(_optimize(tmp_path, lonely / "external.onnx"), tmp_path, "external.onnx.data", "missing")


def test_unknown_pass(tmp_path):
    _assert_clean_failure(_optimize(tmp_path, FIXTURES / "cnn.onnx", "--passes", "cleanup,fusion"), tmp_path, "unknown pass 'fusion'", "cleanup")


def test_bad_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes: [cleanup]\nacuracy: {max_drift: 1}\n")
    _assert_clean_failure(_optimize(tmp_path, FIXTURES / "cnn.onnx", "--recipe", str(recipe)), tmp_path, "unknown key 'acuracy'")


def test_a_preset_that_needs_data_without_calib_fails_before_any_pass_and_in_dry_run(tmp_path):
    result = _optimize(tmp_path, FIXTURES / "cnn.onnx", "--preset", "int8")
    _assert_clean_failure(result, tmp_path, "pass 'quantize' needs calibration data", "--calib")
    assert "cleanup" not in result.stderr  # no pass ran first
    dry = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "out" / "o.onnx"), "--preset", "int8", "--dry-run")
    _assert_clean_failure(dry, tmp_path, "needs calibration data")


def test_dry_run_refuses_a_missing_model_and_data_that_do_not_fit_it(tmp_path):
    missing = run_cli("optimize", str(tmp_path / "nowhere.onnx"), "-p", "fuse", "--dry-run")
    _assert_clean_failure(missing, tmp_path, "nowhere.onnx")
    other_models_data = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "--preset", "int8", "--calib", str(FIXTURES / "mlp.npz"),
                                "--dry-run")
    _assert_clean_failure(other_models_data, tmp_path, "do not match the model inputs")
    fits = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "--preset", "int8", "--calib", str(FIXTURES / "cnn.npz"), "--dry-run")
    assert fits.code == 0, fits.stderr


def test_calibration_names_do_not_match(tmp_path):
    npz = tmp_path / "c.npz"
    np.savez(npz, wrong=np.zeros((4, 3, 32, 32), np.float32))
    _assert_clean_failure(_optimize(tmp_path, FIXTURES / "cnn.onnx", "--calib", str(npz)), tmp_path, "'wrong'", "input")


def test_calibration_shape_does_not_match(tmp_path):
    npz = tmp_path / "c.npz"
    np.savez(npz, input=np.zeros((4, 3, 64, 64), np.float32))
    _assert_clean_failure(_optimize(tmp_path, FIXTURES / "cnn.onnx", "--calib", str(npz)), tmp_path, "size 64", "[batchx3x32x32]")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_calibration_is_refused_before_any_pass(tmp_path, value):
    """Issue 17 item 3: NaN calibration once gave an int8 artifact reported as exact."""
    with np.load(FIXTURES / "cnn.npz") as npz:
        data = npz["input"].copy()
    data[5, 1, 2, 3] = value
    np.savez(tmp_path / "bad.npz", input=data)
    result = _optimize(tmp_path, FIXTURES / "cnn.onnx", "--passes", "cleanup,quantize", "--calib", str(tmp_path / "bad.npz"))
    word = "NaN" if np.isnan(value) else "Inf"
    _assert_clean_failure(result, tmp_path, "'input'", f"{word} in sample 5 of")


def test_original_outputs_nan_on_the_data_is_refused(tmp_path):
    """A model that computes NaN on the user's (finite) data: nothing can be verified against it."""
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Sqrt", ["x"], ["y"])], "sqrt",
                              [value("x", TensorProto.FLOAT, [1, 4])], [value("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "sqrt.onnx")
    x = np.ones((8, 1, 4), np.float32)
    x[3, 0, 2] = -1.0  # sqrt(-1) = NaN
    np.savez(tmp_path / "neg.npz", x=x)
    result = _optimize(tmp_path, tmp_path / "sqrt.onnx", "--passes", "cleanup", "--calib", str(tmp_path / "neg.npz"), "--eval-samples", "7")
    _assert_clean_failure(result, tmp_path, "outputs NaN in 'y'", "sample 3 of")


def test_output_must_not_be_the_input(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(FIXTURES / "mlp.onnx", model)
    before = model.read_bytes()
    result = run_cli("optimize", str(model), "-o", str(model), "--latency-rounds", "0")
    assert result.code == 2 and "is the input model" in result.stderr
    assert model.read_bytes() == before


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "optimize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx"))
    assert result.code != 0 and "Traceback" in result.stderr


def test_recipe_schema_command():
    result = run_cli("recipe", "schema")
    assert result.code == 0
    assert result.json()["title"] == "onnxsmith recipe"


def test_a_failing_pass_exits_3_and_writes_nothing(tmp_path):
    result = _optimize(tmp_path, FIXTURES / "mlp.onnx", "--passes", "cleanup,opset{version=17}")
    assert result.code == 3
    last = result.stderr.strip().splitlines()[-1]  # after the progress line of cleanup
    assert last.startswith("error: pass 'opset'") and "Gelu" in last and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_the_artifact_records_its_data_by_name_and_hash_so_another_machine_gets_the_same_bytes(tmp_path):
    artifacts = []
    for where in ("here", "there/deeper"):  # the same data at two paths, as on two machines
        data = tmp_path / where / "cnn.npz"
        data.parent.mkdir(parents=True)
        shutil.copy(FIXTURES / "cnn.npz", data)
        out = tmp_path / f"{where.replace('/', '_')}.onnx"
        result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "-p", "fuse", "--calib", str(data),
                         "--latency-rounds", "0")
        assert result.code == 0, result.stderr
        artifacts.append(out.read_bytes())
    assert artifacts[0] == artifacts[1]
    model = onnx.load_from_string(artifacts[0])
    assert (model.producer_name, model.producer_version) == ("onnxsmith", __version__)
    calibration = json.loads({p.key: p.value for p in model.metadata_props}["onnxsmith.recipe"])["calibration"]
    assert calibration["data"] == "cnn.npz"
    assert calibration["data_sha256"] == hashlib.sha256((FIXTURES / "cnn.npz").read_bytes()).hexdigest()


def test_the_readme_first_command_runs_the_main_job_with_its_profile(tmp_path):
    """The README's set-up command, as written (from the repo root, into tmp_path instead of out/)."""
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python3 -m venv")).split(" && ")[-1]
    args = shlex.split(command)
    assert args[:2] == ["onnxsmith", "optimize"] and "fuse,quantize{mode=int8}" in args
    args[args.index("-o") + 1] = str(tmp_path / "convnet.onnx")
    result = run_cli(*args[1:], cwd=ROOT)
    assert result.code == 0, result.stderr
    assert "Per-layer profile on cpu" in result.stdout
    report = json.loads((tmp_path / "convnet.report.json").read_text())
    assert [p["name"] for p in report["passes"]] == ["fuse", "quantize"]
    fuse_line, quantize_line = (next(line for line in result.stderr.splitlines() if line.startswith(f"✓ {name}"))
                                for name in ("fuse", "quantize"))
    assert fuse_line.endswith("exact") and "exact" not in quantize_line  # int8 is never called exact, even at drift 0
    after = report["profile"]["after"]["layers"]
    # every Conv of the original is matched with what runs in its place, int8 or float, and named as the Conv
    convs = [layer for layer in after if layer["op_type"] in ("Conv", "QLinearConv", "FusedConv")]
    assert len(convs) == 6 and all(layer["before_ms"] is not None and layer["name"].startswith("node_conv2d") for layer in convs)
    # --profile-runs 0 turns the per-layer profile off
    args[args.index("-o") + 1] = str(tmp_path / "unprofiled.onnx")
    quiet = run_cli(*args[1:], "--profile-runs", "0", cwd=ROOT)
    assert quiet.code == 0 and "Per-layer profile" not in quiet.stdout
    assert json.loads((tmp_path / "unprofiled.report.json").read_text())["profile"] is None


@pytest.mark.parametrize(("requested", "before_ms", "after_ms", "runs"), [
    (10, 1.0, 1.0, 10),  # fast: what was asked
    (10, 500.0, 500.0, 5),  # two profiles of 2 s per run fit 10 s five times
    (10, 9000.0, 9000.0, 1),  # slower than the budget: still one run
    (0, 1.0, 1.0, 0),  # off
])
def test_the_default_profile_stays_within_its_time_budget(requested, before_ms, after_ms, runs):
    from onnxsmith.optimize import PROFILE_BUDGET_S, _profile_runs

    assert PROFILE_BUDGET_S == 10.0
    assert _profile_runs(requested, {"before": before_ms, "after": after_ms}) == runs


def test_shell_completion_completes_commands_and_options():
    """Through the installed ``onnxsmith`` script: completion is keyed on the program's name."""
    program = str(Path(sys.executable).parent / "onnxsmith")

    def run(*args, **env):
        return subprocess.run([program, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False)

    # typer detects the user's shell from the parent processes (none under CI): name it instead
    script = run("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert script.returncode == 0 and "_onnxsmith_completion" in script.stdout
    assert run(_ONNXSMITH_COMPLETE="complete_bash", COMP_WORDS="onnxsmith opt", COMP_CWORD="1").stdout.split() == ["optimize"]
    assert run(_ONNXSMITH_COMPLETE="complete_bash", COMP_WORDS="onnxsmith optimize --pre", COMP_CWORD="2").stdout.split() == ["--preset"]


@pytest.mark.parametrize("command", [[], ["optimize"], ["batch"], ["profile"], ["recipe"]])
def test_flags_show_no_value_in_help(command):
    """No flag shows a value type: typer labels flags, its own --help and --install-completion included, <bool>."""
    text = run_cli(*command, "--help", env={"COLUMNS": "120"}).stdout
    assert "--help" in text and "<bool>" not in text


def test_every_listing_reads_whole_at_80_columns():
    for command in (["passes", "quantize"], ["passes"], ["backends"], ["target"]):
        result = run_cli(*command, env={"COLUMNS": "80"})
        assert result.code == 0 and "…" not in result.stdout, (command, result.stdout)


@pytest.mark.parametrize("command", [["optimize"], ["profile"], ["recipe"], ["passes"], ["target"]])
def test_help_reads_whole_at_80_columns(command):
    """rich cuts a word wider than the help column with "…": the help texts keep their words short
    (batch's option names are cut by typer's own layout at 80 columns, which it offers no setting for)."""
    result = run_cli(*command, "--help", env={"COLUMNS": "80"})
    assert result.code == 0 and "…" not in result.stdout, result.stdout


def test_one_pass_and_the_presets_read_whole_at_80_columns():
    one = run_cli("passes", "quantize", env={"COLUMNS": "80"})
    assert one.code == 0 and "quantize" in one.stdout and "opset" not in one.stdout.split("quantize", 1)[0]
    assert "fuse rules" not in one.stdout
    unknown = run_cli("passes", "quantise")
    assert unknown.code == 2 and "unknown pass 'quantise'; choose one of:" in unknown.stderr
    presets = run_cli("recipe", "presets", env={"COLUMNS": "80"}).stdout
    assert "…" not in presets and "quantize{mode" in presets  # a pipeline folds instead of being cut off


def test_control_characters_from_a_model_never_reach_the_terminal(tmp_path):
    """Names, doc strings and the producer are the model author's: an OSC 52 clipboard write or a
    screen clear in them is shown escaped, and rich markup in them is shown as text."""
    from onnx import TensorProto, helper

    evil = "relu\x1b]52;c;aGVsbG8=\x07\x1b[2J[red]"
    node = helper.make_node("Relu", ["x"], ["y"], name=evil, doc_string=evil)
    graph = helper.make_graph([node], "g\x1b[31m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = tmp_path / "evil.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="evil\x1b]0;pwned\x07[bold]"), model)
    runs = [run_cli("inspect", str(model)), run_cli("profile", str(model), "--runs", "3"),
            run_cli("optimize", str(model), "-o", str(tmp_path / "o.onnx"), "-p", "fuse", "--latency-rounds", "3")]
    for result in runs:
        assert result.code == 0, result.stderr
        assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout + result.stderr
    assert "producer: evil\\x1b]0;pwned[bold]" in runs[0].stdout  # escaped, and the markup printed as text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_fifo_or_a_device_is_refused_instead_of_read_forever(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    data = tmp_path / "data.npz"
    os.mkfifo(data)
    cases = [("inspect", str(fifo)), ("optimize", str(fifo), "-o", str(tmp_path / "out" / "o.onnx")),
             ("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "out" / "o.onnx"), "--calib", str(data))]
    if Path("/dev/zero").exists():
        cases.append(("inspect", "/dev/zero"))
    for args in cases:
        result = subprocess.run([sys.executable, "-m", "onnxsmith", *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert "is not a regular file" in result.stderr or "neither a regular file nor a folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_library_warnings_are_one_line_without_debug():
    """onnx_ir logs a shape inference it survives as a WARNING with the whole traceback."""
    import logging

    from onnxsmith.cli.main import OneLineLogs

    try:
        raise ValueError("inference failed\nat node 3")
    except ValueError as e:
        record = logging.LogRecord("onnx_ir", logging.WARNING, __file__, 1, "Shape inference failed. Model is left unchanged",
                                   (), (type(e), e, e.__traceback__))
    assert OneLineLogs().filter(record)
    assert logging.Formatter("%(message)s").format(record) == (
        "Shape inference failed. Model is left unchanged (ValueError: inference failed)")
