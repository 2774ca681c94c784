"""Pipeline strings, recipe files and their validation errors."""

from __future__ import annotations

import json

import pytest

from onnxsmith.errors import RecipeError
from onnxsmith.recipe import load_recipe, parse_pipeline, recipe_json_schema, validate_recipe
from onnxsmith.registry import create_pass


def test_parse_pipeline_with_options_and_lists():
    assert parse_pipeline("cleanup,opset{version=17},x{a=1,b=[p,q]}") == [
        {"cleanup": {}},
        {"opset": {"version": "17"}},
        {"x": {"a": "1", "b": ["p", "q"]}},
    ]


@pytest.mark.parametrize("text", ["cleanup,,opset", "opset{version=17", "opset{version}", "opset}"])
def test_parse_pipeline_rejects_malformed(text):
    with pytest.raises(RecipeError):
        parse_pipeline(text)


def test_pipeline_values_are_coerced_to_the_option_types():
    recipe = validate_recipe({"passes": parse_pipeline("cleanup{iterations=3,inline=false},opset{version=18}")})
    cleanup, opset = recipe.build_passes()
    assert (cleanup.iterations, cleanup.inline, opset.version) == (3, False, 18)
    assert str(cleanup) == "cleanup{iterations=3,inline=false}"


def test_unknown_pass_lists_the_choices():
    with pytest.raises(RecipeError, match="unknown pass 'fusee'.*cleanup.*opset"):
        validate_recipe({"passes": ["fusee"]})


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(RecipeError, match="no option 'versoin'.*version"):
        create_pass("opset", {"versoin": "17"})


def test_out_of_range_option_is_refused():
    with pytest.raises(RecipeError, match="version must be between"):
        create_pass("opset", {"version": 3})
    with pytest.raises(RecipeError, match="option 'version'"):
        create_pass("opset", {"version": "seventeen"})


def test_a_fuse_rule_typo_is_one_plain_sentence():
    with pytest.raises(RecipeError) as caught:
        create_pass("fuse", {"disable": ["bogus"]})
    assert str(caught.value).startswith("pass 'fuse': unknown fuse rule 'bogus'; rules: noop,")
    assert "Value error" not in str(caught.value) and "(got" not in str(caught.value)


def test_every_error_of_a_recipe_is_reported_at_once():
    with pytest.raises(RecipeError) as caught:
        validate_recipe({"acuracy": {}, "seed": "x", "gates": {"max_size": "a lot"}})
    message = str(caught.value)
    assert "unknown key 'acuracy'" in message and "'seed': Input should be a valid integer" in message
    assert "'gates.max_size': 'a lot' is not a size" in message and "valid keys here:" in message


def test_every_wrong_pass_is_reported_with_the_schema_errors():
    passes = [{"fuse": {"disable": ["bogus"]}}, {"quantize": {"mode": "int9"}}]
    with pytest.raises(RecipeError) as caught:
        validate_recipe({"passes": passes})
    assert "pass 'fuse'" in str(caught.value) and "pass 'quantize'" in str(caught.value)
    with pytest.raises(RecipeError) as caught:
        validate_recipe({"seed": "x", "passes": passes})
    message = str(caught.value)
    assert "'seed'" in message and "pass 'fuse'" in message and "pass 'quantize'" in message


def test_unknown_recipe_key_lists_valid_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("backend: cpu\npasess: [cleanup]\n")
    with pytest.raises(RecipeError, match="unknown key 'pasess'.*passes"):
        load_recipe(path)


def test_yaml_and_json_recipes_resolve_the_same(tmp_path):
    yaml_path = tmp_path / "r.yaml"
    yaml_path.write_text("backend: cpu\ncalibration: {data: x.npz, samples: 8}\npasses:\n  - cleanup\n  - opset: {version: 18}\naccuracy: {max_drift: 0.01}\n")
    json_path = tmp_path / "r.json"
    json_path.write_text(json.dumps({"backend": "cpu", "calibration": {"data": "x.npz", "samples": 8},
                                     "passes": ["cleanup", {"opset": {"version": 18}}], "accuracy": {"max_drift": 0.01}}))
    resolved = load_recipe(yaml_path).resolved()
    assert resolved == load_recipe(json_path).resolved()
    assert resolved["passes"] == [{"cleanup": {"iterations": 2, "inline": True, "fold_limit": 1 << 20}}, {"opset": {"version": 18}}]
    assert resolved["accuracy"]["max_drift"] == 0.01


def test_bad_yaml_is_one_line_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("passes: [cleanup\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_schema_lists_every_pass_and_its_options():
    schema = recipe_json_schema()
    items = schema["properties"]["passes"]["items"]["anyOf"]
    assert set(items[0]["enum"]) >= {"cleanup", "opset"}
    opset_schema = items[1]["properties"]["opset"]["anyOf"][0]
    assert opset_schema["properties"]["version"]["type"] == "integer"
    assert schema["additionalProperties"] is False


# --- presets and resources ------------------------------------------------------------------


def test_every_shipped_preset_is_a_valid_recipe_and_is_listed():
    from onnxsmith.recipe import available_presets, load_preset

    presets = available_presets()
    assert {"fast", "int8"} <= set(presets)
    for name, path in presets.items():
        recipe = load_preset(name)  # validated: known keys, passes and options
        assert recipe.description, f"preset {name} ({path.name}) says what it is for"
        assert recipe.build_passes()
    fast = [p.name for p in load_preset("fast").build_passes()]
    assert fast == ["cleanup", "fuse"]
    quantize = load_preset("int8").build_passes()[-1]
    assert (quantize.name, quantize.mode, quantize.guard) == ("quantize", "int8", True)
    assert load_preset("int8").accuracy.max_drift == 0.03

    from conftest import run_cli

    listed = run_cli("recipe", "presets", "--json")
    assert listed.code == 0, listed.stderr
    rows = {row["name"]: row for row in listed.json()}
    assert rows.keys() == presets.keys()
    assert rows["fast"]["pipeline"] == "cleanup,fuse"
    assert rows["int8"]["pipeline"] == "cleanup,fuse,quantize{mode=int8,guard=true}"


def test_preset_errors_name_the_choices():
    from onnxsmith.recipe import base_recipe_data, load_preset

    with pytest.raises(RecipeError, match="unknown preset 'fastest'.*fast, int8"):
        load_preset("fastest")
    with pytest.raises(RecipeError, match="--preset fast and --passes"):
        base_recipe_data(None, "fast", passes_given=True)
    with pytest.raises(RecipeError, match="--preset fast and --recipe"):
        base_recipe_data("r.yaml", "fast")
    assert base_recipe_data(None, "fast")["passes"] == ["cleanup", "fuse"]


def test_recipe_from_flags_merges_given_options_over_the_base(tmp_path):
    from onnxsmith.recipe import recipe_from_flags

    base = tmp_path / "r.yaml"
    base.write_text("seed: 3\ncalibration: {data: a.npz, eval_samples: 2}\naccuracy: {max_drift: 0.5}\npasses: [cleanup]\n")
    recipe = recipe_from_flags(base, None, passes="fuse", backend="cpu", seed=None,
                               calibration={"data": None, "samples": 8}, accuracy={"max_drift": 0.1, "metric": None})
    assert recipe.seed == 3  # None: not given, the file's value stays
    assert recipe.passes == [{"fuse": {}}]
    assert (recipe.calibration.data, recipe.calibration.samples, recipe.calibration.eval_samples) == ("a.npz", 8, 2)
    assert (recipe.accuracy.max_drift, recipe.accuracy.metric) == (0.1, None)
    assert recipe_from_flags(None, None) == validate_recipe({})
    assert recipe_from_flags(None, "fast", accuracy={"max_drift": 0.2}).accuracy.max_drift == 0.2
    with pytest.raises(RecipeError, match="--preset fast and --passes"):
        recipe_from_flags(None, "fast", passes="cleanup")
    with pytest.raises(RecipeError, match="command line: unknown key 'targett'"):
        recipe_from_flags(None, None, targett={"threads": 2})
    assert recipe_from_flags(None, None, targett={"threads": None}) == validate_recipe({})  # nothing given, nothing merged


def test_resources_are_validated_and_do_not_change_a_batch_recipe_hash():
    from onnxsmith.batch.jobs import recipe_hash

    assert validate_recipe({"resources": {"cpus": 2}}).resources.cpus == 2
    with pytest.raises(RecipeError, match="resources.cpus"):
        validate_recipe({"resources": {"cpus": 0}})
    with pytest.raises(RecipeError, match="unknown key 'resources.gpus'.*cpus"):
        validate_recipe({"resources": {"gpus": 1}})
    plain = validate_recipe({"passes": ["cleanup"]}).resolved()
    more_cpus = validate_recipe({"passes": ["cleanup"], "resources": {"cpus": 4}, "description": "x"}).resolved()
    other_passes = validate_recipe({"passes": ["cleanup", "fuse"]}).resolved()
    assert recipe_hash(plain) == recipe_hash(more_cpus) != recipe_hash(other_passes)


def test_optimize_with_the_int8_preset_quantizes_within_its_budget(tmp_path):
    import onnx

    from conftest import FIXTURES, run_cli

    out = tmp_path / "cnn.onnx"
    result = run_cli("optimize", str(FIXTURES / "cnn.onnx"), "--preset", "int8", "--calib", str(FIXTURES / "cnn.npz"),
                     "-o", str(out), "--latency-rounds", "0", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert [p["name"] for p in report["passes"]] == ["cleanup", "fuse", "quantize"]
    assert report["recipe"]["accuracy"]["max_drift"] == 0.03 and report["summary"]["drift"] <= 0.03
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    # which layers int8 makes faster is timed on this CPU: on a tiny model it may be none, and
    # then every float layer says why; the int8 ones are int8 in the artifact
    rows = report["passes"][-1]["layers"]
    int8 = [row for row in rows if row["precision"] == "int8"]
    assert rows and all(row.get("reason") for row in rows if row["precision"] == "fp32")
    assert not int8 or {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Nine levels of nine aliases: 9^9 strings if expanded ("billion laughs")."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match=r"not valid YAML: aliases \(\*name\) are not accepted"):
        load_recipe(path)


def test_a_recipe_not_in_utf8_or_nested_too_deep_is_a_recipe_error(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b'passes: [cleanup]\ndescription: "caf\xe9"\n')
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        load_recipe(latin)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RecipeError, match="nested too deeply"):
        load_recipe(deep)
