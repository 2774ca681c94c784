#!/usr/bin/env python
"""Every default recipe on every model of the real-model zoo (tests/zoo.py; issue 18).

    python bench/zoo_bench.py [--models silero_vad,...] [--samples 16] [--no-doc]

For each zoo model, the presets ``fast`` and ``int8`` and ``quantize{mode=fp16}`` run
through ``onnxsmith.optimize`` on ONNX Runtime CPU with the model's zoo inputs as
``--calib`` (a quarter held out) and the default budget, on the metric onnxsmith recognises
from the model's signature. The row says what happened: the speedup optimize measured
(interleaved against the original, median of its rounds), the metric and its drift against
the budget, or the exit code and the one-line error. The table goes to the section
"## real-model zoo" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # zoo.py: shared with the tests
import zoo
from fuse_bench import publish

from onnxsmith.errors import OnnxsmithError
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import recipe_from_flags

SECTION = "## real-model zoo"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
RECIPES = {"fast": ("fast", None), "int8": ("int8", None), "fp16": (None, "cleanup,fuse,quantize{mode=fp16}")}


def run_one(name: str, recipe_name: str, samples: int, workdir: Path) -> str:
    """One table row's cells after the model name: recipe, outcome, speedup, metric, drift/budget, seconds."""
    data = workdir / f"{name}.npz"
    if not data.exists():
        np.savez(data, **zoo.zoo_inputs(name, samples))
    preset, passes = RECIPES[recipe_name]
    start = time.perf_counter()
    try:
        recipe = recipe_from_flags(None, preset, passes=passes, calibration={"data": str(data)})
        report = optimize(str(zoo.zoo_model(name)), workdir / f"{name}.{recipe_name}.onnx", recipe, OptimizeOptions())
    except OnnxsmithError as e:
        return f"{recipe_name} | exit {e.exit_code}: {e.problem[:150]} | | | | {time.perf_counter() - start:.0f}"
    d = report.to_dict()
    accuracy, summary = d["accuracy"], d["summary"]
    speedup = summary["latency_ms"].get("speedup")
    warnings = [w for record in d["passes"] for w in record.get("warnings", [])]
    outcome = ("ok, float kept: int8 no faster end to end" if any(w.startswith("int8 is no faster than float") for w in warnings)
               else "ok, float kept: no layer pays in int8" if any(w.startswith("no layer is int8") for w in warnings) else "ok")
    return (f"{recipe_name} | {outcome} | {speedup:.2f}x | {accuracy['metric']} | {summary['drift']:.3g} / {accuracy['budget']:g} | "
            f"{time.perf_counter() - start:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--models", default=",".join(zoo.ZOO), help="comma-separated zoo names")
    parser.add_argument("--samples", type=int, default=16, help="inputs per model (a quarter held out)")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    names = args.models.split(",")
    models = ["| model | from | what | data |", "|---|---|---|---|"]
    models += [f"| {n} | {zoo.ZOO[n].wheel.package}=={zoo.ZOO[n].wheel.version} | {zoo.ZOO[n].what} | {zoo.ZOO[n].data} |" for n in names]
    rows = ["| model | recipe | outcome | speedup | metric | drift / budget | s |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                zoo.zoo_model(name)
            except zoo.RealModelUnavailable as e:
                rows.append(f"| {name} | | unavailable: {e} | | | | |")
                continue
            for recipe_name in RECIPES:
                cells = run_one(name, recipe_name, args.samples, Path(tmp))
                print(name, cells, flush=True)
                rows.append(f"| {name} | {cells} |")
    description = ("Every default recipe on every zoo model on ONNX Runtime CPU, the zoo's inputs as --calib "
                   f"({args.samples} samples, a quarter held out), default budgets; speedup: optimize's own interleaved timing "
                   "against the original. tests/zoo.py says where each model and its inputs come from.")
    command = "python bench/zoo_bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    publish(SECTION, command, time.perf_counter() - start, description, [*models, "", *rows], None if args.no_doc else DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
