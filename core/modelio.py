"""Reading and writing ONNX files safely: clear errors on bad input, atomic writes.

Every failure a user can cause (missing file, not ONNX, truncated, missing external data)
becomes an :class:`InputError` with one line naming the fix. Writes go to a temporary
folder beside the destination and are renamed into place, so an interrupted run never
leaves a partial artifact, and the input is never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxsmith.errors import InputError, first_line

__all__ = [
    "EXTERNAL_DATA_THRESHOLD",
    "external_data_files",
    "hash_files",
    "load_onnx",
    "model_bytes",
    "reads_external_files",
    "save_onnx",
    "session_source",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

# Protobuf cannot hold more than 2 GiB; stay well below it before switching to external data.
EXTERNAL_DATA_THRESHOLD = 1536 * 1024 * 1024


def external_data_files(proto: onnx.ModelProto, base_dir: Path, *, check: bool = True) -> list[Path]:
    """Check every tensor of ``proto`` and return the external data files it uses.

    Raises InputError when a tensor's data type is unknown, or an external entry is not
    what the runtime would accept: a location outside ``base_dir``, an offset or length
    that is not a non-negative number, a length other than the bytes its dims and data
    type need, a file that is missing or shorter than offset + length (a truncated copy).
    ``check=False`` lists the files without looking at them or at the entries (what a run
    must not overwrite, even where it will not load).
    """
    needed: dict[Path, tuple[int, str]] = {}  # data file -> (where its last tensor ends, that tensor)
    for tensor in _all_tensors(proto):
        if check:
            _check_data_type(tensor)
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = Path(entries.get("location", ""))
        if location.is_absolute() or ".." in location.parts:
            raise InputError(
                f"tensor '{tensor.name}' points to external data outside the model folder ({entries.get('location')})",
                "re-export the model with its data file beside it",
            )
        end = _external_end(tensor, entries) if check else 0
        needed[base_dir / location] = max(needed.get(base_dir / location, (0, "")), (end, tensor.name))
    for data_file, (end, name) in needed.items() if check else ():
        if not data_file.is_file():
            raise InputError(
                f"external data file '{data_file.name}' is missing next to the model in {base_dir}",
                "copy the model together with its data file(s)",
            )
        if data_file.stat().st_size < end:
            raise InputError(
                f"external data file '{data_file}' is truncated ({data_file.stat().st_size} bytes; tensor '{name}' needs {end})",
                "copy the data file again in full",
            )
    return sorted(needed)


def _check_data_type(tensor: onnx.TensorProto) -> None:
    try:
        ir.DataType(tensor.data_type)
    except ValueError:
        raise InputError(f"tensor '{tensor.name}' has data type {tensor.data_type}, which ONNX does not define",
                         "re-export the model; if it was edited by hand, give the tensor a data type of onnx.TensorProto") from None


def _external_end(tensor: onnx.TensorProto, entries: dict[str, str]) -> int:
    """Where ``tensor``'s bytes end in its data file, after checking its offset and length.

    A declared length must be exactly what the dims and data type need: ONNX Runtime refuses
    a shorter one, and reading past it (as onnx-ir does) takes the next tensor's bytes.
    """
    numbers = {}
    for key in ("offset", "length"):
        text = entries.get(key)
        if text is not None and not (text.isascii() and text.isdigit()):
            raise InputError(f"tensor '{tensor.name}' has external data {key} '{text[:40]}', not a non-negative number of bytes",
                             "re-export the model; its external data entries are damaged")
        numbers[key] = int(text) if text is not None else None
    offset, length = numbers["offset"] or 0, numbers["length"]
    dtype = ir.DataType(tensor.data_type)
    try:
        bits = dtype.bitwidth
    except TypeError:  # strings, undefined: no size to check against
        return offset + (length or 0)
    elements = 1
    for dim in tensor.dims:
        elements *= dim
    need = -(-elements * bits // 8)
    if length is not None and length != need:
        raise InputError(f"tensor '{tensor.name}' declares {length} bytes of external data but its dims {list(tensor.dims)} "
                         f"of {dtype.name} need {need}", "re-export the model; its external data entries are damaged")
    return offset + need


def _all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can hold external data: initializers and tensor attributes of the
    graph, its subgraphs and the model's functions (what onnx.load's private
    ``_get_all_tensors`` walks, written with public protobuf fields)."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _graph_tensors(function)


def _graph_tensors(graph: onnx.GraphProto | onnx.FunctionProto) -> Iterator[onnx.TensorProto]:
    if isinstance(graph, onnx.GraphProto):
        yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def load_onnx(path: str | os.PathLike) -> tuple[ir.Model, list[Path]]:
    """Load an ONNX file, validated, with external data read into memory when it fits.

    Returns the model and the external data files it came with.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"model file not found: {path}", "check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a model file", "pass the path of an .onnx file")
    if not path.is_file():  # a FIFO would block the read forever, a device (/dev/zero) read until memory runs out
        raise InputError(f"{path} is not a regular file", "pass the path of an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise InputError(
            f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e).strip()[:120] or 'cannot parse'})",
            "pass an .onnx file written by an ONNX exporter; if it was copied, it may be truncated",
        ) from e
    if not proto.graph.node and not proto.graph.output:
        raise InputError(
            f"{path} holds no ONNX graph (empty or not an ONNX file)",
            "pass an .onnx file written by an ONNX exporter",
        )
    data_files = external_data_files(proto, path.parent)
    try:
        onnx.checker.check_model(str(path))  # by path, so external data resolves beside the model
    except onnx.checker.ValidationError as e:
        first = first_line(e)
        raise InputError(
            f"{path} is not a valid ONNX model: {first}",
            "re-export it; if it was copied, it may be truncated",
        ) from e
    try:
        model = ir.serde.deserialize_model(proto)
    except ir.serde.SerdeError as e:  # what the checker lets through and onnx-ir cannot read
        raise InputError(f"{path} holds a graph that cannot be read: {_root_cause(e)}",
                         "re-export the model; if it was edited by hand, check its tensors and attributes") from None
    _negative_dims_to_dynamic(model)
    _let_initializers_be_constants(model)
    ir.external_data.set_base_dir(model.graph, path.parent)
    if sum(f.stat().st_size for f in data_files) < EXTERNAL_DATA_THRESHOLD:
        # Small enough: read weights now so later passes and sessions never chase files.
        ir.external_data.load_to_model(model)
    return model, data_files


def _root_cause(error: BaseException) -> str:
    """The innermost cause's first line: onnx-ir wraps the reason in one error per level it walked."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {first_line(error)}"


def _let_initializers_be_constants(model: ir.Model) -> None:
    """Before IR version 4 every initializer had to be a graph input too (a default a feed
    could replace); passes add initializers that are plain constants (folded Constants,
    fused weights), which such a model cannot hold. Raising the version to 4 changes no
    meaning: the initializers that were inputs stay inputs."""
    model.ir_version = max(model.ir_version, 4)


def _negative_dims_to_dynamic(model: ir.Model) -> None:
    """Some exporters (Paddle's, e.g. PP-OCR's ``x [-1, 3, ?, ?]``) write a dynamic dim as -1.

    ONNX Runtime reads it as dynamic; onnx-ir and the constant folder would take it as a
    fixed -1, so make it an unnamed symbolic dim, as it was meant.
    """
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is not None and any(isinstance(d, int) and d < 0 for d in value.shape):
            value.shape = ir.Shape([None if isinstance(d, int) and d < 0 else d for d in value.shape])


def hash_files(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths`` in order: the identity of a model and its data."""
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def reads_external_files(model: ir.Model) -> bool:
    """Whether some of ``model``'s weights are still in their files (left there on load, above
    EXTERNAL_DATA_THRESHOLD): a protobuf of it names them relative to no folder."""
    return any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())


def model_bytes(model: ir.Model) -> int:
    """Bytes of all initializers, the number that decides inline vs external data."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_onnx(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> list[Path]:
    """Write ``model`` to ``path`` atomically; return the files written.

    ``external_data=None`` chooses: weights go to ``<name>.data`` beside the model when they
    would not fit in one protobuf.
    """
    path = Path(path)
    with _write_errors(path):
        return _save_onnx(model, path, external_data)


def _save_onnx(model: ir.Model, path: Path, external_data: bool | None) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = model_bytes(model) >= EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    tmp_dir = Path(tempfile.mkdtemp(prefix=".onnxsmith-", dir=path.parent))
    try:
        ir.save(model, tmp_dir / path.name, external_data=data_name if external_data else None)
        written = []
        if external_data and (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, path.parent / data_name)
            written.append(path.parent / data_name)
        os.replace(tmp_dir / path.name, path)  # the model last: it is what readers open
        written.insert(0, path)
        return written
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary file and a rename."""
    path = Path(path)
    with _write_errors(path):
        _write_text_atomic(path, text)


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".onnxsmith-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """A write the OS refuses (no such place, a folder in the way, the disk full) as an input
    error naming the path; commands check their paths before the work (paths_guard), so this
    is the last line for what changed since, or a writer that had nothing to check."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        raise InputError(f"cannot write {path}: {e.strerror or type(e).__name__}{where}",
                         "choose a path in a folder you can write to") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def session_source(model: ir.Model) -> Iterator[bytes | str]:
    """Yield what an ONNX Runtime session can load: bytes, or a temporary path for big models
    and for models with weights still in external files (bytes would name those files
    relative to no folder, which ONNX Runtime refuses)."""
    if model_bytes(model) < EXTERNAL_DATA_THRESHOLD and not reads_external_files(model):
        yield ir.serde.serialize_model(model).SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="onnxsmith-session-") as tmp:
        target = Path(tmp) / "model.onnx"
        ir.save(model, target, external_data="model.onnx.data")
        unmap_external_weights(model)
        yield str(target)


def unmap_external_weights(model: ir.Model) -> None:
    """Close the memory maps of ``model``'s weights still in their files (each is mapped again
    when next read). Writing the model read every page of them, and mapped pages count as
    ours: while a session loads its own copy from the file written, the 2 GB of a big model's
    mapped weights took the int8 pass's peak from 2.3x the model to 2.7x. A map that
    something still reads (a view handed to a session) stays open."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            try:
                tensor.release()
            except BufferError:  # "cannot close exported pointers exist": a live view of it
                pass
