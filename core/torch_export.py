"""Exporting PyTorch models to ONNX with ``torch.onnx.export(..., dynamo=True)``.

torch is imported only here, and only when a PyTorch source is given. A ``.pt2`` archive
is loaded only after checking that nothing in it would be unpickled with arbitrary code
(``torch.export.load`` falls back to full pickle for some payloads).
"""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxsmith.errors import InputError, first_line

__all__ = ["export_factory", "export_pt2"]


def _torch():
    try:
        import torch
    except ImportError:
        raise InputError("exporting a PyTorch model needs torch", "pip install torch (CPU build: pip install torch==2.13.0)") from None
    return torch


def export_factory(spec: str, shapes: list[tuple[int, ...]]) -> ir.Model:
    """Export ``package.module:factory`` (a function returning an nn.Module, or a module) with
    random float32 inputs of ``shapes``."""
    torch = _torch()
    module_name, _, attr = spec.partition(":")
    if not shapes:
        raise InputError(f"{spec} needs example input shapes to export", "add --input-shape 1x3x224x224 (once per input)")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot import {spec}: {e}", "give an importable package.module:factory") from None
    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module", "point to a function that returns the model")
    model.eval()
    generator = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*shape, generator=generator) for shape in shapes)
    return _export(model, args)


def export_pt2(path: Path) -> ir.Model:
    """Export an ExportedProgram saved with ``torch.export.save``."""
    torch = _torch()
    _check_pt2_is_safe(path, torch)
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise InputError(f"cannot load {path.name} as a torch.export archive: {e}", "save it with torch.export.save") from None
    return _export(program, None)


def _export(model: Any, args: tuple | None) -> ir.Model:
    torch = _torch()
    try:
        program = torch.onnx.export(model, args, dynamo=True, verbose=False)
    except Exception as e:
        first = first_line(e)
        raise InputError(f"torch.onnx.export failed: {first}", "check that the model runs on the given input shapes") from None
    return program.model


def _check_pt2_is_safe(path: Path, torch: Any) -> None:
    """Refuse archives whose payloads torch would unpickle with ``weights_only=False``."""
    unsafe = InputError(
        f"{path.name} contains pickled objects, which onnxsmith never unpickles",
        "re-save it with a recent torch.export.save (plain tensor weights), or export to ONNX yourself",
    )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"{path.name} is not a torch.export archive", "save it with torch.export.save") from None
    with archive:
        for name in archive.namelist():
            parts = name.split("/")
            if "weights" in parts or "constants" in parts:
                if name.endswith(".pt") or "custom_obj" in name:
                    raise unsafe
                if name.endswith("_config.json"):
                    config = json.loads(archive.read(name)).get("config", {})
                    if any(entry.get("use_pickle") for entry in config.values()):
                        raise unsafe
            if "sample_inputs" in parts:
                try:  # torch.export.load retries with full pickle if this fails
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:
                    raise unsafe from None
