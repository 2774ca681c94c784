"""The ONNX project's backend test corpus run through onnxsmith (issue 18's peer corpus).

Each case is a small valid model with inputs and the reference outputs the ONNX spec gives.
A case counts only where ONNX Runtime runs the original model to those outputs; then a
pipeline runs on it through the library (the case's own inputs as the data), and the
artifact is run on the same inputs and compared with the reference outputs. Outcomes:

- ``ok``: the artifact gives the reference outputs (within the case's tolerance, or for a
  lossy pipeline within ``LOSSY_RTOL``);
- ``wrong``: it was written and gives other outputs: the worst outcome;
- ``crash``: anything other than a clean onnxsmith error (exit 3 ``PassFailure`` counts too,
  since every model here is valid);
- ``refused``: a clean input/data/recipe error on a valid model;
- ``drift``: the lossy pipeline's drift went over its budget (a clean refusal to write);
- ``nan-data``: the original outputs NaN on the case's inputs, which onnxsmith refuses as
  evaluation data by design (no pass can be verified against NaN: metrics.check_reference);
- ``excluded``: ONNX Runtime itself fails the original case (not ours to count).

Shared by tests/test_onnx_corpus.py (a sample in CI) and bench/onnx_corpus_bench.py (all).
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxsmith.errors import AccuracyBudgetExceeded, OnnxsmithError, PassFailure
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import recipe_from_flags

DATA_KINDS = ("simple", "pytorch-converted", "pytorch-operator")
LOSSY_RTOL = {"quantize{mode=fp16}": 2e-2}  # float16 keeps ~3 significant digits
OUTCOMES = ("ok", "wrong", "crash", "refused", "drift", "nan-data", "excluded")
ACCEPTED = ("drift", "nan-data")  # clean refusals by design, not failures


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    inputs: list  # in graph-input order: arrays, or lists for sequence inputs
    outputs: list
    rtol: float
    atol: float


@dataclass
class Outcome:
    case: str
    pipeline: str
    outcome: str
    detail: str = ""


def node_cases() -> list[Case]:
    """The operator cases ``onnx.backend.test.case.node`` generates (one data set each)."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        collected = node.collect_testcases(None)
    cases = []
    for c in collected:
        for k, (inputs, outputs) in enumerate(c.data_sets or []):
            cases.append(Case(c.name if k == 0 else f"{c.name}_{k}", c.model, list(inputs), list(outputs), c.rtol, c.atol))
    return cases


def data_cases(kinds: tuple[str, ...] = DATA_KINDS) -> list[Case]:
    """The model cases the onnx wheel ships as files (simple, pytorch-converted, pytorch-operator)."""
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    cases = []
    for kind in kinds:
        for folder in sorted((root / kind).iterdir()):
            model = onnx.load(folder / "model.onnx")
            for k, data_set in enumerate(sorted(glob.glob(str(folder / "test_data_set_*")))):
                inputs = [_read_pb(p, model.graph.input[i].type) for i, p in enumerate(sorted(glob.glob(f"{data_set}/input_*.pb")))]
                outputs = [_read_pb(p, model.graph.output[i].type) for i, p in enumerate(sorted(glob.glob(f"{data_set}/output_*.pb")))]
                cases.append(Case(f"{kind}/{folder.name}" + (f"_{k}" if k else ""), model, inputs, outputs, 1e-3, 1e-7))
    return cases


def _read_pb(path: str, type_proto: onnx.TypeProto):
    with open(path, "rb") as f:
        raw = f.read()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(raw)
        return numpy_helper.to_list(seq)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(raw)
    return numpy_helper.to_array(tensor)


def reference_holds(case: Case) -> str | None:
    """Why ONNX Runtime's outputs for the case's model differ from its reference outputs, or
    None when they agree (then the case counts)."""
    return _differs(case.model, case, case.rtol, case.atol)


def run_case(case: Case, pipeline: str, workdir: Path) -> Outcome:
    """Run ``pipeline`` on a counted ``case`` through the library and judge the artifact on
    the case's data."""
    source, out = workdir / "model.onnx", workdir / "out.onnx"
    onnx.save(case.model, source)
    data = _write_data(case, workdir / "model.npz")
    recipe = recipe_from_flags(None, None, passes=pipeline, calibration={"data": str(data) if data else None})
    try:
        optimize(str(source), out, recipe, OptimizeOptions(latency_rounds=0, profile_runs=0))
    except AccuracyBudgetExceeded as exc:
        return Outcome(case.name, pipeline, "drift", exc.problem)
    except PassFailure as exc:
        return Outcome(case.name, pipeline, "crash", exc.problem)
    except OnnxsmithError as exc:
        return Outcome(case.name, pipeline, "nan-data" if "outputs NaN" in exc.problem else "refused", exc.problem)
    except Exception as exc:  # noqa: BLE001 - a traceback is the outcome being counted
        return Outcome(case.name, pipeline, "crash", f"{type(exc).__name__}: {exc} @ {_where(exc)}")
    rtol = LOSSY_RTOL.get(pipeline, case.rtol)
    # atol at least rtol/100: a pass may reorder float sums, which moves results near zero by more than the case's atol
    why = _differs(onnx.load(out), case, rtol, max(case.atol, rtol * 1e-2))
    return Outcome(case.name, pipeline, "wrong" if why else "ok", why or "")


def run_cases(cases: list[Case], pipelines: list[str]) -> list[Outcome]:
    for library in ("onnx_ir", "onnxscript"):  # they log every model they cannot infer or fold, with a traceback
        logging.getLogger(library).setLevel(logging.ERROR)
    ort.set_default_logger_severity(4)  # the cases ORT itself fails log an error each
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            why = reference_holds(case)
            for pipeline in pipelines:
                if why is not None:
                    results.append(Outcome(case.name, pipeline, "excluded", why))
                    continue
                workdir = Path(tmp) / f"{len(results)}"
                workdir.mkdir()
                results.append(run_case(case, pipeline, workdir))
    return results


def counts(results: list[Outcome]) -> dict[str, Counter]:
    """Per pipeline, how many cases had each outcome."""
    table: dict[str, Counter] = {}
    for r in results:
        table.setdefault(r.pipeline, Counter())[r.outcome] += 1
    return table


def _write_data(case: Case, path: Path) -> Path | None:
    """The case's inputs as onnxsmith data (one sample), or None where an npz cannot carry
    them (sequence inputs) or onnxsmith refuses them as calibration data (NaN/Inf): then
    onnxsmith feeds random data, and only the artifact check uses the case's inputs."""
    arrays = {}
    for spec, value in zip(case.model.graph.input, case.inputs):
        if not isinstance(value, np.ndarray):
            return None
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return None
        if value.dtype == object:  # strings: npz stores them as unicode arrays (an object array needs pickle)
            value = value.astype(str)
        arrays[spec.name] = value[None]
    np.savez(path, **arrays)
    return path


def _differs(model: onnx.ModelProto, case: Case, rtol: float, atol: float) -> str | None:
    """Why ONNX Runtime's outputs for ``model`` on the case's inputs differ from the case's
    reference outputs, or None."""
    try:
        outputs = _run(model, case)
    except Exception as exc:  # noqa: BLE001 - any runtime failure excludes or condemns the case the same way
        return f"runtime: {str(exc).splitlines()[0][:200]}"
    return _mismatch(outputs, case.outputs, rtol, atol)


def _run(model: onnx.ModelProto, case: Case) -> list:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {spec.name: value for spec, value in zip(session.get_inputs(), case.inputs)}
    return session.run(None, feeds)


def _mismatch(actual: list, expected: list, rtol: float, atol: float) -> str | None:
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, reference has {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        if isinstance(e, list):
            if not isinstance(a, list) or len(a) != len(e):
                return f"output {k}: sequence differs"
            why = _mismatch(a, e, rtol, atol)
            if why:
                return f"output {k}: {why}"
            continue
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            return f"output {k}: shape {a.shape}, reference {e.shape}"
        if e.dtype.kind in "OSU" or a.dtype.kind in "OSU":
            if not np.array_equal(a.astype(str), e.astype(str)):
                return f"output {k}: strings differ"
            continue
        if a.dtype != e.dtype:
            return f"output {k}: dtype {a.dtype}, reference {e.dtype}"
        try:
            np.testing.assert_allclose(a.astype(np.float64) if a.dtype.kind in "fc" else a, e, rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError:
            diff = np.abs(a.astype(np.float64) - e.astype(np.float64)) if a.dtype.kind in "fiub" else None
            return f"output {k}: values differ" + (f" (max abs {np.nanmax(diff):.3g})" if diff is not None and diff.size else "")
    return None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "onnxsmith" in f.filename or os.sep + "passes" + os.sep in f.filename or os.sep + "core" + os.sep in f.filename]
    frame = (ours or frames)[-1] if frames else None
    return f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
