#!/usr/bin/env python
"""Does the default int8 recipe keep each real model's task, on ONNX Runtime and OpenVINO?

    python bench/task_budget_bench.py [--models ppocr_det,...] [--backends cpu,openvino]
                                      [--metrics auto,drift] [--speeds measured,rules]
                                      [--rounds N] [--no-doc]

For every model of tests/tasks.py and every backend, ``fuse,quantize{mode=int8,speed=S}``
is built through ``onnxsmith.optimize`` (what ``onnxsmith optimize --backend B --calib
CAL.npz`` runs) once per ``--metrics`` and ``--speeds`` entry: metric ``auto`` is the
default (the task metric recognised from the model's signature, core/task_choice.py, with
its default budget), ``drift`` the per-channel output drift the guard budgeted before;
speed ``measured`` (the default) times every layer on the backend, ``rules`` keeps float
the layers the AVX2-measured rules name. Calibration: 16 samples, of which
optimize holds out a quarter for the guard; the task score is then measured on 32
other held-out samples (every held-out line for the OCR models), the artifact run by the
backend it was built for (OpenVINO with the f32 hint the artifact records), against the
fp32 model run by ONNX Runtime. Latency: the artifacts, the fp32 model on the same backend
and, for OpenVINO, its runtime at its default precision (bf16 where the CPU has it), timed
interleaved in one run per model and backend; speedup = fp32 on that backend / variant.
The table goes to the section "## int8 under the task metric of the model's signature" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks
from fuse_bench import publish
from run import OpenVinoSession, ort_session

from onnxsmith.backend import get_backend
from onnxsmith.latency import measure_interleaved
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.runtime import run_all

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## int8 under the task metric of the model's signature"
PASSES = "fuse,quantize{{mode=int8,speed={speed}}}"
CALIBRATION = 16
EVALUATION = 32
ROUNDS = 15


@dataclass
class Row:
    model: str
    backend: str
    metric: str  # as asked: auto or drift
    speed: str  # quantize{speed=}: measured or rules
    chosen: str = ""
    budget: float = 0.0
    float_layers: str = ""
    score: float = float("nan")
    passed: bool = False
    speedup: float = float("nan")
    ov_default_speedup: float = float("nan")  # OpenVINO's runtime on the fp32 model, default precision
    build_s: float = 0.0
    error: str = ""

    @property
    def key(self) -> str:
        return f"{self.metric}/{self.speed}"


def bench_model(name: str, backends: list[str], metrics: list[str], speeds: list[str], rounds: int, work: Path) -> list[Row]:
    task = tasks.get_task(name)
    src = task.model_path()
    calib = tasks.save_npz(task.calibration(CALIBRATION), work / f"{name}.calib.npz")
    evaluation = task.evaluation(min(EVALUATION, task.max_evaluation))
    reference = run_all(ort_session(src), evaluation)
    rows = []
    for backend_name in backends:
        backend = get_backend(backend_name)
        timed = {"fp32": backend.create_session(ir.load(src))}
        built = []
        for metric, speed in itertools.product(metrics, speeds):
            row = Row(name, backend_name, metric, speed)
            out = work / f"{name}.{backend_name}.{metric}.{speed}.onnx"
            recipe = validate_recipe({"passes": parse_pipeline(PASSES.format(speed=speed)), "backend": backend_name,
                                      "calibration": {"data": str(calib)}, "accuracy": {"metric": metric}})
            began = time.perf_counter()
            try:
                report = optimize(str(src), out, recipe, OptimizeOptions(latency_rounds=0))
            except Exception as e:  # noqa: BLE001 (a failed build is a row, not the end of the bench)
                row.error = f"{type(e).__name__}: {e}".splitlines()[0][:160]
                rows.append(row)
                continue
            row.build_s = time.perf_counter() - began
            row.chosen, row.budget = report.accuracy["metric"], report.accuracy["budget"]
            counts = next(r.counts for r in report.passes if r.name == "quantize")
            row.float_layers = f"{counts.get('layers_float', 0) + counts.get('layers_float_by_rule', 0)}/" \
                               f"{counts.get('layers_quantized', 0) + counts.get('layers_float', 0) + counts.get('layers_float_by_rule', 0)}"
            session = backend.create_session(ir.load(out))
            scores = task.score(reference, [dict(zip(reference[0], session.run(None, f), strict=True)) for f in evaluation], evaluation)
            row.score, row.passed = scores[task.metric], task.passed(scores)
            timed[row.key] = session
            built.append(row)
            rows.append(row)
        if backend_name == "openvino":
            timed["openvino-default"] = OpenVinoSession(src)
        stats = measure_interleaved(timed, task.timed(), rounds=rounds)
        fp32_ms = stats["fp32"].median_ms
        for row in built:
            row.speedup = fp32_ms / stats[row.key].median_ms
            if "openvino-default" in stats:
                row.ov_default_speedup = fp32_ms / stats["openvino-default"].median_ms
    return rows


def table(rows: list[Row]) -> list[str]:
    header = ("| model | backend | speed= | budget on (asked) | budget | layers float | task score (bound) | speedup vs fp32 on the backend "
              "| OpenVINO default precision vs its fp32 | build s |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        task = tasks.get_task(r.model)
        if r.error:
            lines.append(f"| {r.model} | {r.backend} | {r.speed} | ({r.metric}) | | | failed: {r.error} | | | |")
            continue
        ov = f"{r.ov_default_speedup:.2f}x" if r.ov_default_speedup == r.ov_default_speedup else ""
        lines.append(f"| {r.model} | {r.backend} | {r.speed} | {r.chosen} ({r.metric}) | {r.budget:g} | {r.float_layers} | "
                     f"{task.metric} {r.score:.3f} {'✓' if r.passed else '✗'} (≥ {task.bound:g}) | {r.speedup:.2f}x | {ov} | {r.build_s:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(tasks.TASKS))
    parser.add_argument("--backends", default="cpu,openvino")
    parser.add_argument("--metrics", default="auto,drift", help="comma-separated --metric values to build with")
    parser.add_argument("--speeds", default="measured", help="comma-separated quantize{speed=} values to build with")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.extend(bench_model(name, args.backends.split(","), args.metrics.split(","), args.speeds.split(","), args.rounds, Path(tmp)))
            print("\n".join(table(rows)), flush=True)
    command = "python bench/task_budget_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    publish(SECTION, command, time.perf_counter() - began,
            f"Recipe `{PASSES.format(speed='S')}`: \"auto\" is the default (task metric from the model's signature, its default "
            "budget), \"drift\" the per-channel output drift the guard used before. Task score on held-out inputs against ONNX "
            "Runtime fp32; speedups from one interleaved run per model and backend (median of each).",
            table(rows), None if args.no_doc else args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
