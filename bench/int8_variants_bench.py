#!/usr/bin/env python
"""Which int8 plan is fastest while keeping the task: the default, the rules alone, every layer, every op?

    python bench/int8_variants_bench.py [--models ppocr_det,...] [--backend cpu] [--rounds N] [--no-doc]

For every model of tests/tasks.py, the int8 recipes below are built through ``onnxsmith.optimize``
with the default budget (the task metric of the model's signature), 16 calibration samples
of which a quarter is held out for the guard:

- ``default``: ``fuse,quantize{mode=int8}``: the AVX2 speed rules, then every other layer
  timed on the backend;
- ``rules``: ``quantize{speed=rules}``: the rules alone;
- ``dense``: ``quantize{skip_slow=false}``: every planned layer int8 (the guard still runs);
- ``all-ops``: ``quantize{all_ops=true}``: the default plus the backend's other int8 ops
  (Add, Mul, Concat, Sigmoid, pooling...) as layers, each timed and guarded;
- ``own-opset``: the default on ``fuse{upgrade_opset=false}``: without the opset upgrade
  fuse makes where a newer op unlocks a fusion (HardSwish on the PP-OCR models);
- ``every-layer`` and ``every-op``: every planned layer (and every op the backend has int8
  kernels for) in int8, no speed choice, no guard: what int8 could buy on this CPU if
  accuracy did not count, the ceiling against which the default's speed is judged.

The task score is measured on 32 other held-out samples (every held-out line for the OCR
models) against ONNX Runtime fp32; latency: the fp32 model and the artifacts on the
backend, interleaved in one run (median), speedup = fp32 / variant; where the backend
compiles the original differently when told nothing (OpenVINO: bf16 on a CPU that runs it),
that too, as a last row per model. The table goes to the section "## int8 variants on ONNX
Runtime CPU" of docs/benchmarks.md ("## int8 variants on OpenVINO" for ``--backend openvino``).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks
from fuse_bench import publish
from run import ort_session

from onnxsmith.backend import get_backend
from onnxsmith.latency import measure_interleaved
from onnxsmith.optimize import OptimizeOptions, as_is_session, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.runtime import run_all

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTIONS = {"cpu": "## int8 variants on ONNX Runtime CPU", "openvino": "## int8 variants on OpenVINO"}
VARIANTS = {
    "default": "fuse,quantize{mode=int8}",
    "rules": "fuse,quantize{mode=int8,speed=rules}",
    "dense": "fuse,quantize{mode=int8,skip_slow=false}",
    "all-ops": "fuse,quantize{mode=int8,all_ops=true}",
    "own-opset": "fuse{upgrade_opset=false},quantize{mode=int8}",
    "every-layer": "fuse,quantize{mode=int8,skip_slow=false,guard=false}",
    "every-op": "fuse,quantize{mode=int8,skip_slow=false,guard=false,all_ops=true}",
}
CALIBRATION = 16
EVALUATION = 32
ROUNDS = 21


def bench_model(name: str, backend_name: str, rounds: int, work: Path) -> tuple[list[str], dict[str, float]]:
    """One table row per variant of ``name``, and each variant's speedup over fp32."""
    task = tasks.get_task(name)
    src = task.model_path()
    calib = tasks.save_npz(task.calibration(CALIBRATION), work / f"{name}.calib.npz")
    evaluation = task.evaluation(min(EVALUATION, task.max_evaluation))
    reference = run_all(ort_session(src), evaluation)
    backend = get_backend(backend_name)
    sessions = {"fp32": backend.create_session(ir.load(src))}
    as_is = as_is_session(backend, ir.load(src))  # OpenVINO: the original with the runtime's own defaults, where not fp32
    if as_is is not None:
        sessions["as-is"] = as_is
    cells: dict[str, str] = {}
    for variant, passes in VARIANTS.items():
        recipe = validate_recipe({"passes": parse_pipeline(passes), "backend": backend_name, "calibration": {"data": str(calib)}})
        out = work / f"{name}.{variant}.onnx"
        began = time.perf_counter()
        try:
            report = optimize(str(src), out, recipe, OptimizeOptions(latency_rounds=0))
        except Exception as e:  # noqa: BLE001 (a failed build is a row, not the end of the bench)
            cells[variant] = f"| {name} | {variant} | failed: {str(e).splitlines()[0][:120]} | | | |"
            continue
        seconds = time.perf_counter() - began
        counts = report.passes[-1].counts
        planned = counts["layers_quantized"] + counts["layers_float"] + counts["layers_float_by_rule"]
        session = backend.create_session(ir.load(out))
        scores = task.score(reference, [dict(zip(reference[0], session.run(None, f), strict=True)) for f in evaluation], evaluation)
        sessions[variant] = session
        cells[variant] = (f"| {name} | {variant} | {counts['layers_quantized']}/{planned} ({counts['layers_float']} by the guard) | "
                          f"{task.metric} {scores[task.metric]:.3f} {'✓' if task.passed(scores) else '✗'} (≥ {task.bound:g}) | "
                          "{speedup} | " + f"{seconds:.0f} |")
    stats = measure_interleaved(sessions, task.timed(), rounds=rounds)
    speedups = {v: stats["fp32"].median_ms / stats[v].median_ms for v in cells if v in stats}
    rows = [cell.replace("{speedup}", f"{speedups[v]:.2f}x" if v in speedups else "") for v, cell in cells.items()]
    if as_is is not None:
        rows.append(f"| {name} | the original, {backend_name}'s defaults ({as_is.precision}) | | | "
                    f"{stats['fp32'].median_ms / stats['as-is'].median_ms:.2f}x | |")
    return rows, speedups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(tasks.TASKS))
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    rows = ["| model | variant | layers int8 / planned | task score (bound) | speedup vs fp32 | build s |", "|---|---|---|---|---|---|"]
    began = time.perf_counter()
    speedups: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model_rows, model_speedups = bench_model(name, args.backend, args.rounds, Path(tmp))
            rows.extend(model_rows)
            for variant, speedup in model_speedups.items():
                speedups.setdefault(variant, []).append(speedup)
            print("\n".join(rows), flush=True)
    models = len(args.models.split(","))
    rows.extend(f"| geometric mean | {variant} | | | {math.exp(sum(map(math.log, values)) / len(values)):.2f}x | |"
                for variant, values in speedups.items() if len(values) == models > 1)
    command = "python bench/int8_variants_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    publish(SECTIONS.get(args.backend, f"## int8 variants on {args.backend}"), command, time.perf_counter() - began,
            f"Backend {args.backend}. Variants: " + "; ".join(f"{v} `{p}`" for v, p in VARIANTS.items()) + ". Default budget "
            "(task metric of the model's signature); task score on held-out inputs against ONNX Runtime fp32; speedups from "
            "one interleaved run per model.", rows, None if args.no_doc else args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
