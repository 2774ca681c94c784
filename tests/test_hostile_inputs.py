"""A hostile-input corpus (issue 17): every class of broken or malicious input, generated here.

Each case builds its inputs under ``tmp_path`` (small generated files and copies of the tiny
fixtures; nothing large is committed), runs the real CLI in a fresh process and asserts the
same properties whatever the class:

- the exit code: 2 for an input error, 0 where the input is a valid model that must work;
- on failure exactly one line on stderr, ``error: ...``, no traceback, no internal error,
  and no more than 1,000 characters (nothing expanded or echoed whole);
- no raw control character on stdout or stderr (terminal injection, item 5);
- the inputs unchanged (sha256 of every file before and after), and on failure nothing
  left behind anywhere under ``tmp_path`` (no artifact, data file, report or folder);
- no marker file from a payload.

The ids start with the issue item they belong to (``2-...`` for overwritten inputs,
``7-...`` for internal errors where the input is at fault). Crafted .pt2 archives (item 1)
are built with tests/test_pt2_safety.py's helpers, which also check that torch's own loader
runs their payloads. The CLI runs in a fork server (tests/cli_fork.py) so that 80 commands
cost seconds of imports rather than minutes.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_fork import CONTROL, ForkedCli, snapshot
from conftest import FIXTURES
from onnx import TensorProto, helper, numpy_helper

FAST = ("--latency-rounds", "0", "--profile-runs", "0")


@dataclass
class Case:
    """One command and what it must end in."""

    args: list[str]
    code: int = 2
    says: tuple[str, ...] = ()  # words the one error line must contain
    produces: tuple[str, ...] = ()  # files (under tmp) a success writes
    marker: str | None = None  # the file a payload would create
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 60


CASES: dict[str, Callable[[Path], Case]] = {}


def case(name: str):
    """Register a builder ``build(tmp) -> Case`` under the id ``name``."""

    def register(build: Callable[[Path], Case]) -> Callable[[Path], Case]:
        assert name not in CASES, name
        CASES[name] = build
        return build

    return register


# ---------------------------------------------------------------- generated inputs


def _copy(name: str, tmp: Path, as_name: str | None = None) -> Path:
    target = tmp / "in" / (as_name or name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / name, target)
    return target


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _graph_model(nodes, inputs, outputs, initializers=(), opset: int = 17, **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def _vi(name: str, dtype: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _matmul_model(weight: TensorProto) -> onnx.ModelProto:
    """y = x @ W, x [batch, 4], W [4, 3]: the model the initializer cases vary."""
    return _graph_model([helper.make_node("MatMul", ["x", "W"], ["y"])], [_vi("x", TensorProto.FLOAT, ["batch", 4])],
                        [_vi("y", TensorProto.FLOAT, ["batch", 3])], [weight])


def _external_weight(tmp: Path, dims=(4, 3), **entries: str) -> Path:
    """_matmul_model with W in ``w.bin`` (48 bytes of float32); ``entries`` overrides its external_data keys."""
    folder = tmp / "in"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(np.arange(12, dtype=np.float32).tobytes())
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for key, value in {"location": "w.bin", "offset": "0", "length": "48", **entries}.items():
        if value is not None:
            weight.external_data.add(key=key, value=value)
    return _save(_matmul_model(weight), folder / "m.onnx")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _png(width: int, height: int, rows: bytes | None = None) -> bytes:
    """A greyscale PNG declaring ``width`` x ``height``; ``rows`` (filtered scanlines) default to all of them, black."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" * (width + 1)) * height if rows is None else rows
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _image_folder(tmp: Path, **files: bytes) -> Path:
    folder = tmp / "in" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.png").write_bytes(_png(32, 32))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


class _Payload:
    """Unpickling this creates ``marker``: a harmless stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _optimize(model: Path, tmp: Path, *extra: str, out: str = "out/o.onnx") -> list[str]:
    return ["optimize", str(model), "-o", str(tmp / out), *FAST, *extra]


def _succeeds(model: Path, tmp: Path, *extra: str) -> Case:
    return Case(_optimize(model, tmp, "-p", "cleanup,fuse", *extra), code=0, produces=("out/o.onnx", "out/o.report.json"))


# ---------------------------------------------------------------- item 1: crafted .pt2 archives


def _pt2(tmp: Path, edit_name: str, *args) -> Path:
    torch = pytest.importorskip("torch")  # noqa: F841 - the archives are torch.export.save's own
    import test_pt2_safety as pt2

    base = tmp / "in" / "base.pt2"
    base.parent.mkdir(parents=True, exist_ok=True)
    pt2._save(base)
    edited = pt2._rewrite(base, tmp / "in" / f"{edit_name}.pt2", getattr(pt2, edit_name)(*args))
    base.unlink()
    return edited


@case("1-pt2-opaque-constant-payload")
def _(tmp):
    archive = _pt2(tmp, "_opaque_constant", tmp / "ran")
    return Case(_optimize(archive, tmp), says=("refused",), marker="ran", timeout=120)


@case("1-pt2-older-layout-payload")
def _(tmp):
    archive = _pt2(tmp, "_older_layout", tmp / "ran")
    return Case(_optimize(archive, tmp), says=("refused",), marker="ran", timeout=120)


@case("7-pt2-weights-config-not-json")
def _(tmp):
    archive = _pt2(tmp, "_config", "weights", b"{not json")
    return Case(_optimize(archive, tmp), says=("config",), timeout=120)


@case("7-pt2-constants-config-a-list")
def _(tmp):
    archive = _pt2(tmp, "_config", "constants", b"[]")
    return Case(_optimize(archive, tmp), says=("config",), timeout=120)


# ---------------------------------------------------------------- item 2: writes onto what is read


@case("2-output-is-the-input")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    return Case(_optimize(model, tmp, out="in/mlp.onnx"), says=("the input model",))


@case("2-output-is-a-hard-link-to-the-input")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    (tmp / "out").mkdir()
    os.link(model, tmp / "out" / "o.onnx")
    return Case(_optimize(model, tmp), says=("the input model",))


@case("2-output-is-the-input-external-data-file")
def _(tmp):
    model = _external_weight(tmp, location="weights.onnx")
    (tmp / "in" / "w.bin").rename(tmp / "in" / "weights.onnx")
    return Case(_optimize(model, tmp, out="in/weights.onnx"), says=("external data file",))


@case("2-output-data-file-lands-on-the-input-data-file")
def _(tmp):
    model = _external_weight(tmp, location="o.onnx.data")
    (tmp / "in" / "w.bin").rename(tmp / "in" / "o.onnx.data")
    return Case(_optimize(model, tmp, out="in/o.onnx"), says=("data file",))


@case("2-report-lands-on-the-json-recipe")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    (tmp / "in" / "o.report.json").write_text('{"passes": ["cleanup"]}')
    return Case(_optimize(model, tmp, "--recipe", str(tmp / "in" / "o.report.json"), out="in/o.onnx"), says=("recipe",))


@case("2-output-is-the-calibration-data")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    calib = _copy("mlp.npz", tmp)
    return Case(_optimize(model, tmp, "--calib", str(calib), out="in/mlp.npz"), says=("calibration",))


@case("2-save-recipe-onto-the-recipe")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    recipe = tmp / "in" / "r.yaml"
    recipe.write_text("passes: [cleanup]\n")
    return Case(["optimize", str(model), "--recipe", str(recipe), "--save-recipe", str(recipe), "--dry-run"], says=("recipe",))


@case("2-save-recipe-onto-the-model")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    return Case(["optimize", str(model), "-p", "cleanup", "--save-recipe", str(model), "--dry-run"], says=("input model",))


@case("2-dump-dir-holds-the-model")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    return Case(_optimize(model, tmp, "--dump-dir", str(tmp / "in")), says=("--dump-dir",))


@case("2-batch-outputs-name-each-others-sources")
def _(tmp):
    _copy("cnn.onnx", tmp, "a.onnx")
    _copy("mlp.onnx", tmp, "b.onnx")
    manifest = tmp / "in" / "zoo.yaml"
    manifest.write_text("- {model: a.onnx, output: b.onnx}\n- {model: b.onnx, output: a.onnx}\n")
    return Case(["batch", str(manifest), "-o", str(tmp / "in"), "-j", "1", "--latency-rounds", "0"], says=("is the model",))


@case("2-step-summary-is-the-input-model")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    return replace(Case(_optimize(model, tmp), says=("step summary", "the input model")), env={"GITHUB_STEP_SUMMARY": str(model)})


@case("2-batch-step-summary-is-a-source-model")
def _(tmp):
    model = _copy("cnn.onnx", tmp)
    return Case(["batch", str(tmp / "in"), "-o", str(tmp / "out"), "-j", "1", "--latency-rounds", "0"],
                says=("step summary", "the model"), env={"GITHUB_STEP_SUMMARY": str(model)})


# ---------------------------------------------------------------- item 3: non-finite data


@case("3-calibration-npz-with-nan")
def _(tmp):
    x = np.load(FIXTURES / "mlp.npz")["x"].copy()
    x[3, 5] = np.nan
    calib = _npz(tmp / "in" / "c.npz", x=x)
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(calib)), says=("NaN", "sample"))


@case("3-int8-calibration-npz-with-inf")
def _(tmp):
    x = np.load(FIXTURES / "mlp.npz")["x"].copy()
    x[0, 0] = np.inf
    calib = _npz(tmp / "in" / "c.npz", x=x)
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "-p", "quantize{mode=int8}", "--calib", str(calib)), says=("Inf", "sample"))


@case("3-calibration-npy-folder-with-nan")
def _(tmp):
    folder = tmp / "in" / "data"
    folder.mkdir(parents=True)
    x = np.load(FIXTURES / "mlp.npz")["x"].copy()
    np.save(folder / "a.npy", x[:8])
    x[9, 1] = -np.nan
    np.save(folder / "b.npy", x[8:])
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(folder)), says=("NaN",))


@case("3-model-outputs-nan-on-the-data")
def _(tmp):
    model = _save(_graph_model([helper.make_node("Sqrt", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, ["batch", 4])],
                               [_vi("y", TensorProto.FLOAT, ["batch", 4])]), tmp / "in" / "m.onnx")
    calib = _npz(tmp / "in" / "c.npz", x=-np.ones((8, 4), np.float32))
    return Case(_optimize(model, tmp, "--calib", str(calib)), says=("NaN",))


# ---------------------------------------------------------------- item 4: links out of a batch's OUTDIR


def _batch_with_link(tmp: Path, link: str, target: Path) -> Case:
    _copy("cnn.onnx", tmp)
    manifest = tmp / "in" / "zoo.yaml"
    manifest.write_text("- {model: cnn.onnx, output: sub/cnn.onnx}\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    (tmp / "elsewhere").mkdir(exist_ok=True)
    (tmp / "elsewhere" / "cnn.onnx").write_text("someone else's file\n")
    (tmp / "out" / link).parent.mkdir(parents=True, exist_ok=True)
    (tmp / "out" / link).symlink_to(target)
    return Case(["batch", str(manifest), "-o", str(tmp / "out"), "-j", "1", "--latency-rounds", "0"], says=("outside",))


@case("4-batch-folder-linked-out-of-outdir")
def _(tmp):
    return _batch_with_link(tmp, "sub", tmp / "elsewhere")


@case("4-batch-report-linked-out-of-outdir")
def _(tmp):
    return _batch_with_link(tmp, "sub/cnn.report.json", tmp / "elsewhere" / "cnn.onnx")


# ---------------------------------------------------------------- item 5: terminal control characters

EVIL = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x1b[H\r\x08"


def _evil_model(tmp: Path) -> Path:
    model = onnx.load(FIXTURES / "mlp.onnx")
    model.producer_name = f"evil{EVIL}"
    model.doc_string = f"doc{EVIL}"
    model.graph.node[0].name = f"node{EVIL}"
    model.graph.node[0].doc_string = EVIL
    model.metadata_props.add(key=f"k{EVIL}", value=EVIL)
    return _save(model, tmp / "in" / "evil.onnx")


@case("5-inspect-control-characters-in-names")
def _(tmp):
    return Case(["inspect", str(_evil_model(tmp))], code=0)


@case("5-inspect-json-control-characters-in-names")
def _(tmp):
    return Case(["inspect", "--json", str(_evil_model(tmp))], code=0)


@case("5-optimize-control-characters-in-names")
def _(tmp):
    return _succeeds(_evil_model(tmp), tmp)


@case("5-error-line-with-control-characters")
def _(tmp):
    return Case(_optimize(tmp / "in" / f"gone{EVIL}.onnx", tmp), says=("not found",))


# ---------------------------------------------------------------- item 6: exhaustion and hangs

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@case("6-recipe-yaml-alias-bomb")
def _(tmp):
    recipe = tmp / "in" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(ALIAS_BOMB + "passes: *i\n")
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--recipe", str(recipe)), says=("alias",))


@case("6-manifest-yaml-alias-bomb")
def _(tmp):
    _copy("mlp.onnx", tmp)
    manifest = tmp / "in" / "zoo.yaml"
    manifest.write_text(ALIAS_BOMB + "models: *i\n")
    return Case(["batch", str(manifest), "-o", str(tmp / "out"), "-j", "1"], says=("alias",))


@case("6-target-file-yaml-alias-bomb")
def _(tmp):
    target = tmp / "in" / "t.yaml"
    target.parent.mkdir(parents=True)
    target.write_text(ALIAS_BOMB + "cpu: *i\n")
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--target", str(target)), says=("alias",))


@case("6-recipe-bad-value-of-a-megabyte")
def _(tmp):
    recipe = tmp / "in" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(f"passes: [{'x' * 1_000_000}]\n")
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--recipe", str(recipe)), says=("unknown pass",))


@case("6-model-is-a-fifo")
def _(tmp):
    (tmp / "in").mkdir()
    os.mkfifo(tmp / "in" / "m.onnx")
    return Case(_optimize(tmp / "in" / "m.onnx", tmp), says=("regular file",))


@case("6-calibration-is-a-fifo")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    os.mkfifo(tmp / "in" / "c.npz")
    return Case(_optimize(model, tmp, "--calib", str(tmp / "in" / "c.npz")), says=("regular file",))


@case("6-model-is-dev-zero")
def _(tmp):
    return Case(_optimize(Path("/dev/zero"), tmp), says=("regular file",))


@case("6-model-loop-never-ends")
def _(tmp):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("v_in", TensorProto.FLOAT, [1])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([1.0], np.float32), "one")])
    model = _graph_model([helper.make_node("Loop", ["", "cond", "x"], ["y"], body=body)], [_vi("x", TensorProto.FLOAT, [1])],
                         [_vi("y", TensorProto.FLOAT, [1])], [numpy_helper.from_array(np.array(True), "cond")])
    return Case(_optimize(_save(model, tmp / "in" / "m.onnx"), tmp, "--run-timeout", "1"), says=("--run-timeout",))


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """An .npy that declares ``shape`` float32 and holds no data."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@case("6-npz-declares-10e12-elements")
def _(tmp):
    calib = tmp / "in" / "c.npz"
    calib.parent.mkdir(parents=True)
    with zipfile.ZipFile(calib, "w") as archive:
        archive.writestr("x.npy", _npy_header_only((1_000_000, 1_000_000)))
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(calib)), says=("memory",))


@case("6-input-shape-too-large")
def _(tmp):
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--input-shape", "100000000000x64"), says=("memory",))


@case("6-shapes-pass-too-large")
def _(tmp):
    recipe = tmp / "in" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text("passes:\n  - shapes: {inputs: {x: 100000000000x64}}\n")
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--recipe", str(recipe)), says=("memory",))


@case("6-image-size-too-large")
def _(tmp):
    folder = _image_folder(tmp)
    return Case(_optimize(_copy("cnn.onnx", tmp), tmp, "--calib", str(folder), "--image-size", "1000000x1000000"), says=("memory",))


# ---------------------------------------------------------------- item 7: malformed models


@case("7-model-empty-file")
def _(tmp):
    (tmp / "in").mkdir()
    (tmp / "in" / "m.onnx").write_bytes(b"")
    return Case(_optimize(tmp / "in" / "m.onnx", tmp))


@case("7-model-not-onnx")
def _(tmp):
    (tmp / "in").mkdir()
    (tmp / "in" / "m.onnx").write_text("this is not a model\n")
    return Case(_optimize(tmp / "in" / "m.onnx", tmp))


@case("7-model-truncated-protobuf")
def _(tmp):
    data = (FIXTURES / "cnn.onnx").read_bytes()
    (tmp / "in").mkdir()
    (tmp / "in" / "m.onnx").write_bytes(data[: len(data) // 2])
    return Case(_optimize(tmp / "in" / "m.onnx", tmp))


@case("7-model-initializer-of-unknown-dtype")
def _(tmp):
    weight = TensorProto(name="W", data_type=999, dims=[4, 3], raw_data=b"\0" * 48)
    return Case(_optimize(_save(_matmul_model(weight), tmp / "in" / "m.onnx"), tmp), says=("W",))


@case("7-model-inline-data-shorter-than-its-dims")
def _(tmp):
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3], raw_data=b"\0" * 8)
    return Case(_optimize(_save(_matmul_model(weight), tmp / "in" / "m.onnx"), tmp), says=("W",))


@case("7-model-external-data-missing")
def _(tmp):
    model = _external_weight(tmp)
    (tmp / "in" / "w.bin").unlink()
    return Case(_optimize(model, tmp), says=("w.bin",))


@case("7-model-external-data-truncated")
def _(tmp):
    model = _external_weight(tmp)
    (tmp / "in" / "w.bin").write_bytes(b"\0" * 20)
    return Case(_optimize(model, tmp), says=("w.bin",))


@case("7-model-external-data-offset-not-a-number")
def _(tmp):
    return Case(_optimize(_external_weight(tmp, offset="twelve"), tmp), says=("offset",))


@case("7-model-external-data-offset-negative")
def _(tmp):
    return Case(_optimize(_external_weight(tmp, offset="-8"), tmp), says=("offset",))


@case("7-model-external-data-dims-larger-than-the-data")
def _(tmp):
    return Case(_optimize(_external_weight(tmp, dims=(400, 3), length=None), tmp), says=("W",))


@case("7-model-external-data-outside-the-model-folder")
def _(tmp):
    (tmp / "secret.bin").write_bytes(b"\0" * 48)
    return Case(_optimize(_external_weight(tmp, location="../secret.bin"), tmp), says=("secret.bin",))


@case("7-model-external-data-absolute-path")
def _(tmp):
    (tmp / "secret.bin").write_bytes(b"\0" * 48)
    return Case(_optimize(_external_weight(tmp, location=str(tmp / "secret.bin")), tmp), says=("secret.bin",))


@case("7-valid-model-string-inputs-and-outputs")
def _(tmp):
    model = _graph_model([helper.make_node("Identity", ["s"], ["t"]), helper.make_node("Relu", ["x"], ["y"])],
                         [_vi("s", TensorProto.STRING, [1]), _vi("x", TensorProto.FLOAT, [1, 4])],
                         [_vi("t", TensorProto.STRING, [1]), _vi("y", TensorProto.FLOAT, [1, 4])])
    return _succeeds(_save(model, tmp / "in" / "m.onnx"), tmp)


@case("7-valid-model-zero-sized-dim")
def _(tmp):
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["z"], ["w"])],
                         [_vi("x", TensorProto.FLOAT, [1, 4]), _vi("z", TensorProto.FLOAT, [1, 0])],
                         [_vi("y", TensorProto.FLOAT, [1, 4]), _vi("w", TensorProto.FLOAT, [1, 0])])
    return _succeeds(_save(model, tmp / "in" / "m.onnx"), tmp)


@case("7-valid-model-with-no-nodes")
def _(tmp):
    model = _graph_model([], [_vi("x", TensorProto.FLOAT, [1, 4])], [_vi("x", TensorProto.FLOAT, [1, 4])])
    return _succeeds(_save(model, tmp / "in" / "m.onnx"), tmp)


@case("7-valid-model-with-a-scalar-input")
def _(tmp):
    model = _graph_model([helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "v"], ["y"])],
                         [_vi("s", TensorProto.FLOAT, []), _vi("v", TensorProto.FLOAT, ["batch", 4])],
                         [_vi("y", TensorProto.FLOAT, ["batch", 4])],
                         [numpy_helper.from_array(np.ones(4, np.float32), "x")])
    return _succeeds(_save(model, tmp / "in" / "m.onnx"), tmp)


# ---------------------------------------------------------------- item 7: output paths


@case("7-output-under-proc")
def _(tmp):
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, out="/proc/onnxsmith/o.onnx"), says=("/proc",))


@case("7-output-parent-is-a-file")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    (tmp / "out").write_text("a file\n")
    return Case(_optimize(model, tmp), says=("not a folder",))


@case("7-output-is-a-folder")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    (tmp / "out" / "o.onnx").mkdir(parents=True)
    return Case(_optimize(model, tmp), says=("folder",))


@case("7-output-report-path-is-a-folder")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    (tmp / "out" / "o.report.json").mkdir(parents=True)
    return Case(_optimize(model, tmp), says=("folder",))


@case("7-output-data-path-is-a-folder")
def _(tmp):
    model = _external_weight(tmp)
    (tmp / "out" / "o.onnx.data").mkdir(parents=True)
    return Case(_optimize(model, tmp), says=("folder",))


@case("7-output-name-too-long")
def _(tmp):
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, out="out/" + "a" * 300 + ".onnx"), says=("too long",))


@case("7-batch-outdir-is-a-file")
def _(tmp):
    _copy("cnn.onnx", tmp)
    (tmp / "out").write_text("a file\n")
    return Case(["batch", str(tmp / "in"), "-o", str(tmp / "out"), "-j", "1", "--latency-rounds", "0"], says=("not a folder",))


@case("7-dump-dir-is-a-file")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    (tmp / "dump").write_text("a file\n")
    return Case(_optimize(model, tmp, "--dump-dir", str(tmp / "dump")), says=("--dump-dir",))


@case("7-save-recipe-unwritable")
def _(tmp):
    model = _copy("mlp.onnx", tmp)
    return Case(["optimize", str(model), "-p", "cleanup", "--dry-run", "--save-recipe", "/proc/onnxsmith/r.yaml"], says=("/proc",))


@case("7-step-summary-unwritable")
def _(tmp):
    return replace(Case(_optimize(_copy("mlp.onnx", tmp), tmp), says=("step summary", "/proc")),
                   env={"GITHUB_STEP_SUMMARY": "/proc/onnxsmith/summary.md"})


@case("7-profile-output-unwritable")
def _(tmp):
    return Case(["profile", str(_copy("mlp.onnx", tmp)), "--runs", "1", "--warmup", "0", "-o", "/proc/onnxsmith/p.json"],
                says=("/proc",))


# ---------------------------------------------------------------- item 7: calibration data


@case("7-calibration-folder-with-a-garbage-png")
def _(tmp):
    folder = _image_folder(tmp, **{"bad.png": b"\x89PNG\r\n\x1a\n garbage"})
    return Case(_optimize(_copy("cnn.onnx", tmp), tmp, "--calib", str(folder)), says=("bad.png",))


@case("7-calibration-decompression-bomb-png")
def _(tmp):
    folder = _image_folder(tmp, **{"bomb.png": _png(40_000, 40_000, rows=b"\0" * 40_001)})
    return Case(_optimize(_copy("cnn.onnx", tmp), tmp, "--calib", str(folder)), says=("bomb.png",))


@case("7-calibration-truncated-png")
def _(tmp):
    whole = _png(64, 64, rows=bytes(range(256)) * 16 + b"\1" * (65 * 64 - 4096))
    folder = _image_folder(tmp, **{"cut.png": whole[: len(whole) // 2]})
    return Case(_optimize(_copy("cnn.onnx", tmp), tmp, "--calib", str(folder)), says=("cut.png",))


@case("7-calibration-npz-truncated-zip")
def _(tmp):
    data = (FIXTURES / "mlp.npz").read_bytes()
    calib = tmp / "in" / "c.npz"
    calib.parent.mkdir(parents=True)
    calib.write_bytes(data[: len(data) // 2])
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(calib)), says=("c.npz",))


@case("7-calibration-npz-bad-crc")
def _(tmp):
    data = bytearray((FIXTURES / "mlp.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside x.npy's data: the zip's CRC no longer matches
    calib = tmp / "in" / "c.npz"
    calib.parent.mkdir(parents=True)
    calib.write_bytes(bytes(data))
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(calib)), says=("c.npz",))


@case("7-calibration-pickled-npz-payload")
def _(tmp):
    calib = tmp / "in" / "c.npz"
    calib.parent.mkdir(parents=True)
    np.savez(calib, x=np.array([_Payload(tmp / "ran")], dtype=object))
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(calib)), says=("c.npz",), marker="ran")


@case("7-calibration-object-npy-in-a-folder")
def _(tmp):
    folder = tmp / "in" / "data"
    folder.mkdir(parents=True)
    np.save(folder / "x.npy", np.array([_Payload(tmp / "ran")], dtype=object), allow_pickle=True)
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--calib", str(folder)), says=("x.npy",), marker="ran")


@case("7-calibration-folder-of-mismatched-shapes")
def _(tmp):
    folder = tmp / "in" / "data"
    folder.mkdir(parents=True)
    np.save(folder / "a.npy", np.zeros((4, 3, 32, 32), np.float32))
    np.save(folder / "b.npy", np.zeros((4, 3, 16, 16), np.float32))
    return Case(_optimize(_copy("cnn.onnx", tmp), tmp, "--calib", str(folder)), says=("shape",))


@case("7-negative-seed")
def _(tmp):
    model, calib = _copy("mlp.onnx", tmp), _copy("mlp.npz", tmp)
    return Case(_optimize(model, tmp, "--calib", str(calib), "--seed", "-1"), says=("seed",))


# ---------------------------------------------------------------- item 7: recipes and metrics


def _recipe_case(tmp: Path, text: bytes | str, name: str = "r.yaml", *says: str) -> Case:
    recipe = tmp / "in" / name
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_bytes(text.encode() if isinstance(text, str) else text)
    return Case(_optimize(_copy("mlp.onnx", tmp), tmp, "--recipe", str(recipe)), says=(name, *says))


@case("7-recipe-json-nested-too-deep")
def _(tmp):
    return _recipe_case(tmp, '{"passes": ' + "[" * 100_000 + "]" * 100_000 + "}", "r.json")


@case("7-recipe-yaml-nested-too-deep")
def _(tmp):
    return _recipe_case(tmp, "passes: " + "[" * 100_000 + "]" * 100_000 + "\n")


@case("7-recipe-not-utf8")
def _(tmp):
    return _recipe_case(tmp, b"passes: [cleanup]\n# caf\xe9 \xff\xfe\n")


@case("7-recipe-yaml-python-tag-payload")
def _(tmp):
    return replace(_recipe_case(tmp, f"passes: !!python/object/apply:builtins.open ['{tmp / 'ran'}', 'w']\n"), marker="ran")


@case("7-recipe-calibration-path-with-a-nul-byte")
def _(tmp):
    return _recipe_case(tmp, 'calibration: {data: "c\\0.npz"}\n', "r.yaml", "NUL")


@case("7-recipe-is-a-list")
def _(tmp):
    return _recipe_case(tmp, "- cleanup\n- fuse\n")


@case("7-user-metric-raises")
def _(tmp):
    (tmp / "in").mkdir()
    (tmp / "in" / "hostile_metric.py").write_text("def boom(reference, candidate, feeds=None):\n    raise ValueError('boom')\n")
    model, calib = _copy("mlp.onnx", tmp), _copy("mlp.npz", tmp)
    return Case(_optimize(model, tmp, "--calib", str(calib), "--metric", "hostile_metric:boom"), says=("hostile_metric:boom",),
                env={"PYTHONPATH": str(tmp / "in"), "PYTHONDONTWRITEBYTECODE": "1"})


# ---------------------------------------------------------------- item 7: batch manifests


def _manifest_case(tmp: Path, name: str, text: bytes | str, *says: str) -> Case:
    _copy("cnn.onnx", tmp)
    manifest = tmp / "in" / name
    manifest.write_bytes(text.encode() if isinstance(text, str) else text)
    return Case(["batch", str(manifest), "-o", str(tmp / "out"), "-j", "1", "--latency-rounds", "0"], says=(name, *says))


@case("7-batch-csv-with-bad-recipe-json")
def _(tmp):
    return _manifest_case(tmp, "zoo.csv", 'model,recipe\ncnn.onnx,"{not json"\n')


@case("7-batch-manifest-not-utf8")
def _(tmp):
    return _manifest_case(tmp, "zoo.yaml", b"- model: cnn.onnx\n  output: caf\xe9.onnx\n")


@case("7-batch-output-with-a-nul-byte")
def _(tmp):
    return _manifest_case(tmp, "zoo.yaml", '- {model: cnn.onnx, output: "a\\0b.onnx"}\n')


@case("7-batch-csv-output-with-a-nul-byte")
def _(tmp):
    return _manifest_case(tmp, "zoo.csv", "model,output\ncnn.onnx,a\0b.onnx\n")


@case("7-batch-output-climbs-out-of-outdir")
def _(tmp):
    return _manifest_case(tmp, "zoo.yaml", "- {model: cnn.onnx, output: ../../escaped.onnx}\n")


@case("7-batch-manifest-is-a-scalar")
def _(tmp):
    return _manifest_case(tmp, "zoo.yaml", "just words\n", "list of entries")


# ---------------------------------------------------------------- item 8: external data shorter than declared


@case("8-external-data-length-shorter-than-the-tensor")
def _(tmp):
    return Case(_optimize(_external_weight(tmp, length="8"), tmp), says=("W",))


# ---------------------------------------------------------------- running the corpus


@pytest.fixture(scope="module")
def forked_cli():
    server = ForkedCli()
    yield server
    server.close()


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, tmp_path, forked_cli):
    tmp = tmp_path / "case"
    tmp.mkdir()
    spec = CASES[name](tmp)
    before = snapshot(tmp)
    result = forked_cli(*spec.args, cwd=tmp, env=spec.env, timeout=spec.timeout)
    after = snapshot(tmp)
    output = result.stdout + result.stderr
    assert result.code == spec.code, f"exit {result.code}, expected {spec.code}: {result.stderr[-3000:]}"
    assert "Traceback" not in output and "internal error" not in output, result.stderr[-3000:]
    assert not CONTROL & set(output), f"a raw control character reached the terminal: {output[-500:]!r}"
    if spec.marker:
        assert not (tmp / spec.marker).exists(), "the payload ran"
    if spec.code == 0:
        assert {k: v for k, v in after.items() if k.startswith("in")} == {k: v for k, v in before.items() if k.startswith("in")}
        for produced in spec.produces:
            assert (tmp / produced).is_file(), produced
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert len(lines[0]) <= 1000, f"an error line of {len(lines[0])} characters"
    for word in spec.says:
        assert word in lines[0], lines[0]
    assert after == before, f"files changed or left behind: {sorted(set(after.items()) ^ set(before.items()))}"
