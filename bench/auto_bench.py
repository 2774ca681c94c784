#!/usr/bin/env python
"""What does ``optimize --auto`` keep on each real model, how fast is it, and does the task hold?

    python bench/auto_bench.py [--models ppocr_det,...] [--backends cpu,openvino] [--rounds N] [--no-doc]

For every model of tests/tasks.py and every backend, ``onnxsmith.auto.auto_optimize`` runs
with its default candidates (what ``onnxsmith optimize M -o OUT --auto --backend B --calib
CAL.npz`` runs): 16 calibration samples (``--calibration N`` for more), of which a quarter is held out for its metric. The
speedups are those of --auto's own interleaved run (the original on the backend, every
built candidate, and the original on ONNX Runtime CPU in the same rounds); "vs ORT fp32" is
the kept artifact against the original on ONNX Runtime CPU; "vs OpenVINO as is", for
OpenVINO, the kept artifact against the original compiled with OpenVINO's defaults (its
default precision, bf16 on a CPU with native bf16: issue 16's target), from the same run
(the report's ``summary.latency_ms.as_is``). The kept artifact's task score
is then measured on 32 other held-out samples (every held-out line for the OCR models), run
by its backend at the precision it records, against ONNX Runtime fp32. "wall s" is the whole
--auto run: load, every build, the timing and the write. The table goes to the section
"## optimize --auto on the real models" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks
from fuse_bench import publish
from run import ort_session

from onnxsmith.auto import auto_optimize
from onnxsmith.backend import get_backend
from onnxsmith.optimize import OptimizeOptions
from onnxsmith.recipe import validate_recipe
from onnxsmith.runtime import run_all

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## optimize --auto on the real models"
CALIBRATION = 16
EVALUATION = 32
ROUNDS = 15


@dataclass
class Row:
    model: str
    backend: str
    kept: str = ""
    metric: str = ""
    speedup: float = math.nan  # kept vs the original on the same backend
    vs_ort: float = math.nan  # kept vs the original on ONNX Runtime CPU
    vs_as_is: float = math.nan  # OpenVINO: kept vs the original compiled with OpenVINO's defaults (bf16 here)
    score: float = math.nan
    passed: bool = False
    candidates: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    error: str = ""


def bench_model(name: str, backends: list[str], rounds: int, work: Path, calibration: int = CALIBRATION) -> list[Row]:
    task = tasks.get_task(name)
    src = task.model_path()
    calib = tasks.save_npz(task.calibration(calibration), work / f"{name}.calib.npz")
    evaluation = task.evaluation(min(EVALUATION, task.max_evaluation))
    reference = run_all(ort_session(src), evaluation)
    rows = []
    for backend_name in backends:
        row = Row(name, backend_name)
        rows.append(row)
        out = work / f"{name}.{backend_name}.onnx"
        recipe = validate_recipe({"backend": backend_name, "calibration": {"data": str(calib)}})
        began = time.perf_counter()
        try:
            report = auto_optimize(str(src), out, recipe, OptimizeOptions(latency_rounds=rounds))
        except Exception as e:  # noqa: BLE001 (a failed run is a row, not the end of the bench)
            row.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        row.wall_s = time.perf_counter() - began
        auto = report.auto
        row.kept, row.metric = auto["kept"], f"{auto['budget']['metric']} ≤ {auto['budget']['max_drift']:g}"
        row.speedup = report.summary.latency_ms["speedup"]
        kept_ms = report.summary.latency_ms["after"]
        ort_ms = auto["baseline_ms"] if backend_name == "cpu" else next((h["ms"] for h in auto["other_backends"] if h["backend"] == "cpu"), math.nan)
        row.vs_ort = ort_ms / kept_ms
        row.candidates = [_cell(c) for c in auto["candidates"] if not c["verdict"].startswith("skipped")]
        target = validate_recipe({"backend": backend_name, "target": {"precision": report.target["precision"]}}).target.load(None)
        backend = get_backend(backend_name, target)
        session = backend.create_session(ir.load(out))
        if backend_name == "openvino":  # --auto's own run timed the original with OpenVINO's defaults (None: they are fp32 here)
            as_is = report.summary.latency_ms.get("as_is")
            row.vs_as_is = as_is["speedup"] if as_is else row.speedup
        scores = task.score(reference, [dict(zip(reference[0], session.run(None, f), strict=True)) for f in evaluation], evaluation)
        row.score, row.passed = scores[task.metric], task.passed(scores)
    return rows


def _cell(candidate: dict) -> str:
    verdict = candidate["verdict"]
    mark = {"kept": "**kept**", "within budget": "ok", "over budget": "over"}.get(verdict, "no gain" if "no gain" in verdict else verdict[:40])
    speed = f" {candidate['speedup']:.2f}x" if candidate["speedup"] else ""
    return f"{candidate['name']}{speed} {mark}"


def table(rows: list[Row]) -> list[str]:
    header = ("| model | backend | budget (metric chosen) | kept | speedup on the backend | vs ORT fp32 | vs OpenVINO as is | "
              "task score (bound) | candidates built (speedup, verdict) | wall s |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        task = tasks.get_task(r.model)
        if r.error:
            lines.append(f"| {r.model} | {r.backend} | | failed: {r.error} | | | | | | |")
            continue
        as_is = f"{r.vs_as_is:.2f}x" if not math.isnan(r.vs_as_is) else ""
        lines.append(f"| {r.model} | {r.backend} | {r.metric} | {r.kept} | {r.speedup:.2f}x | {r.vs_ort:.2f}x | {as_is} | "
                     f"{task.metric} {r.score:.3f} {'✓' if r.passed else '✗'} (≥ {task.bound:g}) | {'; '.join(r.candidates)} | {r.wall_s:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(tasks.TASKS))
    parser.add_argument("--backends", default="cpu,openvino")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--calibration", type=int, default=CALIBRATION, help="calibration samples given to --auto")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.extend(bench_model(name, args.backends.split(","), args.rounds, Path(tmp), args.calibration))
            print("\n".join(table(rows)), flush=True)
    command = "python bench/auto_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    publish(SECTION, command, time.perf_counter() - began,
            "`optimize --auto` with its default candidates and default budget (the task metric of the model's signature). "
            "Speedups from --auto's own interleaved run (median of each); the kept artifact's task score on held-out inputs "
            "against ONNX Runtime fp32.", table(rows), None if args.no_doc else args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
