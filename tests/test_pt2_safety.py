""".pt2 archives that run a payload when torch.export.load reads them are refused before it does.

Each hostile archive is a real ``torch.export.save`` archive with members added or rewritten.
One subprocess shows that torch 2.13's own loader runs every payload (it leaves a marker
file); then onnxsmith must refuse the same archive with exit code 2 and one line, leaving
no marker and no output.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import run_cli
from onnxsmith.errors import InputError
from onnxsmith.pt2_check import check_pt2_archive

pytestmark = pytest.mark.torch

Members = dict[str, bytes]


class _Tiny(torch.nn.Module):
    """A Linear, a buffer and a lifted tensor constant: weights and constants members both."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.register_buffer("shift", torch.ones(3))

    def forward(self, x):
        return self.lin(x) + self.shift + torch.tensor([1.0, 2.0, 3.0])


class _Payload:
    """Unpickling this creates ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _save(path: Path, dynamic: bool = False, **kwargs) -> Path:
    """A real archive of _Tiny; with ``dynamic`` its batch dim is symbolic (a sympy expression)."""
    shapes = ({0: torch.export.Dim("batch", min=2, max=64)},) if dynamic else None
    program = torch.export.export(_Tiny().eval(), (torch.randn(2, 4),), dynamic_shapes=shapes)
    torch.export.save(program, path, **kwargs)
    return path


def _rewrite(src: Path, dst: Path, edit: Callable[[str, Members], Members]) -> Path:
    """Copy the archive ``src`` to ``dst`` with ``edit(root, members)`` applied to its members."""
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(iter(members)).split("/")[0]
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in edit(root, members).items():
            archive.writestr(name, data)
    return dst


def _opaque_constant(marker: Path) -> Callable[[str, Members], Members]:
    """A constant stored as ``opaque_obj_0``: torch pickle.loads it though its config says
    ``use_pickle: false`` and gives it tensor metadata."""

    def edit(root: str, members: Members) -> Members:
        config_name = f"{root}/data/constants/model_constants_config.json"
        config = json.loads(members[config_name])
        meta = next(iter(config["config"].values()))["tensor_meta"]
        config["config"]["planted"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": meta}
        members[config_name] = json.dumps(config).encode()
        payload = pickle.dumps(_Payload(marker))
        members[f"{root}/data/constants/opaque_obj_0"] = payload + b"\0" * (-len(payload) % 4)  # float32-sized
        return members

    return edit


def _pickled_weight(marker: Path) -> Callable[[str, Members], Members]:
    """A weight marked ``use_pickle``: torch.load(weights_only=False)."""

    def edit(root: str, members: Members) -> Members:
        config_name = f"{root}/data/weights/model_weights_config.json"
        config = json.loads(members[config_name])
        entry = next(iter(config["config"].values()))
        entry["use_pickle"] = True
        members[config_name] = json.dumps(config).encode()
        members[f"{root}/data/weights/{entry['path_name']}"] = _torch_saved(_Payload(marker))
        return members

    return edit


def _pickled_sample_inputs(marker: Path) -> Callable[[str, Members], Members]:
    """Sample inputs the weights-only load refuses: torch retries them with full pickle."""

    def edit(root: str, members: Members) -> Members:
        members[f"{root}/data/sample_inputs/model.pt"] = _torch_saved(((_Payload(marker),), {}))
        return members

    return edit


def _older_layout(marker: Path) -> Callable[[str, Members], Members]:
    """The pre-2.8 zip layout at the zip's root: torch.export.load falls back to it when the
    new layout fails, and loads its ``serialized_*.pt`` members with weights_only=False."""

    def edit(root: str, members: Members) -> Members:
        payload = _torch_saved(_Payload(marker))
        return {
            "version": b"8.0",
            "serialized_exported_program.json": members[f"{root}/models/model.json"],
            "serialized_state_dict.pt": payload,
            "serialized_constants.pt": payload,
            "serialized_example_inputs.pt": payload,
        }

    return edit


def _shape_expression(marker: Path) -> Callable[[str, Members], Members]:
    """A symbolic dim whose ``expr_str`` is Python: torch hands it to sympy.sympify, which evals it."""

    def edit(root: str, members: Members) -> Members:
        name = f"{root}/models/model.json"
        text = members[name].decode()
        symbol = re.search(r"Symbol\([^)]*\)", text)[0]
        members[name] = text.replace(symbol, f"[open('{marker}', 'w'), {symbol}][1]", 1).encode()
        return members

    return edit


def _torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


HOSTILE = {
    "opaque_constant": (_opaque_constant, False),
    "pickled_weight": (_pickled_weight, False),
    "pickled_sample_inputs": (_pickled_sample_inputs, False),
    "older_layout": (_older_layout, False),
    "shape_expression": (_shape_expression, True),
}

_LOAD_EACH = """
import sys, torch
for path in sys.argv[1:]:
    try:
        torch.export.load(path)
    except Exception:
        pass
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each case's archive and marker; asserts that plain torch.export.load runs every payload."""
    folder = tmp_path_factory.mktemp("pt2")
    bases = {False: _save(folder / "base.pt2"), True: _save(folder / "dynamic.pt2", dynamic=True)}
    cases = {}
    for case, (make, dynamic) in HOSTILE.items():
        marker = folder / f"{case}.ran"
        cases[case] = (_rewrite(bases[dynamic], folder / f"{case}.pt2", make(marker)), marker)
    archives = [str(archive) for archive, _ in cases.values()]
    subprocess.run([sys.executable, "-c", _LOAD_EACH, *archives], capture_output=True, timeout=300, check=False)
    for case, (_, marker) in cases.items():
        assert marker.exists(), f"{case}: torch.export.load did not run the payload, so this case tests nothing"
        marker.unlink()
    return cases


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pt2_is_refused_before_its_payload_runs(hostile, case, tmp_path):
    archive, marker = hostile[case]
    out = tmp_path / "out.onnx"
    result = run_cli("optimize", str(archive), "-o", str(out), "--latency-rounds", "0")
    assert result.code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "refused" in lines[0] and archive.name in lines[0]
    assert not marker.exists(), "the payload ran"
    assert not out.exists()


def test_plain_archives_pass_the_check(tmp_path):
    """What torch.export.save writes: static and symbolic shapes, extra files."""
    for archive in (_save(tmp_path / "static.pt2"), _save(tmp_path / "dynamic.pt2", dynamic=True),
                    _save(tmp_path / "extra.pt2", extra_files={"notes.txt": "trained on CIFAR"})):
        check_pt2_archive(archive, torch)


def _add(name: str, data: bytes = b"") -> Callable[[str, Members], Members]:
    return lambda root, members: {**members, f"{root}/{name}": data}


def _config(kind: str, text: bytes) -> Callable[[str, Members], Members]:
    return lambda root, members: {**members, f"{root}/data/{kind}/model_{kind}_config.json": text}


def _control_character(root: str, members: Members) -> Members:
    """A carriage return in a node's target: a line break in the code FX generates from it."""
    name = f"{root}/models/model.json"
    return {**members, name: members[name].replace(b'"torch.ops.aten.linear.default"', b'"torch.ops.aten.linear.default\\r"')}


REFUSED = {
    "aoti library": (_add("data/aotinductor/model/model.so"), "not a member torch.export.save writes"),
    "legacy weights": (_add("data/weights/model.pt"), "not a member torch.export.save writes"),
    "custom object": (_add("data/constants/custom_obj_0"), "not a member torch.export.save writes"),
    "config not JSON": (_config("weights", b"{not json"), "not a payload config"),
    "config a list": (_config("constants", b"[]"), "not a payload config"),
    "control character": (_control_character, "control character"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_members_outside_the_allow_list_are_refused(case, tmp_path):
    edit, expected = REFUSED[case]
    archive = _rewrite(_save(tmp_path / "base.pt2"), tmp_path / "edited.pt2", edit)
    with pytest.raises(InputError, match=expected):
        check_pt2_archive(archive, torch)
