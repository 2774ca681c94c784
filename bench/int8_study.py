#!/usr/bin/env python
"""What to quantize on ONNX Runtime CPU: int8 plans of the real models, by task metric and speed.

    python bench/int8_study.py run [--models ...] [--variants KEY ...] [--rounds N]
    python bench/int8_study.py write            # render the rows into docs/benchmarks.md

Every variant is ``quantize{mode=int8,...}`` built in-process from the fused model (``fuse``
first, as the default int8 recipe does), calibrated on 12 of bench/run.py's 16 calibration
feeds with the other 4 held out for the guard (as ``onnxsmith optimize`` splits them), then
scored on tests/tasks.py's held-out feeds against the original fp32 model, and timed on
ONNX Runtime CPU interleaved with the original fp32 model and a second fp32 session (an A/A
control): speedup = fp32 median / variant median over ``--rounds`` rounds after warm-up.
Rows go to ~/.cache/onnxsmith/int8_study/rows.jsonl (the latest row of a model and variant
wins) and, with ``write``, to the section "## int8 plan" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks as task_lib  # noqa: E402
from metric_study import fused_model, plan_overrides, stacked_dataset  # noqa: E402

from onnxsmith.backend import get_backend  # noqa: E402
from onnxsmith.context import Context  # noqa: E402
from onnxsmith.data import split_dataset  # noqa: E402
from onnxsmith.latency import measure_interleaved  # noqa: E402
from onnxsmith.registry import create_pass  # noqa: E402
from onnxsmith.runtime import make_session, run_all  # noqa: E402
from onnxsmith.sources import load_source  # noqa: E402

CACHE = Path.home() / ".cache" / "onnxsmith" / "int8_study"
ROWS = CACHE / "rows.jsonl"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## int8 plan"
FULL_CPU_OPS = ["Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize",
                "Sigmoid", "LeakyRelu", "Softmax", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Split", "Gather", "Pad",
                "Slice", "Flatten"]
# key -> (what it is, quantize options, int8_plan.plan_int8 keyword overrides)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "default": ("the default recipe (guard on, default budget)", {}, {}),
    "no-guard": ("default plan, guard off", {"guard": False}, {}),
    "no-speed-rule": ("guard off; depthwise and low-arithmetic layers int8 too", {"guard": False, "skip_slow": False}, {}),
    "heads-int8": ("guard off; output heads int8 too", {"guard": False}, {"heads": False}),
    "percentile": ("guard off; percentile ranges instead of reader-aware mse", {"guard": False, "calibration": "percentile"}, {}),
    "full-op-set": ("guard off; ONNX Runtime's whole CPU int8 op set, outputs quantized (as quantize_static)",
                    {"guard": False, "ops": FULL_CPU_OPS}, {}),
}


def build(name: str, key: str, calibration_n: int = 16):
    """(quantized model, pass result, seconds) of variant ``key`` on model ``name``."""
    _, options, overrides = VARIANTS[key]
    task = task_lib.get_task(name)
    calibration, evaluation = split_dataset(stacked_dataset(task.calibration(calibration_n)), seed=0)
    original = load_source(str(task.model_path())).ir
    reference = run_all(make_session(original, optimize=False), evaluation.feeds())
    ctx = Context(backend=get_backend("cpu"), calibration=calibration, evaluation=evaluation, reference=reference)
    model = fused_model(name, CACHE)
    with plan_overrides(**overrides):
        start = time.perf_counter()
        result = create_pass("quantize", {"mode": "int8", **options}).run(model, ctx)
    return result.model, result, time.perf_counter() - start


def run(name: str, keys: list[str], rounds: int) -> None:
    task = task_lib.get_task(name)
    evaluation = task.evaluation(min(32, task.max_evaluation))
    backend = get_backend("cpu")
    fp32 = load_source(str(task.model_path())).ir
    reference = run_all(make_session(fp32), evaluation)
    CACHE.mkdir(parents=True, exist_ok=True)
    for key in keys:
        model, result, seconds = build(name, key)
        scores = task.score(reference, backend.run_all(model, evaluation), evaluation)
        sessions = {"fp32": backend.create_session(fp32), "variant": backend.create_session(model),
                    "fp32 again": backend.create_session(fp32)}
        stats = measure_interleaved(sessions, task.timed(), rounds=rounds, warmup=2)
        row = {
            "model": name, "variant": key, "date": datetime.date.today().isoformat(), "metric": task.metric,
            "task": scores[task.metric], "passed": task.passed(scores), "bound": task.bound_text,
            "speedup": stats["fp32"].median_ms / stats["variant"].median_ms,
            "aa": stats["fp32"].median_ms / stats["fp32 again"].median_ms, "fp32_ms": stats["fp32"].median_ms,
            "rounds": rounds, "seconds": seconds, "counts": result.counts,
            "guard": [n for n in result.notes if n.startswith("guard:")],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        print(json.dumps(row), flush=True)
        with ROWS.open("a") as sink:
            sink.write(json.dumps(row) + "\n")


def render(rows: list[dict]) -> str:
    latest = {(r["model"], r["variant"]): r for r in rows}
    lines = [
        SECTION, "",
        "`python bench/int8_study.py run` — " + __doc__.split("\n\n")[2].replace("\n", " "), "",
        "Variants (what `quantize{mode=int8}` does by default, and one rule of its plan undone at a time; "
        "passes/quantize/int8_plan.py states the rules):", "",
    ]
    lines += [f"- `{key}`: {text}" for key, (text, _, _) in VARIANTS.items()]
    lines += ["", "| model | variant | task metric (bound) | int8 layers | float layers (guard / rules) | int8 kernels | "
              "speedup vs fp32 (A/A) | build s |", "|---|---|---|--:|--:|--:|--:|--:|"]
    for (model, key), r in sorted(latest.items(), key=lambda item: (item[0][0], list(VARIANTS).index(item[0][1]))):
        c = r["counts"]
        lines.append(f"| {model} | {key} | {r['metric']} {r['task']:.3f} {'✓' if r['passed'] else '✗'} ({r['bound']}) | "
                     f"{c.get('layers_quantized', 0)} | {c.get('layers_float', 0)} / {c.get('layers_float_by_rule', 0)} | "
                     f"{c.get('int8_kernels', 0)} | {r['speedup']:.2f}x ({r['aa']:.2f}) | {r['seconds']:.0f} |")
    dates = sorted({r["date"] for r in latest.values()})
    lines += ["", f"Measured {', '.join(dates)} on a shared 2-core AMD EPYC (AVX2, no VNNI: weights use 7 bits), "
              "ONNX Runtime CPU; speedups are noisy (see the A/A column)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "write"])
    parser.add_argument("--models", nargs="*", default=list(task_lib.TASKS))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    if args.action == "run":
        for name in args.models:
            run(name, args.variants, args.rounds)
        return 0
    from fuse_bench import write_section

    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    write_section(DOC, render([r for r in rows if r.get("variant") in VARIANTS and "aa" in r]), SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
