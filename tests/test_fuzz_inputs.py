"""Fuzzed inputs through the real CLI (issue 17): mutated models, recipes and batch manifests.

hypothesis mutates the fixtures' protobufs (bytes near the graph's structure, and fields of
the decoded ModelProto: data types, dims, op types, names, opsets), recipe texts (YAML and
JSON, valid ones with characters edited and with keys and values drawn at random) and
batch manifests (YAML and CSV), runs each through the CLI in a fresh process
(tests/cli_fork.py) and asserts what every hostile-input case asserts
(tests/test_hostile_inputs.py): an exit code the README documents for bad input (never 1,
an internal error), one line on stderr on failure, no traceback, no leftovers on failure,
the inputs unchanged, and an end within the time bound.

derandomize=True makes every run draw the same examples (no example database), so CI sees
the same ones: MODEL_EXAMPLES + RECIPE_EXAMPLES + MANIFEST_EXAMPLES of them (the counts
below, 75 in all at the time of writing). ``ONNXSMITH_FUZZ_EXAMPLES=N`` multiplies each count
by N for a longer search by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import onnx
import pytest
from cli_fork import CONTROL, ForkedCli, snapshot
from conftest import FIXTURES
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

FAST = ("--latency-rounds", "0", "--profile-runs", "0")

SCALE = int(os.environ.get("ONNXSMITH_FUZZ_EXAMPLES", "1"))
MODEL_EXAMPLES, RECIPE_EXAMPLES, MANIFEST_EXAMPLES = 40 * SCALE, 25 * SCALE, 10 * SCALE
TIME_BOUND_S = 60  # per example; the slowest honest one (a batch) takes a few seconds

OK, INPUT_ERROR, PASS_FAILED, OVER_BUDGET, GATE_FAILED, BATCH_FAILURES = 0, 2, 3, 4, 5, 6


def _settings(examples: int):
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def forked_cli():
    server = ForkedCli()
    yield server
    server.close()


def _check_run(cli: ForkedCli, folder: Path, args: list[str], allowed: set[int], written: tuple[str, ...] = ()) -> int:
    """Run ``args`` in ``folder`` and assert the uniform properties; returns the exit code.

    ``written``: what a success must have written (relative to ``folder``).
    """
    before = snapshot(folder)
    result = cli(*args, cwd=folder, timeout=TIME_BOUND_S)
    after = snapshot(folder)
    output = result.stdout + result.stderr
    event(f"exit {result.code}")  # pytest --hypothesis-show-statistics lists how the examples ended
    assert result.code in allowed, f"exit {result.code} (allowed {sorted(allowed)}): {result.stderr[-2000:]}"
    assert "Traceback" not in output and "internal error" not in output, result.stderr[-2000:]
    assert not CONTROL & set(output), f"a raw control character reached the terminal: {output[-300:]!r}"
    inputs = {k: v for k, v in before.items() if k.startswith("in")}
    assert {k: v for k, v in after.items() if k.startswith("in")} == inputs, "an input changed"
    if result.code in (OK, GATE_FAILED):  # a failed gate still writes the artifact and its report
        for name in written:
            assert (folder / name).is_file(), name
    elif result.code != BATCH_FAILURES:  # a batch keeps the models it converted, its ledger and its logs
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
        assert after == before, f"left behind: {sorted(set(after) - set(before))}"
    return result.code


class _Scratch:
    """A fresh folder per example (hypothesis reuses the test's tmp_path across examples)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="onnxsmith-fuzz-"))
        (self.path / "in").mkdir()
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------- models

BYTE_EDITS = st.lists(st.tuples(st.sampled_from(["flip", "zero", "ff", "delete", "insert", "truncate", "duplicate"]),
                                st.one_of(st.integers(0, 1500), st.integers(-1500, -1), st.integers(0, 1 << 20)),
                                st.integers(0, 255), st.integers(1, 32)), min_size=1, max_size=4)


def _edit_bytes(data: bytes, edits) -> bytes:
    buffer = bytearray(data)
    for kind, position, value, width in edits:
        if not buffer:
            break
        at = position % len(buffer)
        if kind == "flip":
            buffer[at] ^= 1 << (value % 8)
        elif kind in ("zero", "ff"):
            buffer[at] = 0 if kind == "zero" else 0xFF
        elif kind == "delete":
            del buffer[at:at + width]
        elif kind == "insert":
            buffer[at:at] = bytes([value]) * width
        elif kind == "truncate":
            del buffer[at:]
        else:
            buffer[at:at] = buffer[at:at + width]
    return bytes(buffer)


FIELD_EDITS = st.lists(st.tuples(
    st.sampled_from(["dtype", "tensor_dim", "input_dim", "op_type", "node_input", "drop_node", "drop_initializer",
                     "opset", "ir_version", "attribute", "domain", "output_name"]),
    st.integers(0, 1 << 16),
    st.one_of(st.integers(-2, 40), st.sampled_from([0, -1, 1 << 20, 1 << 40, 10**12])),
    st.sampled_from(["Relu", "Gemm", "MatMul", "Conv", "Identity", "Loop", "If", "NoSuchOp", "Cast", "Reshape", "", "x", "y",
                     "input", "logits", "\x1b[2J", "../w", "com.microsoft"]),
), min_size=1, max_size=3)


def _edit_fields(proto: onnx.ModelProto, edits) -> onnx.ModelProto:
    """Edits of the decoded model: each picks its target by index modulo what exists."""
    graph = proto.graph
    for kind, index, number, text in edits:
        nodes, initializers = graph.node, graph.initializer
        if kind == "dtype" and initializers:
            initializers[index % len(initializers)].data_type = number % 30
        elif kind == "tensor_dim" and initializers and initializers[index % len(initializers)].dims:
            dims = initializers[index % len(initializers)].dims
            dims[index % len(dims)] = number
        elif kind == "input_dim" and graph.input and graph.input[0].type.tensor_type.shape.dim:
            dims = graph.input[0].type.tensor_type.shape.dim
            dims[index % len(dims)].dim_value = max(number, 0) if number != -1 else 0
        elif kind == "op_type" and nodes:
            nodes[index % len(nodes)].op_type = text
        elif kind == "node_input" and nodes and nodes[index % len(nodes)].input:
            node = nodes[index % len(nodes)]
            node.input[index % len(node.input)] = text
        elif kind == "drop_node" and nodes:
            del nodes[index % len(nodes)]
        elif kind == "drop_initializer" and initializers:
            del initializers[index % len(initializers)]
        elif kind == "opset" and proto.opset_import:
            proto.opset_import[0].version = number
        elif kind == "ir_version":
            proto.ir_version = max(number, 0) % 14
        elif kind == "attribute" and nodes:
            nodes[index % len(nodes)].attribute.append(onnx.helper.make_attribute(text or "alpha", number))
        elif kind == "domain" and nodes:
            nodes[index % len(nodes)].domain = text
        elif kind == "output_name" and graph.output:
            graph.output[index % len(graph.output)].name = text
    return proto


@_settings(MODEL_EXAMPLES)
@given(fixture=st.sampled_from(["mlp", "cnn", "external"]),
       edit=st.one_of(st.tuples(st.just("bytes"), BYTE_EDITS), st.tuples(st.just("fields"), FIELD_EDITS)),
       with_data=st.booleans())
def test_fuzzed_models(forked_cli, fixture, edit, with_data):
    with _Scratch() as folder:
        source = FIXTURES / f"{fixture}.onnx"
        if fixture == "external":
            shutil.copy(FIXTURES / "external.onnx.data", folder / "in" / "external.onnx.data")
        kind, edits = edit
        if kind == "bytes":
            data = _edit_bytes(source.read_bytes(), edits)
        else:
            data = _edit_fields(onnx.load(source, load_external_data=False), edits).SerializeToString()
        model = folder / "in" / f"{fixture}.onnx"
        model.write_bytes(data)
        calib = ["--calib", str(FIXTURES / f"{fixture}.npz")] if with_data else []
        args = ["optimize", str(model), "-o", str(folder / "out" / "o.onnx"), "-p", "cleanup", *FAST, *calib]
        _check_run(forked_cli, folder, args, {OK, INPUT_ERROR}, written=("out/o.onnx", "out/o.report.json"))


# ---------------------------------------------------------------- recipes

RECIPE_TEXTS = [
    "passes: [cleanup]\n",
    "passes:\n  - cleanup\n  - fuse\nseed: 3\ncalibration: {samples: 8, eval_samples: 4}\n",
    "passes: [cleanup, {opset: {version: 17}}]\naccuracy: {max_drift: 0.5}\n",
    '{"passes": ["cleanup", {"fuse": {}}], "backend": "cpu", "target": {"threads": 1}}',
]
RECIPE_KEYS = ["passes", "seed", "backend", "calibration", "accuracy", "gates", "target", "resources", "description",
               "data", "samples", "eval_samples", "image_size", "max_drift", "metric", "min_speedup", "max_size", "cpu",
               "threads", "precision", "cleanup", "fuse", "opset", "version", "quantize", "mode", "shapes", "inputs", "x"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True),
                    st.sampled_from(["cleanup", "fuse", "opset{version=13}", "random", "host", "avx2", "1x64", "int8", "drift",
                                     "../../etc/passwd", "/proc/self/mem", "a\0b", "\x1b]52;c;AA==\x07", "x" * 5000]),
                    st.text(max_size=20))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.sampled_from(RECIPE_KEYS), inner, max_size=4)),
                           max_leaves=12)
TEXT_EDITS = st.lists(st.tuples(st.integers(0, 1 << 12), st.sampled_from(["delete", "insert", "replace"]),
                                st.sampled_from(list(":-{}[],&*!|>'\"#\n\t %@`\\") + ["\0", "\x85", "\ufeff", "\udcff", "é"])),
                      min_size=1, max_size=5)


def _edit_text(text: str, edits) -> str:
    for position, kind, char in edits:
        at = position % (len(text) + 1)
        text = text[:at] + (char if kind != "delete" else "") + text[at + (kind != "insert"):]
    return text


@_settings(RECIPE_EXAMPLES)
@given(recipe=st.one_of(
    st.tuples(st.sampled_from(RECIPE_TEXTS), TEXT_EDITS).map(lambda t: _edit_text(*t)),
    st.dictionaries(st.sampled_from(RECIPE_KEYS), JSON_VALUES, max_size=5).map(lambda d: json.dumps(d)),
), suffix=st.sampled_from([".yaml", ".json"]))
def test_fuzzed_recipes(forked_cli, recipe, suffix):
    with _Scratch() as folder:
        model = folder / "in" / "mlp.onnx"
        shutil.copy(FIXTURES / "mlp.onnx", model)
        path = folder / "in" / f"r{suffix}"
        path.write_bytes(recipe.encode("utf-8", "surrogateescape"))
        args = ["optimize", str(model), "--recipe", str(path), "-o", str(folder / "out" / "o.onnx"), *FAST, "--run-timeout", "20"]
        # A valid recipe may ask for a pass that cannot keep this model exact, or set a budget or gate it misses.
        _check_run(forked_cli, folder, args, {OK, INPUT_ERROR, PASS_FAILED, OVER_BUDGET, GATE_FAILED},
                   written=("out/o.onnx", "out/o.report.json"))


# ---------------------------------------------------------------- batch manifests

MANIFEST_TEXTS = {
    ".yaml": "- model: a.onnx\n- {model: b.onnx, output: sub/b2.onnx, passes: 'cleanup,fuse'}\n",
    ".csv": "model,output,passes,input_shape\na.onnx,,,\nb.onnx,b2.onnx,\"cleanup,fuse\",1x64\n",
}


@_settings(MANIFEST_EXAMPLES)
@given(suffix=st.sampled_from([".yaml", ".csv"]), edits=st.one_of(st.just([]), TEXT_EDITS))  # [] : the valid manifest runs too
def test_fuzzed_manifests(forked_cli, suffix, edits):
    with _Scratch() as folder:
        shutil.copy(FIXTURES / "mlp.onnx", folder / "in" / "a.onnx")
        shutil.copy(FIXTURES / "mlp.onnx", folder / "in" / "b.onnx")
        manifest = folder / "in" / f"zoo{suffix}"
        manifest.write_bytes(_edit_text(MANIFEST_TEXTS[suffix], edits).encode("utf-8", "surrogateescape"))
        args = ["batch", str(manifest), "-o", str(folder / "out"), "-j", "1", "--latency-rounds", "0", "--timeout", "30"]
        _check_run(forked_cli, folder, args, {OK, INPUT_ERROR, BATCH_FAILURES})
