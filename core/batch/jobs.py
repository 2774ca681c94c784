"""What a batch converts: one :class:`Job` per model, from a folder or a manifest.

A folder yields every ``*.onnx`` under it (recursively); each artifact mirrors its model's
relative path under OUTDIR. A manifest (YAML or CSV) lists models one per entry, with
optional per-model overrides (``passes``, ``recipe``, ``calib``, ``input_shape``,
``output``). A model ``NAME.onnx`` with a ``NAME.npz`` beside it calibrates on that file
when neither the recipe nor its manifest entry names data. Every job carries the two hashes that identify finished work in the ledger:
the model's content hash and the hash of its fully resolved recipe.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from onnxsmith.errors import InputError
from onnxsmith.recipe import RUN_ONLY_KEYS, Recipe, no_nul_byte, parse_pipeline, validate_recipe
from onnxsmith.safe_yaml import load_yaml
from onnxsmith.sources import is_torch_factory, parse_shape, source_files

__all__ = ["Job", "ManifestEntry", "discover_jobs", "model_hash", "model_size", "recipe_hash"]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".csv")


@dataclass(frozen=True)
class Job:
    """One model of a batch: where it comes from, where its artifact goes, how to convert it.

    ``key`` is the artifact's path relative to OUTDIR (POSIX), also the ledger's row key.
    ``recipe`` is the resolved recipe (every option spelled out) as plain JSON data, so a
    job pickles cheaply to a worker process or a Ray node.
    """

    key: str
    source: str
    output: Path
    recipe: dict[str, Any]
    input_shapes: tuple[tuple[int, ...], ...]
    model_hash: str
    recipe_hash: str

    @property
    def cpus(self) -> int | None:
        """The CPUs its recipe asks for (``resources.cpus``), None when it leaves it to the batch."""
        return (self.recipe.get("resources") or {}).get("cpus")


class ManifestEntry(BaseModel):
    """One manifest row. Paths are relative to the manifest's folder."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="an .onnx path, a .pt2 path, or package.module:factory")
    output: str | None = Field(None, description="artifact path relative to OUTDIR (default: the model's relative path)")
    passes: str | None = Field(None, description="pipeline replacing the batch's passes for this model")
    recipe: dict[str, Any] | None = Field(None, description="recipe keys merged over the batch's recipe")
    calib: str | None = Field(None, description="calibration/evaluation data for this model")
    input_shape: list[str] | None = Field(None, description="input shapes, e.g. [1x3x224x224]")

    _no_nul = field_validator("*")(no_nul_byte)


def recipe_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved recipe's JSON with sorted keys: equal recipes, equal hashes.

    Keys that do not change the artifact (``RUN_ONLY_KEYS``: description, resources) are
    left out, so giving a model more CPUs does not make a resumed batch convert it again."""
    kept = {key: value for key, value in resolved.items() if key not in RUN_ONLY_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_hash(source: str, input_shapes: tuple[tuple[int, ...], ...] = ()) -> str:
    """Content hash of a model: its .onnx file plus its external data files, in order.

    A PyTorch factory hashes its spec, the input shapes it is exported with and the bytes
    of its module's file (found on ``sys.path`` without importing it, so the driver never
    loads torch). A file that cannot be parsed hashes alone; its worker reports why.
    """
    from onnxsmith.modelio import hash_files

    if is_torch_factory(source):
        digest = hashlib.sha256(f"{source}|{input_shapes}".encode())
        module_file = _module_file(source.partition(":")[0])
        if module_file is not None:
            digest.update(module_file.read_bytes())
        return digest.hexdigest()
    path = Path(source)
    if not path.is_file():
        return hashlib.sha256(f"missing:{path}".encode()).hexdigest()
    return hash_files([path, *_data_files(path)])


def model_size(source: str) -> int:
    """Bytes of a model's .onnx file and its external data; 0 for a PyTorch factory or a missing file."""
    path = Path(source)
    if is_torch_factory(source) or not path.is_file():
        return 0
    return sum(p.stat().st_size for p in [path, *_data_files(path)] if p.is_file())


def discover_jobs(source: Path, outdir: Path, recipe: Recipe) -> list[Job]:
    """The jobs of a batch over a folder or a manifest, in a stable order."""
    if not source.exists():
        raise InputError(f"batch source not found: {source}", "give a folder of .onnx models or a manifest (.yaml/.csv)")
    base = recipe.model_dump(mode="json")
    if source.is_dir():
        if source.resolve() == outdir.resolve():
            raise InputError(f"the output folder {outdir} is the source folder", "choose another -o folder; onnxsmith never modifies its input")
        entries = [ManifestEntry(model=p.relative_to(source).as_posix()) for p in _onnx_files(source, outdir)]
        if not entries:
            raise InputError(f"no .onnx files under {source}", "point to a folder of models or a manifest")
        where, root = str(source), source
    elif source.suffix in MANIFEST_SUFFIXES:
        entries, where, root = _read_manifest(source), source.name, source.parent
    else:
        raise InputError(f"batch source {source} is neither a folder nor a manifest", "give a folder, a .yaml or a .csv manifest (for one model use `onnxsmith optimize`)")
    jobs = [_job(entry, i, base, root, outdir, where) for i, entry in enumerate(entries, start=1)]
    seen: dict[str, str] = {}
    for job in jobs:
        if job.key in seen:
            raise InputError(f"{where}: models {seen[job.key]} and {job.source} would both write {job.key}", "give one of them another `output`")
        seen[job.key] = job.source
    return jobs


def _onnx_files(source: Path, outdir: Path) -> list[Path]:
    """Every .onnx under ``source``, leaving out OUTDIR when it lies inside it."""
    out = outdir.resolve()
    return sorted(p for p in source.rglob("*.onnx") if p.is_file() and out not in p.resolve().parents)


def _read_manifest(path: Path) -> list[ManifestEntry]:
    try:
        text = path.read_text(encoding="utf-8")
        rows = _csv_rows(text) if path.suffix == ".csv" else _yaml_rows(load_yaml(text), path.name)
    except json.JSONDecodeError as e:
        raise InputError(f"manifest {path.name}: a `recipe` cell is not JSON ({e.msg}, column {e.colno})",
                         "write it as a JSON object, quoted for CSV: \"{\"\"seed\"\": 1}\"") from None
    except csv.Error as e:
        raise InputError(f"manifest {path.name} is not valid CSV: {e}", "fix the row; cells with commas or quotes need quoting") from None
    except UnicodeDecodeError:
        raise InputError(f"manifest {path.name} is not UTF-8 text", "save it as UTF-8") from None
    except RecursionError:
        raise InputError(f"manifest {path.name} is nested too deeply to read", "list one mapping per model") from None
    except yaml.YAMLError as e:
        raise InputError(f"manifest {path.name} is not valid YAML: {str(e).splitlines()[0]}", "fix the syntax") from None
    if not rows:
        raise InputError(f"manifest {path.name} lists no models", "add one entry per model with a `model` key")
    entries = []
    for i, row in enumerate(rows, start=1):
        try:
            entries.append(ManifestEntry.model_validate(row))
        except pydantic.ValidationError as e:
            err = min(e.errors(), key=lambda err: err["type"] != "extra_forbidden")  # a misspelt key first
            loc = ".".join(str(p) for p in err["loc"])
            fix = f"valid keys: {', '.join(ManifestEntry.model_fields)}" if err["type"] == "extra_forbidden" else "see the batch section of the README"
            problem = f"unknown key '{loc}'" if err["type"] == "extra_forbidden" else f"'{loc}': {err['msg'].removeprefix('Value error, ')}"
            raise InputError(f"manifest {path.name}, entry {i}: {problem}", fix) from None
    return entries


def _yaml_rows(data: Any, name: str) -> list[Any]:
    if isinstance(data, dict) and set(data) == {"models"}:
        data = data["models"]
    if not isinstance(data, list):
        raise InputError(f"manifest {name} is not a list of entries (or `models:` with one)", "write `models: [{model: path.onnx}, ...]`")
    return [{"model": row} if isinstance(row, str) else row for row in data]


def _csv_rows(text: str) -> list[dict[str, Any]]:
    """CSV rows with a header; empty cells are absent; ``input_shape`` cells split on spaces or ``;``."""
    rows = []
    for row in csv.DictReader(text.splitlines()):
        clean: dict[str, Any] = {k.strip(): v.strip() for k, v in row.items() if k is not None and v and v.strip()}
        if "input_shape" in clean:
            clean["input_shape"] = clean["input_shape"].replace(";", " ").split()
        if "recipe" in clean:
            clean["recipe"] = json.loads(clean["recipe"])
        rows.append(clean)
    return rows


def _job(entry: ManifestEntry, index: int, base: dict[str, Any], root: Path, outdir: Path, where: str) -> Job:
    source = entry.model if is_torch_factory(entry.model) else str(root / entry.model)
    key = entry.output or _default_key(entry.model, root)
    rel = PurePosixPath(key)
    if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".onnx":
        raise InputError(f"{where}, entry {index}: output '{key}' must be a relative path ending in .onnx inside OUTDIR", "fix its `output`")
    data = _merge(base, entry.recipe or {})
    if entry.passes is not None:
        data["passes"] = parse_pipeline(entry.passes)
    calib = root / entry.calib if entry.calib is not None else _beside(source) if not (data.get("calibration") or {}).get("data") else None
    if calib is not None:
        data["calibration"] = {**data.get("calibration", {}), "data": str(calib)}
    resolved = validate_recipe(data, where=f"{where}, entry {index} ({entry.model})").resolved()
    shapes = tuple(parse_shape(s) for s in entry.input_shape or [])
    return Job(key=rel.as_posix(), source=source, output=outdir / rel, recipe=resolved, input_shapes=shapes,
               model_hash=model_hash(source, shapes), recipe_hash=recipe_hash(resolved))


def _beside(source: str) -> Path | None:
    """NAME.npz next to the model NAME.onnx: its data, where neither the recipe nor the manifest gives any."""
    if is_torch_factory(source):
        return None
    data = Path(source).with_suffix(".npz")
    return data if data.is_file() else None


def _default_key(model: str, root: Path) -> str:
    if is_torch_factory(model):
        return model.replace(":", ".") + ".onnx"
    path = PurePosixPath(Path(model).as_posix())
    if path.is_absolute() or ".." in path.parts:
        raise InputError(f"model {model} lies outside the manifest's folder {root}", "give it an `output` path")
    return path.with_suffix(".onnx").as_posix()


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _data_files(path: Path) -> list[Path]:
    return source_files(str(path))[1:]


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    for base in sys.path:
        for candidate in (Path(base or ".", *parts).with_suffix(".py"), Path(base or ".", *parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None
