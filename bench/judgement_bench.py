#!/usr/bin/env python
"""Does the guard's budget hold on images it never saw? Judged on the held-out quarter alone vs on every real sample.

    python bench/judgement_bench.py [--models yolov8n] [--calibration 16,28] [--seeds 0,1,2,3] [--rounds N] [--no-doc]

For each model of tests/tasks.py named, each number of calibration samples given to the tool
and each data split (``--seed``: which quarter of them is held out),
``fuse,quantize{mode=int8}`` is built through ``onnxsmith.optimize`` with the default budget
(the task metric of the model's signature), judged two ways:

- ``held-out only``: ``eval_samples`` = a quarter, the guard judges the held-out samples alone
  (what it did for detection-f1 before it counted detections);
- ``default``: where those hold too few of what the metric counts to show its budget (the
  rule of three), the guard judges calibration samples too (near misses counted for top1 and
  ctc-text).

Every build of a model replays one per-layer cost table (``--costs``, measured by its first
build), so the speed choice is the same and only the data and the judgement differ. Then the budget's own metric
and the task score are measured on up to 32 other samples (as many as the task has)
against ONNX Runtime fp32, and every
artifact is timed against fp32 in one interleaved run (median; speedup = fp32 / artifact).
The table goes to the section "## detection budgets judged on every real image" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import tempfile
import time
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # tasks.py: shared with the tests
import tasks
from fuse_bench import publish
from run import ort_session

from onnxsmith.backend import get_backend
from onnxsmith.latency import measure_interleaved
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.runtime import run_all
from onnxsmith.task_metrics import TASK_METRICS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## detection budgets judged on every real image"
PASSES = "fuse,quantize{mode=int8}"
CALIBRATION = "16"
EVALUATION = 32
ROUNDS = 15
JUDGEMENTS = ("held-out only", "default")


def bench_model(name: str, sizes: list[int], seeds: list[int], rounds: int, work: Path) -> list[str]:
    """One row per (calibration size, seed, judgement) of ``name``."""
    task = tasks.get_task(name)
    src = task.model_path()
    evaluation = task.evaluation(min(EVALUATION, task.max_evaluation))
    reference = run_all(ort_session(src), evaluation)
    backend = get_backend("cpu")
    costs = work / f"{name}.costs.json"
    sessions = {"fp32": backend.create_session(ir.load(src))}
    cells = {}
    for size, seed, judgement in itertools.product(sizes, seeds, JUDGEMENTS):
        calib = work / f"{name}.{size}.npz"
        if not calib.exists():
            tasks.save_npz(task.calibration(size), calib)
        eval_samples = size // 4 if judgement == "held-out only" else None
        replay = {"target": {"costs": str(costs)}} if costs.exists() else {}
        recipe = validate_recipe({"passes": parse_pipeline(PASSES), "seed": seed, **replay,
                                  "calibration": {"data": str(calib), "eval_samples": eval_samples}})
        out = work / f"{name}.{size}.{seed}.{judgement[0]}.onnx"
        report = optimize(str(src), out, recipe, OptimizeOptions(latency_rounds=0, save_costs=None if replay else costs))
        accuracy, counts = report.accuracy, report.passes[-1].counts
        session = backend.create_session(ir.load(out))
        outputs = [dict(zip(reference[0], session.run(None, f), strict=True)) for f in evaluation]
        held_out = TASK_METRICS[accuracy["metric"]].function(reference, outputs, evaluation) if accuracy["metric"] in TASK_METRICS else None
        scores = task.score(reference, outputs, evaluation)
        key = f"{size}.{seed}.{judgement}"
        sessions[key] = session
        judged = report.data["evaluation"]["samples"]
        cells[key] = (f"| {name} | {size} | {seed} | {judgement} ({judged} samples) | {accuracy['metric']} ≤ {accuracy['budget']:g} | "
                      f"{counts['int8_kernels']} | {report.summary.drift:.3f} | "
                      f"{_drift_cell(held_out, accuracy['budget'], len(evaluation))} | "
                      f"{task.metric} {scores[task.metric]:.3f} {'✓' if task.passed(scores) else '✗'} | " + "{speedup} |")
    stats = measure_interleaved(sessions, task.timed(), rounds=rounds)
    return [cell.replace("{speedup}", f"{stats['fp32'].median_ms / stats[key].median_ms:.2f}x") for key, cell in cells.items()]


def _drift_cell(drift: float | None, budget: float, samples: int) -> str:
    """The budget's metric on the other samples, ✗ where it is over the budget ("" for a metric the bench cannot recompute)."""
    if drift is None:
        return ""
    return f"{drift:.3f} on {samples}" + (" ✗" if drift > budget else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="yolov8n")
    parser.add_argument("--calibration", default=CALIBRATION, help="calibration sample counts, comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    rows = ["| model | calibration samples | split seed | guard judged on | budget | int8 kernels | guard's drift | drift on other samples | task score | speedup vs fp32 |",
            "|---|--:|---|---|---|--:|--:|--:|---|--:|"]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.extend(bench_model(name, [int(n) for n in args.calibration.split(",")], [int(s) for s in args.seeds.split(",")],
                                    args.rounds, Path(tmp)))
            print("\n".join(rows), flush=True)
    command = "python bench/judgement_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    publish(SECTION, command, time.perf_counter() - began,
            f"`{PASSES}` on ONNX Runtime CPU, default budget; every build of a model replays its first build's per-layer "
            "cost table, so only the data and the guard's judgement differ. ✗: the budget's metric on other samples "
            f"(up to {EVALUATION}, as many as the task has) is over the budget. Speedups from one interleaved run per model.", rows, None if args.no_doc else args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
