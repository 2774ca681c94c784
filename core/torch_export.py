"""Exporting PyTorch models to ONNX with ``torch.onnx.export(..., dynamo=True)``.

torch is imported only here, and only when a PyTorch source is given. A ``.pt2`` archive
is loaded only after :mod:`onnxsmith.pt2_check` has found every member of a kind that loads
without unpickling or evaluating its contents (``torch.export.load`` runs pickles and
sympy expressions from an archive in several ways).
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxsmith.errors import InputError, first_line
from onnxsmith.pt2_check import check_pt2_archive

__all__ = ["export_factory", "export_pt2"]

logger = logging.getLogger(__name__)


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
        obj = getattr(_import_from_cwd(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot import {spec}: {e}", "give an importable package.module:factory (run from the folder "
                         "that holds the package, or put it on PYTHONPATH)") from None
    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module", "point to a function that returns the model")
    model.eval()
    generator = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*shape, generator=generator) for shape in shapes)
    return _export(model, args)


def _import_from_cwd(module_name: str) -> Any:
    """Import the user's module as ``python -c`` would: the current folder first on the path (the
    ``onnxsmith`` console script, unlike ``python -m``, does not put it there)."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if added:
            sys.path.remove(cwd)


def export_pt2(path: Path) -> ir.Model:
    """Export an ExportedProgram saved with ``torch.export.save``."""
    torch = _torch()
    check_pt2_archive(path, torch)
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise InputError(f"cannot load {path.name} as a torch.export archive: {e}", "save it with torch.export.save") from None
    return _export(program, None)


def _export(model: Any, args: tuple | None) -> ir.Model:
    """The exported graph as torch.export traced it: ``optimize=False`` leaves folding and fusion
    to the pipeline, whose origin map then names the modules' own nodes (the exporter's
    optimizer folds a BatchNorm into a new Conv that keeps neither name nor module). torch's
    warnings and log lines go to the debug log, not the user's stderr."""
    torch = _torch()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    if not logger.isEnabledFor(logging.DEBUG):
        exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            program = torch.onnx.export(model, args, dynamo=True, optimize=False, verbose=False)
    except Exception as e:
        first = first_line(e)
        raise InputError(f"torch.onnx.export failed: {first}", "check that the model runs on the given input shapes") from None
    finally:
        exporter_log.setLevel(level)
    for warning in caught:
        logger.debug("torch.onnx.export: %s", warning.message)
    return program.model
