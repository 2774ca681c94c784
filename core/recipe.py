"""Recipes: the backend, data settings, ordered passes and accuracy budget of one run.

The same pipeline can be written on the command line, MLIR/xDSL style
(``cleanup,opset{version=17}``; list values in brackets: ``fuse{disable=[attention,gelu]}``),
or as a YAML/JSON file validated with pydantic. Unknown keys, passes and options are
RecipeErrors that list the valid choices.

Presets are recipe files shipped in the package (``presets/NAME.yaml`` beside this
module), validated like any other: adding one is adding one file.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from onnxsmith.costs import CostTable
from onnxsmith.errors import DataError, RecipeError
from onnxsmith.pass_base import Pass
from onnxsmith.registry import available_passes, create_pass
from onnxsmith.safe_yaml import load_yaml
from onnxsmith.target import HOST, PRESETS, Target, load_target, target_for

__all__ = [
    "DEFAULT_PIPELINE",
    "RUN_ONLY_KEYS",
    "AccuracySpec",
    "CalibrationSpec",
    "GatesSpec",
    "Recipe",
    "ResourcesSpec",
    "available_presets",
    "base_recipe_data",
    "load_preset",
    "load_recipe",
    "no_nul_byte",
    "parse_pipeline",
    "recipe_from_flags",
    "recipe_json_schema",
    "validate_recipe",
]

DEFAULT_PIPELINE = "cleanup"
PRESETS_DIR = "presets"  # folder of the onnxsmith package holding the shipped presets
# Recipe keys that change how a model is converted, not what comes out: a batch's recipe
# hash leaves them out, so a resumed batch does not redo models for them.
RUN_ONLY_KEYS = ("description", "resources")


def no_nul_byte(value: Any) -> Any:
    """A string with a NUL byte refused as a validation error: YAML, JSON and CSV can hold one,
    no path or name can, and the OS call that meets it raises deep inside a run."""
    if isinstance(value, str) and "\0" in value:
        raise ValueError(f"'{value[:40]}' contains a NUL byte, which no path or name can hold")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _no_nul = field_validator("*")(no_nul_byte)


class CalibrationSpec(_Strict):
    """Where calibration/evaluation data comes from and how much of it to use."""

    data: str | None = Field(None, description="an .npz, a folder of .npz/.npy files or images, or 'random'")
    samples: int | None = Field(None, gt=0, description="use at most this many samples")
    eval_samples: int | None = Field(None, gt=0, description="held-out samples for evaluation (default: a quarter)")
    image_size: tuple[int, int] | None = Field(None, description="[height, width] images are resized to")
    mean: tuple[float, ...] = Field((0.0, 0.0, 0.0), description="per-channel mean subtracted after scaling to 0..1")
    std: tuple[float, ...] = Field((1.0, 1.0, 1.0), description="per-channel std divided by after the mean")
    layout: Literal["NCHW", "NHWC"] | None = Field(None, description="image tensor layout (default: guessed)")
    color: Literal["RGB", "BGR"] = "RGB"


class AccuracySpec(_Strict):
    max_drift: float | None = Field(None, ge=0, description="fail when the metric's drift exceeds this (default: "
                                    "no gate; the lossy passes' guard keeps the metric's own default budget)")
    metric: str | None = Field(
        None,
        pattern=r"^([A-Za-z_][\w.]*:[A-Za-z_]\w*|[a-z][a-z0-9-]*)$",
        description="auto (default: the task metric the model's signature shows; task_choice.py), drift (per-channel "
                    "output error), a task metric by name (embedding-cosine, top1, ctc-text, detection-f1; "
                    "task_metrics.py) or package.module:function(reference, candidate[, feeds]) -> drift",
    )


class GatesSpec(_Strict):
    """CI gates on the written artifact: a failed one still writes it and its report, and the
    CLI exits 5 (core/gates.py). The accuracy gate is ``accuracy.max_drift``."""

    min_speedup: float | None = Field(None, gt=0, description="fail (exit 5) when the artifact is not at least this many "
                                      "times faster than the original on the backend in most of at least 9 interleaved rounds")
    max_size: int | None = Field(None, ge=1, description="fail (exit 5) when the artifact's files (external data "
                                 "included) take more than this many bytes; accepts units: 25MB, 1.5GiB, 800kB")

    @field_validator("max_size", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional unit (B, kB, MB, GB, KiB, MiB, GiB)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise ValueError(f"'{text}' is not a size: write bytes, or a number with B, kB, MB, GB, KiB, MiB or GiB")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


class TargetSpec(_Strict):
    """Where the artifact will run (core/target.py): decisions that depend on the CPU read it
    instead of the build machine, and the report records it."""

    cpu: str = Field(HOST, max_length=4096, description=f"'{HOST}' (this machine), a named CPU ({', '.join(PRESETS)}), "
                     "or a JSON/YAML file written on the deployment machine by `onnxsmith target --save FILE`")
    threads: int = Field(0, ge=0, description="the runtime's intra-op threads (0: its default, one per core)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="the runtime's whole-model inference precision (OpenVINO's hint). fp32 keeps exact "
                            "passes exact; bf16/fp16 are lossy choices whose drift is measured on the backend")
    costs: str | None = Field(None, max_length=4096, description="a per-layer cost table written by `optimize "
                              "--save-costs` on the deployment machine: int8 decides by it instead of timing here, and "
                              "its CPU is the target unless cpu names one")

    def load(self, costs: CostTable | None = None) -> Target:
        """The target; with the cost table (of ``costs``) and no CPU named, the table's CPU."""
        if costs is not None and self.cpu == HOST:
            return target_for(costs.cpu, threads=self.threads, precision=self.precision)
        return load_target(self.cpu, threads=self.threads, precision=self.precision)


class ResourcesSpec(_Strict):
    """What one model's conversion may use; the artifact does not depend on it."""

    cpus: int | None = Field(
        None, ge=1,
        description="CPUs per model: a batch's Ray task asks for this many (default 1), and the model's "
                    "ONNX Runtime sessions use this many intra-op threads (default: the batch's share of the machine)",
    )


class Recipe(_Strict):
    """A whole run. ``passes`` items are a pass name, or ``{name: {option: value}}``."""

    description: str | None = Field(None, description="what the recipe is for, in one sentence")
    backend: str = "cpu"
    seed: int = Field(0, ge=0, description="seed of the data split and random feeds (numpy takes no negative seed)")
    calibration: CalibrationSpec = CalibrationSpec()
    passes: list[str | dict[str, dict[str, Any] | None]] = Field(default_factory=lambda: [DEFAULT_PIPELINE])
    accuracy: AccuracySpec = AccuracySpec()
    gates: GatesSpec = GatesSpec()
    target: TargetSpec = TargetSpec()
    resources: ResourcesSpec = ResourcesSpec()

    def build_passes(self) -> list[Pass]:
        """Instantiate and validate every pass; one RecipeError names every entry that is wrong."""
        built, errors = _build_entries(self.passes)
        if errors:
            raise RecipeError("; ".join(e.problem for e in errors), errors[0].fix)
        return built

    def check_calibration(self) -> None:
        """Raise the DataError a pass would raise later when no --calib is given and a pass needs it."""
        if self.calibration.data is not None:
            return
        needing = [p.name for p in self.build_passes() if p.requires_calibration()]
        if needing:
            raise DataError(f"pass '{needing[0]}' needs calibration data, and none is given",
                            "pass --calib PATH (an .npz keyed by input name, or a folder of .npz/.npy files or images)")

    def resolved(self) -> dict[str, Any]:
        """The recipe with every pass option spelled out: what the report and --save-recipe record."""
        data = self.model_dump(mode="json", exclude_defaults=False)
        data["passes"] = [{p.name: _jsonable(p.params())} for p in self.build_passes()]
        return data


def _build_entries(entries: list[Any]) -> tuple[list[Pass], list[RecipeError]]:
    """The passes of a recipe's entries, and the error of each entry that does not make one."""
    built, errors = [], []
    for entry in entries:
        try:
            if isinstance(entry, str):
                built.append(create_pass(entry))
                continue
            if not isinstance(entry, dict) or len(entry) != 1:
                raise RecipeError(f"a pass entry must name one pass, got {sorted(entry) if isinstance(entry, dict) else entry!r}", "write one `- name: {options}` item per pass")
            (name, params), = entry.items()
            built.append(create_pass(name, params or {}))
        except RecipeError as e:
            errors.append(e)
    return built, errors


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=list))


def parse_pipeline(text: str) -> list[dict[str, dict[str, Any]]]:
    """``a,b{k=v,l=[x,y]}`` -> ``[{"a": {}}, {"b": {"k": "v", "l": ["x", "y"]}}]`` (values stay strings)."""
    entries = []
    for item in _split_top(text, ","):
        item = item.strip()
        if not item:
            raise RecipeError(f"empty pass in pipeline '{text}'", "separate passes with single commas")
        name, _, rest = item.partition("{")
        name = name.strip()
        if rest and not rest.endswith("}"):
            raise RecipeError(f"unclosed '{{' after pass '{name}' in '{text}'", "write options as name{key=value,key=value}")
        params: dict[str, Any] = {}
        for option in _split_top(rest[:-1], ",") if rest else []:
            key, eq, value = option.partition("=")
            if not eq or not key.strip():
                raise RecipeError(f"option '{option}' of pass '{name}' is not key=value", "write options as name{key=value}")
            value = value.strip()
            if value.startswith("[") and value.endswith("]"):
                params[key.strip()] = [v.strip() for v in _split_top(value[1:-1], ",") if v.strip()]
            else:
                params[key.strip()] = value
        entries.append({name: params})
    return entries


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside braces and brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                raise RecipeError(f"unbalanced '{ch}' in pipeline '{text}'", "check the braces")
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise RecipeError(f"unbalanced braces in pipeline '{text}'", "close every '{' and '['")
    parts.append("".join(current))
    return parts


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML or JSON recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path.name} is not UTF-8 text", "save it as UTF-8") from None
    except RecursionError:
        raise RecipeError(f"recipe {path.name} is nested too deeply to read", "a recipe is a few levels of keys; check the file") from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"recipe {path.name} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {str(e).splitlines()[0]}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path.name} must be a mapping with keys backend, calibration, passes, accuracy", "see `onnxsmith recipe schema`")
    return validate_recipe(data, where=path.name)


def available_presets() -> dict[str, Path]:
    """The shipped presets, name -> file (``presets/*.yaml`` in the package), sorted by name."""
    folder = resources.files("onnxsmith") / PRESETS_DIR
    return {Path(entry.name).stem: Path(str(entry)) for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".yaml")}


def load_preset(name: str) -> Recipe:
    """The shipped preset ``name``, validated; an unknown name lists the presets."""
    presets = available_presets()
    if name not in presets:
        raise RecipeError(f"unknown preset '{name}'", f"choose one of: {', '.join(presets)} (see `onnxsmith recipe presets`)")
    return load_recipe(presets[name])


def base_recipe_data(recipe: str | Path | None, preset: str | None, *, passes_given: bool = False) -> dict[str, Any]:
    """The recipe a command starts from, as data its flags then override: a recipe file, a
    preset, or nothing. A preset is a whole recipe, so it excludes ``--recipe`` and ``--passes``."""
    if preset is not None and (recipe is not None or passes_given):
        other = "--recipe" if recipe is not None else "--passes"
        raise RecipeError(f"--preset {preset} and {other} both say what to run", "give one of --preset, --recipe, --passes")
    if preset is not None:
        return load_preset(preset).model_dump(mode="json")
    return load_recipe(recipe).model_dump(mode="json") if recipe is not None else {}


def recipe_from_flags(
    recipe: str | Path | None,
    preset: str | None,
    *,
    passes: str | None = None,
    backend: str | None = None,
    seed: int | None = None,
    **sections: Mapping[str, Any],
) -> Recipe:
    """The validated recipe a command's options describe: a recipe file, a preset or nothing
    (see ``base_recipe_data``), then every option given on top of it.

    ``None`` means "not given": it leaves the base's value. ``passes`` is pipeline text
    (``cleanup,opset{version=17}``) and replaces the base's passes. Each of ``sections``
    names a recipe section and maps its keys to values, merged key by key into the base's
    section, e.g. ``calibration={"data": calib, "samples": None}`` sets only ``data``.
    A new recipe section needs no change here; an unknown one fails validation.
    """
    data = base_recipe_data(recipe, preset, passes_given=passes is not None)
    data.update({key: value for key, value in {"backend": backend, "seed": seed}.items() if value is not None})
    if passes is not None:
        data["passes"] = parse_pipeline(passes)
    for section, values in sections.items():
        given = {key: value for key, value in values.items() if value is not None}
        if given:
            data[section] = {**(data.get(section) or {}), **given}
    where = str(recipe) if recipe is not None else f"preset {preset}" if preset is not None else "command line"
    return validate_recipe(data, where=where)


def validate_recipe(data: dict[str, Any], *, where: str = "recipe") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except pydantic.ValidationError as e:
        problems, fixes = zip(*(_recipe_problem(err) for err in e.errors()), strict=True)
        # A schema error elsewhere must not hide the passes' own errors: they are reported together.
        entries = data.get("passes") if isinstance(data, dict) else None
        pass_errors = _build_entries(entries)[1] if isinstance(entries, list) else []
        fix = next((f for f in fixes if f.startswith("valid keys")), fixes[0])
        raise RecipeError(f"{where}: {'; '.join([*problems, *(p.problem for p in pass_errors)])}", fix) from None
    recipe.build_passes()  # unknown pass names and options fail here, with the choices
    return recipe


def _recipe_problem(err: dict[str, Any]) -> tuple[str, str]:
    """(what is wrong, what to do) for one validation error of a recipe: every one is reported."""
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _model_at(err["loc"][:-1])
        return f"unknown key '{loc}'", f"valid keys here: {', '.join(parent.model_fields) if parent else ''}"
    return f"'{loc}': {err['msg'].removeprefix('Value error, ')}", "see `onnxsmith recipe schema`"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Recipe
    for key in loc:
        field = model.model_fields.get(str(key))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of recipe files, with each registered pass's options spelled out."""
    schema = Recipe.model_json_schema()
    names = list(available_passes())
    per_pass = {
        name: pydantic.TypeAdapter(cls).json_schema() for name, cls in available_passes().items()
    }
    for sub in per_pass.values():
        sub["additionalProperties"] = False
    schema["properties"]["passes"]["items"] = {
        "anyOf": [
            {"type": "string", "enum": names},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {name: {"anyOf": [sub, {"type": "null"}]} for name, sub in per_pass.items()},
                "additionalProperties": False,
            },
        ]
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "onnxsmith recipe"
    return schema
