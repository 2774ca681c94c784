#!/usr/bin/env python
"""fp16, bf16 and dynamic int8 (``quantize`` modes) on the real models of DESIGN.md, against
ONNX Runtime's fp16 converter and its ``quantize_dynamic``.

    python bench/precision_bench.py [--models ppocr_det,ppocr_rec,ppocr_cls,yolov8n,minilm]
                                    [--rounds N] [--eval N] [--doc docs/benchmarks.md]

For every model, tests/tasks.py gives its calibration inputs, held-out inputs, task metric
and bound. Variants, each built from the original file:

* ours through ``onnxsmith.optimize`` (what ``onnxsmith optimize --passes ... --calib
  CAL.npz`` runs; the guard is on with the default budget unless the label says otherwise):
  ``quantize{mode=fp16}``, ``quantize{mode=bf16}``, ``quantize{mode=fp16,ops=[Conv,
  ConvTranspose,MatMul,Gemm]}`` (fp16 compute, the graph a GPU would run; ONNX Runtime CPU
  runs it by casting around every op it lacks an fp16 kernel for), ``quantize{mode=dynamic}``
  and the same with ``guard=off``;
* ONNX Runtime: ``float16.convert_float_to_float16(model, keep_io_types=True)`` and
  ``quantize_dynamic(src, dst)``, called as their documentation shows, defaults otherwise.

Each artifact: the task metric on the held-out inputs against the fp32 model (both run by
ONNX Runtime CPU with its default optimizations), the file size, and the latency on ONNX
Runtime CPU: every variant and the fp32 model timed in one interleaved run
(onnxsmith.latency.measure_interleaved, the order alternating every round) after warm-up,
median per variant, speedup = fp32 / variant. The table goes to the section
"## precisions: fp16, bf16, dynamic" of docs/benchmarks.md; the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks  # noqa: E402
from fuse_bench import machine_facts, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## precisions: fp16, bf16, dynamic"
ROUNDS = 15
FP16_COMPUTE = "quantize{mode=fp16,ops=[Conv,ConvTranspose,MatMul,Gemm]}"
CALIBRATION = {"ppocr_det": 8}  # 736x736 pages are heavy; others: 16
EVALUATION = {"minilm": 64}  # others: every held-out feed


@dataclass(frozen=True)
class Variant:
    label: str
    kind: str  # "fp32", "fp16", "bf16", "dynamic"
    passes: str = ""  # ours: the --passes string
    build: Callable[[Path, Path], list[str]] | None = None  # anchors: (src, dst) -> notes


@dataclass
class Result:
    variant: Variant
    path: Path | None = None
    seconds: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    median_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _ort_fp16(src: Path, dst: Path) -> list[str]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return []


def _ort_dynamic(src: Path, dst: Path) -> list[str]:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(src), str(dst))
    return []


VARIANTS = (
    Variant("fp32 (original)", "fp32"),
    Variant("fp32 again (A/A control)", "fp32"),  # a second session of the original: the timing noise
    Variant("ours fp16", "fp16", "quantize{mode=fp16}"),
    Variant("ours fp16 compute", "fp16", FP16_COMPUTE),
    Variant("ours bf16", "bf16", "quantize{mode=bf16}"),
    Variant("ORT fp16 converter", "fp16", build=_ort_fp16),
    Variant("ours dynamic", "dynamic", "quantize{mode=dynamic}"),
    Variant("ours dynamic, guard off", "dynamic", "quantize{mode=dynamic,guard=off}"),
    Variant("ORT quantize_dynamic", "dynamic", build=_ort_dynamic),
)


def build(variant: Variant, src: Path, dst: Path, calib: Path) -> Result:
    """The variant's artifact at ``dst`` (fp32: the original itself), timed, with its notes."""
    result = Result(variant)
    start = time.perf_counter()
    try:
        if variant.kind == "fp32":
            result.path = src
        elif variant.build is not None:
            result.notes = variant.build(src, dst)
            result.path = dst
        else:
            result.notes = _ours(variant.passes, src, dst, calib)
            result.path = dst
    except Exception as e:  # a tool that fails is a result, not the end of the bench
        result.error = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        traceback.print_exc()
    result.seconds = time.perf_counter() - start
    return result


def _ours(passes: str, src: Path, dst: Path, calib: Path) -> list[str]:
    from onnxsmith.optimize import OptimizeOptions, optimize
    from onnxsmith.recipe import parse_pipeline, validate_recipe

    recipe = validate_recipe({"passes": parse_pipeline(passes), "calibration": {"data": str(calib)}})
    record = optimize(str(src), dst, recipe, OptimizeOptions(latency_rounds=0)).passes[-1]
    # the precision-sensitive ops kept fp32 and the guard's outcome; not the long lists of ops
    # that only lack a kernel here or sit between fp32 ops (the report has every one)
    routine = ("fp32 (no ", "fp32 (follows", "fp32 (shape", "fp32 (ONNX ")
    keep = ("fp32 (", "guard:", "left float", "converted from opset", "weights left fp32", "weights use 7")
    return [n for n in record.notes if any(k in n for k in keep) and not n.startswith(routine)]


def evaluate(task: tasks.Task, results: list[Result], feeds: list[dict], timed: dict, rounds: int) -> None:
    """Task scores of every built artifact against the fp32 one, then one interleaved timing run."""
    from onnxsmith.latency import measure_interleaved
    from onnxsmith.runtime import make_session, run_all

    sessions = {}
    for result in results:
        if result.error is None:
            try:
                sessions[result.variant.label] = make_session(ir.load(str(result.path)))
            except Exception as e:  # ONNX Runtime refuses an invalid artifact
                result.error = f"does not load: {str(e).splitlines()[0][:160]}"
    outputs = {label: run_all(session, feeds) for label, session in sessions.items()}
    reference = outputs[VARIANTS[0].label]
    for result in results:
        if result.variant.label in outputs:
            result.scores = task.score(reference, outputs[result.variant.label], feeds)
    timing = measure_interleaved(sessions, timed, rounds=rounds)
    for result in results:
        if result.variant.label in timing:
            result.median_ms = timing[result.variant.label].median_ms


def run_model(name: str, rounds: int, workdir: Path) -> list[Result]:
    task = tasks.get_task(name)
    src = task.model_path()
    calib = tasks.save_npz(task.calibration(CALIBRATION.get(name, 16)), workdir / f"{name}.cal.npz")
    feeds = task.evaluation(min(EVALUATION.get(name, task.max_evaluation), task.max_evaluation))
    results = []
    for i, variant in enumerate(VARIANTS):
        print(f"{name}: {variant.label}", file=sys.stderr, flush=True)
        results.append(build(variant, src, workdir / f"{name}.{i}.onnx", calib))
    evaluate(task, results, feeds, task.timed(), rounds)
    return results


# --- the section ----------------------------------------------------------------------------


def _metric(task: tasks.Task, result: Result) -> str:
    if result.error is not None:
        return f"failed: {result.error}"
    value = result.scores.get(task.metric)
    if value is None:
        return "-"
    text = f"{value:.4f}" if task.metric == "cosine" else f"{value:.3f}"
    if task.metric == "cosine" and "cosine_min" in result.scores:
        text += f" (min {result.scores['cosine_min']:.4f})"
    return text + ("" if task.passed(result.scores) else " **below**")


def _size(result: Result) -> str:
    if result.path is None or not result.path.exists():
        return "-"
    return f"{sum(p.stat().st_size for p in [result.path, *result.path.parent.glob(result.path.name + '.data')]) / 1e6:.1f}"


def render(all_results: dict[str, list[Result]], rounds: int, command: str) -> str:
    lines = [
        SECTION,
        "",
        "The `quantize` pass's fp16, bf16 and dynamic int8 modes (\"ours\", through `onnxsmith.optimize`",
        "with the calibration data below; guard on at the default budget unless marked) against ONNX",
        "Runtime's `float16.convert_float_to_float16(keep_io_types=True)` and `quantize_dynamic`",
        "(defaults), on the real models of DESIGN.md.",
        "",
        "- Task metric: on held-out real inputs (tests/tasks.py), against the fp32 model, both run",
        "  by ONNX Runtime CPU with its default optimizations; **below** marks a value under the",
        "  issue's bound (det IoU >= 0.90, rec text >= 0.95, cls top-1 >= 0.95, YOLO F1 >= 0.95,",
        "  MiniLM mean cosine >= 0.99).",
        "- Latency: ONNX Runtime CPU, every variant of a model and its fp32 original timed in one run,",
        f"  interleaved (the order alternates every round), median of {rounds} rounds after warm-up;",
        "  speedup = fp32 / variant. This machine is shared: the A/A control (a second session of",
        "  the original) shows how far apart two identical models time; ratios within that are noise.",
        "- `ours fp16` / `ours bf16`: ONNX Runtime CPU has no fp16/bf16 kernels for compute ops, so",
        "  there the weights are stored low and read through a Cast that ONNX Runtime folds at load:",
        "  half the size, fp32 speed. `ours fp16 compute` is the graph for a backend with fp16",
        f"  kernels (`{FP16_COMPUTE}`: compute ops and what follows them in fp16, the",
        "  precision-sensitive ops in fp32), run here on ONNX Runtime CPU, which wraps each fp16 op",
        "  it has no kernel for in Casts: its task metric is what an fp16 GPU run computes, its time",
        "  is not.",
        "",
        "| model | variant | task metric | MB | ms | speedup | build s |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for name, results in all_results.items():
        task = tasks.get_task(name)
        base = results[0].median_ms
        for result in results:
            ms = f"{result.median_ms:.1f}" if result.median_ms is not None else "-"
            speedup = f"{base / result.median_ms:.2f}x" if base and result.median_ms else "-"
            build_s = f"{result.seconds:.1f}" if result.variant.kind != "fp32" else "-"
            if result.variant.kind == "fp32" and result is not results[0]:
                lines.append(f"| {name} ({task.metric}) | {result.variant.label} | - | - | {ms} | {speedup} | - |")
                continue
            lines.append(f"| {name} ({task.metric}) | {result.variant.label} | {_metric(task, result)} | {_size(result)} "
                         f"| {ms} | {speedup} | {build_s} |")
    lines += [
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()} (needs `pip install -e .[bench]`).",
        "",
        *[f"- {fact}" for fact in machine_facts()],
        "",
        "Data, and what ours kept in fp32 or float (from the pass's report):",
        "",
    ]
    for name, results in all_results.items():
        task = tasks.get_task(name)
        lines.append(f"- {name}: {task.data_text}; metric: {task.metric_text}.")
        for result in results:
            if result.notes:
                lines.append(f"  - {result.variant.label}: " + "; ".join(result.notes))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(tasks.TASKS), help=f"comma-separated, from {','.join(tasks.TASKS)}")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed interleaved rounds (default {ROUNDS})")
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file whose section is replaced")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args(argv)
    command = "python bench/precision_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    models = [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="onnxsmith-precision-") as tmp:
        results = {name: run_model(name, args.rounds, Path(tmp)) for name in models}
        section = render(results, args.rounds, command.strip())
    if args.no_doc:
        print(section)
    else:
        write_section(args.doc, section, SECTION)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
