#!/usr/bin/env python
"""What does writing HardSwish/HardSigmoid as integer Add + Mul buy an int8 model on ONNX Runtime CPU?

    python bench/hard_activations_bench.py [--models ppocr_det,ppocr_rec,ppocr_cls] [--rounds 21] [--no-doc]

ONNX Runtime has no int8 HardSwish: between two int8 tensors it runs dequantized (a float
HardSigmoid and a float Mul between a DequantizeLinear and a QuantizeLinear). The int8 pass
writes it as QLinearAdd + a saturating QuantizeLinear + QLinearMul instead
(passes/quantize/hard_activations.py). This bench builds, per model with HardSwish (the
PP-OCR family), the int8 artifact where the most HardSwish sit between int8 tensors (every
layer and every op the backend runs in int8, no guard, no speed choice), once with that
rewrite and once without (``hard_activations=false``), plus the default recipe for reference,
and times them interleaved against fp32 on the cpu backend, with each one's task score on
held-out inputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # tasks.py: shared with the tests
import tasks
from fuse_bench import publish

from onnxsmith.backend import get_backend
from onnxsmith.latency import measure_interleaved
from onnxsmith.modelio import load_onnx
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe
from onnxsmith.runtime import named_outputs

SECTION = "## int8 HardSwish in integer kernels"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
EVERYTHING = "fuse,quantize{mode=int8,skip_slow=false,guard=false,speed=rules,all_ops=true%s}"
VARIANTS = {"all int8, integer HardSwish": EVERYTHING % "",
            "all int8, float HardSwish": EVERYTHING % ",hard_activations=false",
            "default recipe": "fuse,quantize{mode=int8}"}


def measure(name: str, rounds: int, work: Path) -> list[str]:
    """One table row per variant of model ``name``."""
    task = tasks.get_task(name)
    backend = get_backend("cpu")
    calib = tasks.save_npz(task.calibration(16), work / f"{name}.npz")
    paths = {"fp32": task.model_path()}
    for label, pipeline in VARIANTS.items():
        recipe = validate_recipe({"passes": parse_pipeline(pipeline), "calibration": {"data": str(calib)}})
        paths[label] = work / f"{name}-{len(paths)}.onnx"
        optimize(str(task.model_path()), paths[label], recipe, OptimizeOptions(latency_rounds=0, profile_runs=0))
    models = {label: load_onnx(path)[0] for label, path in paths.items()}
    sessions = {label: backend.create_session(model) for label, model in models.items()}
    feeds = task.evaluation(min(16, task.max_evaluation))
    outputs = {label: [named_outputs(s, [o.name for o in s.get_outputs()], f) for f in feeds] for label, s in sessions.items()}
    stats = measure_interleaved(sessions, task.timed(), rounds=rounds)
    rows = []
    for label in VARIANTS:
        scores = task.score(outputs["fp32"], outputs[label], feeds)
        metric = task.metric
        left = sum(1 for node in models[label].graph if node.op_type in ("HardSwish", "HardSigmoid"))
        rows.append(f"| {name} | {label} | {left} | {metric} {scores[metric]:.3f} {'✓' if task.passed(scores) else '✗'} "
                    f"({task.bound_text}) | {stats[label].median_ms:.2f} | {stats['fp32'].median_ms / stats[label].median_ms:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--models", default="ppocr_det,ppocr_rec,ppocr_cls")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    table = ["| model | variant | HardSwish/HardSigmoid left | task score (bound) | ms | vs fp32 |", "|---|---|--:|---|--:|--:|"]
    with tempfile.TemporaryDirectory(prefix="onnxsmith-hard-") as tmp:
        for name in args.models.split(","):
            table += measure(name, args.rounds, Path(tmp))
    description = ("Per model: every layer and every op ONNX Runtime runs in int8 quantized, no guard, no speed choice "
                   f"(`{EVERYTHING % ''}`), with HardSwish/HardSigmoid between int8 tensors as integer Add + Mul and "
                   "with `hard_activations=false`; the default recipe for reference. Timed interleaved against fp32 on the "
                   f"cpu backend ({args.rounds} rounds, median); task score on held-out inputs against fp32.")
    publish(SECTION, f"python bench/hard_activations_bench.py --models {args.models}", time.perf_counter() - begin,
            description, table, None if args.no_doc else DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
