#!/usr/bin/env python
"""int4 weight-only quantization (RTN, GPTQ) and SmoothQuant before int8, on MiniLM.

    python bench/int4_bench.py [--calibration 32] [--evaluation 32] [--rounds 21]
                               [--skip-smooth] [--quick] [--no-doc] [--keep DIR]

all-MiniLM-L6-v2 (tests/realmodels.py, exported with torch), its task from tests/tasks.py:
calibration on README sentences 0.., evaluation on held-out sentences 400.. (never
calibrated on), metric = cosine of the mean-pooled embeddings with fp32's.

int4: onnxsmith ``optimize --passes "quantize{mode=int4,...}"`` (through the library, the
same code path) at block 32 and 128, RTN and GPTQ, guard off (every MatMul weight
quantized, so methods compare like for like) and the default recipe (guard on, default
budget); ONNX Runtime's own ``MatMulNBitsQuantizer`` (RTN, ``DefaultWeightOnlyQuantConfig``)
at the same block 32 symmetric setting and at its defaults (block 128, asymmetric) as the
anchor. Per artifact: the bytes of the weights the MatMuls read (float weights, or packed
int4 + scales + zero points), the task metric, the time to build it, and latency on ONNX
Runtime CPU (default session options except thread spinning off: core/runtime.py), every
artifact and the fp32 model timed interleaved in one run after warm-up (plus a second fp32
session, an A/A control: its ratio is the noise floor); ratio = fp32 median / artifact median.

smooth: int8 on MiniLM's MatMuls (``quantize{mode=int8,ops=[MatMul]}``) alone, after
``smooth=0.5`` (the int8 option) and after ``smooth{search=true}``, guard on, under the
default metric and budget and under the task itself (``--metric embedding-cosine
--max-drift 0.01``, i.e. cosine >= 0.99 on the guard's feeds): the layers the guard leaves
in float, the drift, the task metric.
``optimize`` holds a quarter of the calibration sentences out for the guard and the drift.

The table goes to the section "## int4 and smooth" of docs/benchmarks.md (the rest of the
file is kept). Needs the ``bench`` extra and torch's CPU build for the MiniLM export.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import report_md  # noqa: E402
import tasks  # noqa: E402  (tests/tasks.py: MiniLM's data, metric and bound)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## int4 and smooth"
ROUNDS, WARMUP = 21, 3
INT4_COSINE = 0.98  # issue 5's bound for int4 on MiniLM
WEIGHT_RATIO = 3.5  # issue 5: MatMul weight bytes at least 3.5x smaller
CONTROL = "fp32 (A/A control)"


@dataclass
class Variant:
    key: str
    label: str
    tool: str
    path: Path | None = None
    seconds: float | None = None
    error: str | None = None
    weight_bytes: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    drift: float | None = None
    notes: list[str] = field(default_factory=list)


# --- building the artifacts -----------------------------------------------------------------


def build_ours(src: Path, out: Path, passes: str, calib: Path, accuracy: dict | None = None) -> Variant:
    from onnxsmith.optimize import OptimizeOptions, optimize
    from onnxsmith.recipe import parse_pipeline, validate_recipe

    spec: dict = {"passes": parse_pipeline(passes), "calibration": {"data": str(calib)}}
    if accuracy:
        spec["accuracy"] = accuracy
    recipe = validate_recipe(spec)
    start = time.perf_counter()
    report = optimize(str(src), out, recipe, OptimizeOptions(latency_rounds=0))
    label = f"`{passes}`" + "".join(f", {key} {value}" for key, value in (accuracy or {}).items())
    variant = Variant(out.stem, label, "onnxsmith", out, time.perf_counter() - start)
    record = report.passes[-1]
    variant.counts = dict(record.counts)
    variant.drift = report.summary.drift
    variant.notes = [n for n in record.notes if n.startswith(("guard:", "int4 "))]
    return variant


def build_ort(src: Path, out: Path, block: int, symmetric: bool) -> Variant:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    start = time.perf_counter()
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric))
    quantizer.process()
    onnx.save(quantizer.model.model, str(out))
    label = f"ORT MatMulNBitsQuantizer, block {block}, {'symmetric' if symmetric else 'asymmetric'}"
    return Variant(out.stem, label, "ONNX Runtime", out, time.perf_counter() - start)


# --- measuring them ---------------------------------------------------------------------------


def matmul_weight_bytes(path: Path) -> int:
    """Bytes of the constant weights the MatMuls read: a float initializer, the packed B,
    scales and zero points of MatMulNBits, or the inputs of the DequantizeLinear feeding it."""
    import onnx_ir as ir

    model = ir.load(path)
    total = 0
    for node in model.graph:
        if node.op_type == "MatMulNBits":
            total += sum(v.const_value.nbytes for v in node.inputs[1:] if v is not None and v.const_value is not None)
        elif node.op_type == "MatMul":
            weight = node.inputs[1]
            producer = weight.producer()
            if weight.const_value is not None:
                total += weight.const_value.nbytes
            elif producer is not None and producer.op_type == "DequantizeLinear":
                total += sum(v.const_value.nbytes for v in producer.inputs if v is not None and v.const_value is not None)
    return total


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from onnxsmith.runtime import run_all

    return run_all(session(path), feeds)


def measure(variants: list[Variant], src: Path, task: tasks.Task, feeds, rounds: int) -> dict[str, float]:
    """Scores, weight bytes and interleaved latency of ``variants``; returns fp32's numbers."""
    from onnxsmith.latency import measure_interleaved

    reference = outputs(src, feeds)
    for v in variants:
        if v.error is None:
            try:
                v.weight_bytes = matmul_weight_bytes(v.path)
                v.scores = task.score(reference, outputs(v.path, feeds), feeds)
            except Exception as e:  # an artifact that does not run is a result too
                v.error = f"does not run: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    sessions = {"fp32": session(src), **{v.key: session(v.path) for v in variants if v.error is None}, CONTROL: session(src)}
    timed = measure_interleaved(sessions, task.timed(), rounds=rounds, warmup=WARMUP)
    for v in variants:
        if v.key in timed:
            v.latency_ms = timed[v.key].median_ms
    return {"weight_bytes": matmul_weight_bytes(src), "latency_ms": timed["fp32"].median_ms,
            "control_ratio": timed["fp32"].median_ms / timed[CONTROL].median_ms}


# --- the Markdown section ---------------------------------------------------------------------


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(int4: list[Variant], smooth: list[Variant], fp32: dict, smooth_fp32: dict | None, args, command: str) -> str:
    lines = [
        SECTION,
        "",
        "all-MiniLM-L6-v2 (MatMul weights 42.5 MB in fp32), calibration on README sentences 0.., metric on",
        f"{args.evaluation} held-out sentences (400..): cosine of the mean-pooled embeddings with fp32's (mean, min).",
        f"Weight ratio = fp32 MatMul weight bytes / the artifact's (issue 5: >= {WEIGHT_RATIO}x, cosine >= {INT4_COSINE}).",
        f"Latency: ONNX Runtime CPU, graph optimizations on, median of {args.rounds} interleaved rounds after warm-up,",
        "batch 1 x 128 tokens; ratio = fp32 / artifact, measured in the same run (> 1: faster). A second fp32",
        f"session timed alongside ran at {fp32['control_ratio']:.2f}x the first: differences within that are noise.",
        "",
        "| recipe | tool | weight MB | weight ratio | cosine mean | cosine min | SQNR dB | latency ratio | build s | bound |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for v in int4:
        if v.error is not None:
            lines.append(f"| {v.label} | {v.tool} | failed: {v.error} | | | | | | | |")
            continue
        ratio = fp32["weight_bytes"] / v.weight_bytes if v.weight_bytes else None
        ok = ratio is not None and ratio >= WEIGHT_RATIO and v.scores.get("cosine", 0) >= INT4_COSINE
        lines.append(
            f"| {v.label} | {v.tool} | {_f(v.weight_bytes / 1e6, '.2f')} | {_f(ratio, '.2f')}x | {_f(v.scores.get('cosine'), '.4f')} "
            f"| {_f(v.scores.get('cosine_min'), '.4f')} | {_f(v.scores.get('sqnr_db'), '.1f')} "
            f"| {_f(fp32['latency_ms'] / v.latency_ms if v.latency_ms else None, '.2f')}x | {_f(v.seconds, '.1f')} "
            f"| {'met' if ok else 'not met'} |"
        )
    lines += ["", *_findings(int4), "", "What each recipe reported (form written, what the guard kept in float):", ""]
    lines += [f"- {v.label}: " + "; ".join(v.notes[:3]) for v in int4 if v.notes]
    if smooth:
        lines += [
            "",
            "SmoothQuant before int8, guard on (`smooth=0.5` is the same as a `smooth{alpha=0.5}` pass first;",
            "`smooth{search=true}` picks alpha per group by the simulated int8 error). Int8 on the 48 MatMuls only",
            "(`ops=[MatMul]`; the 12 that multiply two activations stay float by the plan). Layers in float: what",
            "the guard kept in float to meet the budget: the default metric's 0.03, or `metric embedding-cosine,",
            "max_drift 0.01` (1 - mean-pooled cosine on the guard's held-out sentences, so cosine >= 0.99 there).",
            "",
            "| recipe | weighted MatMuls left in float | drift | cosine mean | cosine min | latency ratio | build s |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for v in smooth:
            if v.error is not None:
                lines.append(f"| {v.label} | failed: {v.error} | | | | | |")
                continue
            latency = smooth_fp32["latency_ms"] / v.latency_ms if smooth_fp32 and v.latency_ms else None
            lines.append(
                f"| {v.label} | {v.counts.get('layers_float', '-')} of {v.counts.get('layers_float', 0) + v.counts.get('layers_quantized', 0)} "
                f"| {_f(v.drift, '.4f')} "
                f"| {_f(v.scores.get('cosine'), '.4f')} | {_f(v.scores.get('cosine_min'), '.4f')} | {_f(latency, '.2f')}x "
                f"| {_f(v.seconds, '.1f')} |"
            )
    lines += [
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}; "
        f"{args.calibration} calibration sentences, ONNX Runtime {ort.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} logical cores (shared with other jobs: latency ratios are noisy).",
    ]
    return "\n".join(lines) + "\n"


def _findings(int4: list[Variant]) -> list[str]:
    """GPTQ against RTN at each block size, and our RTN against ONNX Runtime's, from the rows above."""
    by_key = {v.key: v for v in int4 if v.error is None and v.scores}
    cos = lambda key: by_key[key].scores["cosine"]  # noqa: E731
    found = []
    for block in (32, 128):
        if f"rtn{block}" in by_key and f"gptq{block}" in by_key:
            found.append(f"- Block {block}: GPTQ cosine {cos(f'gptq{block}'):.4f} vs RTN {cos(f'rtn{block}'):.4f} "
                         f"(1 - cosine {1 - cos(f'gptq{block}'):.4f} vs {1 - cos(f'rtn{block}'):.4f}).")
    if "rtn32" in by_key and "ort32sym" in by_key:
        same = abs(cos("rtn32") - cos("ort32sym")) < 1e-6 and by_key["rtn32"].weight_bytes == by_key["ort32sym"].weight_bytes
        found.append(f"- Our RTN at block 32, symmetric, against ONNX Runtime's at the same setting: cosine {cos('rtn32'):.4f} vs "
                     f"{cos('ort32sym'):.4f}, {'the same bytes (tests/test_quantize_int4.py checks the packed weights are identical)' if same else 'different'}.")
    return found


# --- main -------------------------------------------------------------------------------------

INT4_RECIPES = {
    "rtn32": "quantize{mode=int4,block=32,guard=false}",
    "gptq32": "quantize{mode=int4,block=32,method=gptq,guard=false}",
    "rtn128": "quantize{mode=int4,block=128,guard=false}",
    "gptq128": "quantize{mode=int4,block=128,method=gptq,guard=false}",
    "gptq32asym": "quantize{mode=int4,block=32,method=gptq,symmetric=false,guard=false}",
    "default": "quantize{mode=int4}",
    "gptq_guarded": "quantize{mode=int4,method=gptq}",
}
QUICK_INT4 = ("rtn32", "gptq32")
# (key, passes, accuracy): under the default metric and budget, and under the task's own bound
TASK_BOUND = {"metric": "embedding-cosine", "max_drift": 0.01}
SMOOTH_RUNS = (
    ("int8_default", "quantize{mode=int8,ops=[MatMul]}", None),
    ("int8_smooth05_default", "quantize{mode=int8,ops=[MatMul],smooth=0.5}", None),
    ("int8_search_default", "smooth{search=true},quantize{mode=int8,ops=[MatMul]}", None),
    ("int8_task", "quantize{mode=int8,ops=[MatMul]}", TASK_BOUND),
    ("int8_smooth05_task", "quantize{mode=int8,ops=[MatMul],smooth=0.5}", TASK_BOUND),
    ("int8_search_task", "smooth{search=true},quantize{mode=int8,ops=[MatMul]}", TASK_BOUND),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=64, help="calibration sentences (default 64)")
    parser.add_argument("--evaluation", type=int, default=32, help="held-out sentences (default 32)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds (default {ROUNDS})")
    parser.add_argument("--quick", action="store_true", help="RTN and GPTQ at block 32 and the anchor only; no smooth")
    parser.add_argument("--skip-smooth", action="store_true", help="leave out the int8 + smooth comparison")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not write it")
    parser.add_argument("--keep", type=Path, help="keep the artifacts in this folder")
    args = parser.parse_args(argv)
    command = "python bench/int4_bench.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    task = tasks.get_task("minilm")
    src = task.model_path()
    feeds = task.evaluation(args.evaluation)
    with tempfile.TemporaryDirectory(prefix="int4-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        calib = tasks.save_npz(task.calibration(args.calibration), work / "calibration.npz")
        int4: list[Variant] = []
        for key in QUICK_INT4 if args.quick else INT4_RECIPES:
            int4.append(_attempt(key, INT4_RECIPES[key], lambda k=key: build_ours(src, work / f"{k}.onnx", INT4_RECIPES[k], calib)))
        for block, symmetric in ((32, True),) if args.quick else ((32, True), (128, False)):
            key = f"ort{block}{'sym' if symmetric else 'asym'}"
            int4.append(_attempt(key, "ORT", lambda k=key, b=block, s=symmetric: build_ort(src, work / f"{k}.onnx", b, s)))
        fp32 = measure(int4, src, task, feeds, args.rounds)
        smooth: list[Variant] = []
        smooth_fp32 = None
        if not (args.quick or args.skip_smooth):
            for key, passes, budget in SMOOTH_RUNS:
                smooth.append(_attempt(key, passes, lambda k=key, p=passes, b=budget: build_ours(src, work / f"{k}.onnx", p, calib, b)))
            smooth_fp32 = measure(smooth, src, task, feeds, args.rounds)
    section = render(int4, smooth, fp32, smooth_fp32, args, command.strip())
    print(section)
    if not args.no_doc:
        report_md.write_section(args.doc, SECTION, section)
        print(f"updated {args.doc}")
    return 0


def _attempt(key: str, label: str, build) -> Variant:
    print(f"building {key} ...", flush=True)
    try:
        variant = build()
    except Exception as e:  # a recipe failing on the real model is a result too
        variant = Variant(key, label, "onnxsmith", error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    variant.key = key
    print(f"  {key}: " + (f"{variant.seconds:.1f} s" if variant.error is None else variant.error), flush=True)
    return variant


if __name__ == "__main__":
    raise SystemExit(main())
