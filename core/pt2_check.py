"""Checking a ``.pt2`` archive before ``torch.export.load`` reads it: an allow-list of members.

torch 2.13's loader (torch/export/pt2_archive/_package.py, torch/export/__init__.py and
torch/_export/serde/serialize.py) runs code planted in an archive in several ways, whatever
the archive's configs claim:

1. a constant whose path name starts with ``opaque_obj_`` goes through ``pickle.loads``, one
   starting with ``custom_obj_`` through the TorchScript unpickler, and weights or tensor
   constants marked ``use_pickle`` through ``torch.load(weights_only=False)``;
2. legacy ``data/weights/<model>.pt`` and ``data/constants/<model>.pt`` members, and sample
   inputs that fail a weights-only load, are loaded with ``weights_only=False``;
3. when the archive fails to load with a RuntimeError, ``torch.export.load`` retries it as the
   older zip layout (``version`` and ``serialized_*.pt`` at the zip's root), unpickled in full;
4. a symbolic shape's ``expr_str`` in ``models/<model>.json`` goes through ``sympy.sympify``,
   which evaluates it as Python, and names in the program become FX code that is ``exec``-ed;
5. ``data/aotinductor/`` holds compiled shared libraries.

So an archive is loaded only when every member, under the one root folder that
``torch.export.save`` writes, is of a kind in ``_MEMBER_KINDS``, each checked by its rule:

- short text records (format, versions, byte order, serialization id) and ``extra/*`` files,
  which torch reads as strings;
- raw tensor bytes (``data/weights/weight_N``, ``data/constants/tensor_N``), read as storage;
- payload configs (``data/{weights,constants}/<model>_*_config.json``): JSON whose every entry
  names a raw member of that kind with ``use_pickle`` false and tensor metadata;
- the program (``models/<model>.json``): JSON whose strings hold no control characters (but
  the stack traces' newlines), whose names and targets are dotted words and whose shape
  expressions use only symbols, numbers, operators and the sympy functions torch writes;
- sample inputs (``data/sample_inputs/<model>.pt``): must load with torch's weights-only
  unpickler, so torch's retry without it never runs.

Member names and contents are read through torch's own zip reader as well as Python's, so a
zip whose two readings differ (duplicate names, members outside the root) is refused.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from onnxsmith.errors import InputError

__all__ = ["check_pt2_archive"]

_Rule = Callable[[bytes, Any], str]  # a member's contents, torch -> the problem ("" if none)

_WORDS = re.compile(r"\w*(\.\w+)*")
_SYMBOL = re.compile(r"[a-z]+\d+", re.ASCII)
_SYMBOL_NAME = re.compile(r"'[A-Za-z_]\w*'", re.ASCII)
_NAME_KEYS = ("name", "target", "fqn")
# Names a shape expression in a torch 2.13 program may use (sympy's and the functions of
# torch.utils._sympy.functions its deserializer passes to sympify); anything else is refused.
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or",
    "Not", "Max", "Min", "Abs", "Mod", "Pow", "Mul", "Add", "floor", "ceiling", "oo", "zoo", "nan",
    "True", "False", "positive", "integer", "nonnegative", "real", "finite", "FloorDiv",
    "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity",
})
_OPERATORS = frozenset({"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "<", ">", "<=", ">=", "==", "!=", "&", "|", "~"})


def check_pt2_archive(path: Path, torch: Any) -> None:
    """Raise InputError unless every member of ``path`` loads without running its contents."""
    names = _member_names(path)
    reader = _torch_reader(path, names, torch)
    for name in sorted(names):
        allowed, rule = _kind_of(name)
        if not allowed:
            raise _refused(path, name, "is not a member torch.export.save writes with plain tensors")
        problem = rule(_read(reader, path, name), torch) if rule else ""
        if problem:
            raise _refused(path, name, problem)
    _check_configs_present(path, names)


def _check_configs_present(path: Path, names: set[str]) -> None:
    """Each program needs its two payload configs (torch stops on a bare assertion without them)."""
    for name in sorted(names):
        program = re.fullmatch(r"models/(\w+)\.json", name, re.ASCII)
        if program is None:
            continue
        for config in (f"data/weights/{program[1]}_weights_config.json", f"data/constants/{program[1]}_constants_config.json"):
            if config not in names:
                raise _refused(path, config, "is missing")


def _refused(path: Path, member: str, problem: str) -> InputError:
    return InputError(
        f"{path.name} is refused: member {member!r} {problem} (onnxsmith never unpickles or runs archive contents)",
        "re-save it with torch.export.save (plain tensor weights, no custom objects), or export to ONNX yourself",
    )


def _not_an_archive(path: Path, why: str) -> InputError:
    return InputError(f"{path.name} is not a torch.export archive ({why})", "save it with torch.export.save")


def _member_names(path: Path) -> set[str]:
    """The members' names below the archive's one root folder, as Python's zip reader sees them."""
    try:
        with zipfile.ZipFile(path) as archive:
            full = [info.filename for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise _not_an_archive(path, "not a zip file") from None
    if not full:
        raise _not_an_archive(path, "empty")
    if len(set(full)) != len(full):
        raise _not_an_archive(path, "a member name appears twice")
    root = full[0].split("/", 1)[0] + "/"
    outside = [name for name in full if not name.startswith(root) or name == root]
    if outside:
        raise _refused(path, outside[0], "lies outside the one folder torch.export.save puts every member in")
    return {name[len(root):] for name in full}


def _torch_reader(path: Path, names: set[str], torch: Any) -> Any:
    """torch's own reader of the archive, checked to see the same members as Python's."""
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        records = set(reader.get_all_records())
    except Exception:  # noqa: BLE001 (whatever torch's reader fails on, the file is no archive it can load)
        raise _not_an_archive(path, "torch cannot read its zip directory") from None
    if records != names:
        raise _not_an_archive(path, "torch and Python read different members from it")
    return reader


def _read(reader: Any, path: Path, name: str) -> bytes:
    try:
        return reader.get_record(name)
    except Exception:  # noqa: BLE001 (a corrupt member: torch would fail on it too)
        raise _not_an_archive(path, f"member {name!r} cannot be read") from None


def _kind_of(name: str) -> tuple[bool, _Rule | None]:
    """Whether member ``name`` is of an allowed kind, and the rule its contents must pass
    (None: nothing in them is ever run, so they are not read here)."""
    for pattern, rule in _MEMBER_KINDS:
        if pattern.fullmatch(name):
            return True, rule
    return False, None


def _weights_config(data: bytes, torch: Any) -> str:
    return _payload_config(data, re.compile(r"weight_\d+", re.ASCII))


def _constants_config(data: bytes, torch: Any) -> str:
    return _payload_config(data, re.compile(r"tensor_\d+", re.ASCII))


def _payload_config(data: bytes, raw_member: re.Pattern[str]) -> str:
    """Every entry must be a raw tensor: torch picks the loader by the entry's path name
    (``opaque_obj_*`` is unpickled even when ``use_pickle`` is false), then by ``use_pickle``."""
    config = _json(data)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        return "is not a payload config (a JSON object with a 'config' object)"
    for fqn, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path_name"), str):
            return f"has a malformed entry for {fqn!r}"
        if not raw_member.fullmatch(entry["path_name"]):
            return f"stores {fqn!r} as {entry['path_name']!r}, which torch would unpickle or cannot read as a tensor"
        if entry.get("use_pickle") is not False or not isinstance(entry.get("tensor_meta"), dict):
            return f"stores {fqn!r} pickled"
    return ""


def _program(data: bytes, torch: Any) -> str:
    """The serialized graph: its strings reach sympify and FX's generated code."""
    program = _json(data)
    if not isinstance(program, dict):
        return "is not a serialized program (a JSON object)"
    for key, value in _strings(program):
        if any(not (c.isprintable() or (c == "\n" and key == "stack_trace")) for c in value):
            return f"has a control character in its {key!r} field"
        if key == "expr_str" and not _is_shape_expression(value):
            return f"has a shape expression that is not plain arithmetic: {value[:80]!r}"
        if (key in _NAME_KEYS or key.endswith("_name")) and not _WORDS.fullmatch(value):
            return f"has a {key!r} that is not a dotted name: {value[:80]!r}"
    return ""


def _sample_inputs(data: bytes, torch: Any) -> str:
    """torch retries sample inputs with full pickle when the weights-only load fails."""
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # noqa: BLE001 (any failure here makes torch retry with full pickle)
        return "does not load with torch's weights-only unpickler"
    return ""


def _json(data: bytes) -> Any:
    """Parsed JSON, or None where the bytes are not JSON (or nest too deep to parse)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a parsed JSON value with the key it sits under (a list's items share its key)."""
    stack = [(key, value)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, dict):
            stack.extend((str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)


def _is_shape_expression(text: str) -> bool:
    """Whether ``text`` is symbols, numbers, operators and sympy functions only, as torch writes
    ``Symbol('s77', positive=True, integer=True) + 1``; sympify would evaluate anything else."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for token in tokens:
        if token.type == tokenize.NAME:
            ok = token.string in _SYMPY_NAMES or bool(_SYMBOL.fullmatch(token.string))
        elif token.type == tokenize.STRING:
            ok = bool(_SYMBOL_NAME.fullmatch(token.string))
        elif token.type == tokenize.OP:
            ok = token.string in _OPERATORS
        else:
            ok = token.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
        if not ok:
            return False
    return True


# Short records and extra files (torch reads them as strings) and raw tensor bytes (mapped as
# storage of the dtype their config names) need no rule.
_MEMBER_KINDS: list[tuple[re.Pattern[str], _Rule | None]] = [
    (re.compile(p, re.ASCII), rule)
    for p, rule in [
        (r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id", None),
        (r"extra/[\w.\-]+(/[\w.\-]+)*", None),
        (r"data/weights/weight_\d+|data/constants/tensor_\d+", None),
        (r"data/weights/\w+_weights_config\.json", _weights_config),
        (r"data/constants/\w+_constants_config\.json", _constants_config),
        (r"models/\w+\.json", _program),
        (r"data/sample_inputs/\w+\.pt", _sample_inputs),
    ]
]
