"""Turning what the user named (an .onnx file, a .pt2 archive, ``module:factory``) into a Model."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxsmith.errors import InputError
from onnxsmith.model import Model
from onnxsmith.modelio import external_data_files, hash_files, load_onnx
from onnxsmith.origin import OriginMap

__all__ = ["is_torch_factory", "load_source", "parse_shape", "source_files", "source_reads"]

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_torch_factory(spec: str) -> bool:
    return bool(_FACTORY.match(spec)) and not Path(spec).exists()


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x224x224`` -> (1, 3, 224, 224)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise InputError(f"bad shape '{text}'", "write dims separated by x, e.g. 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"bad shape '{text}'", "every dim must be a positive integer")
    return dims


def source_reads(spec: str, label: str) -> list[tuple[str, Path]]:
    """What loading ``spec`` reads, named for a path check (paths_guard.Read): ``label`` for
    the model file, "``label``'s external data file" for each of its data files."""
    files = source_files(spec, check=False)
    return [(label, files[0]), *((f"{label}'s external data file", f) for f in files[1:])] if files else []


def source_files(spec: str, *, check: bool = True) -> list[Path]:
    """The files loading ``spec`` reads: the model file, then its external data files (none
    for a PyTorch factory). A file that cannot be parsed is listed alone; loading it says why.
    ``check=False`` lists data files that are missing or truncated too."""
    if is_torch_factory(spec):
        return []
    path = Path(spec)
    if path.suffix == ".pt2" or not path.is_file():
        return [path]
    try:
        return [path, *external_data_files(onnx.load(str(path), load_external_data=False), path.parent, check=check)]
    except (DecodeError, InputError, OSError, RuntimeError, ValueError):
        return [path]


def load_source(spec: str, input_shapes: list[tuple[int, ...]] | None = None) -> Model:
    """Load an ONNX file or export a PyTorch source; the origin map starts here."""
    if is_torch_factory(spec):
        from onnxsmith.torch_export import export_factory

        return _wrap(export_factory(spec, input_shapes or []), None, [], None)
    path = Path(spec)
    if path.suffix == ".pt2":
        if not path.is_file():
            raise InputError(f"model file not found: {path}", "check the path")
        from onnxsmith.torch_export import export_pt2

        return _wrap(export_pt2(path), path, [], hash_files([path]))
    model, data_files = load_onnx(path)
    return _wrap(model, path, data_files, hash_files([path, *data_files]))


def _wrap(model: ir.Model, path: Path | None, data_files: list[Path], sha256: str | None) -> Model:
    if sha256 is None:
        sha256 = hashlib.sha256(ir.to_proto(model).SerializeToString()).hexdigest()
    return Model(ir=model, source=path, data_files=data_files, sha256=sha256, origin=OriginMap.identity(model))
