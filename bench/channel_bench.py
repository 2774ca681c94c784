#!/usr/bin/env python
"""Structured channel pruning (``prune{method=channel}``) on YOLOv8n and PP-OCRv4 det.

    python bench/channel_bench.py [--models yolov8n,ppocr_det] [--ratio 0.3] [--calib N]
                                  [--rounds N] [--allocations adaptive,uniform] [--doc docs/benchmarks.md]

Per model: the original is cleaned and fused (``cleanup,fuse``: BatchNorm and affine ops
folded into the convolutions, conv+activation fused), then pruned with
``onnxsmith.passes.prune.channel.prune_channels`` at the target ratio, with and without the
least-squares refit (the same channels removed both times: the allocation does not depend on
the refit). Reported:

- MACs and parameters of the weight layers (Conv, ConvTranspose, Gemm, MatMul), before and
  after, as the pass counts them at the evaluation input size;
- the task metric on held-out real inputs (tests/tasks.py): YOLOv8n detection F1 vs the fp32
  model (nudenet's decoding and NMS, same class, IoU >= 0.5); PP-OCRv4 det: IoU of the
  probability maps binarized at 0.3; plus the per-channel relative error (``drift``);
- latency on ONNX Runtime CPU (default session options, intra-op spinning off), measured in one
  run, interleaved (onnxsmith.latency.measure_interleaved): the original, the fused unpruned
  model and the pruned ones; speedups are given against both unpruned models.

Calibration and evaluation inputs come from tests/tasks.py and never overlap. The section
"## prune channel" of docs/benchmarks.md is replaced; the rest of that file is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks as bench_tasks  # noqa: E402

from onnxsmith.context import Context  # noqa: E402
from onnxsmith.data import Dataset  # noqa: E402
from onnxsmith.latency import measure_interleaved  # noqa: E402
from onnxsmith.metrics import compare_outputs, drift  # noqa: E402
from onnxsmith.passes.prune.channel import prune_channels  # noqa: E402
from onnxsmith.registry import create_pass  # noqa: E402
from onnxsmith.runtime import make_session, run_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## prune channel"
MODELS = ("yolov8n", "ppocr_det")
CALIB = {"yolov8n": 16, "ppocr_det": 8}
EVAL = {"yolov8n": 19, "ppocr_det": 6}
ROUNDS = 31
PREPARE = ("cleanup", "fuse")


@dataclass
class Variant:
    """One model of the comparison, with what the pass said and how it scored."""

    name: str
    model: ir.Model
    counts: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    seconds: float = 0.0
    layers: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def prepare(path: Path) -> tuple[ir.Model, ir.Model]:
    """(the original, the original after cleanup and fuse)."""
    from onnxsmith.context import Context as Ctx

    original = ir.load(path)
    fused = ir.load(path)
    for name in PREPARE:
        create_pass(name).run(fused, Ctx())
    return original, fused


def copy(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


def dataset(feeds: list[dict[str, np.ndarray]]) -> Dataset:
    names = feeds[0].keys()
    return Dataset({n: np.stack([f[n] for f in feeds]) for n in names}, "tests/tasks.py calibration")


def evaluate(task, reference: list, model: ir.Model, feeds: list) -> dict:
    outputs = run_all(make_session(model), feeds)
    scores = task.score(reference, outputs, feeds)
    scores["drift"] = drift(compare_outputs(reference, outputs))
    return scores


def bench_model(name: str, ratio: float, allocations: list[str], calib_n: int, eval_n: int, rounds: int) -> dict:
    """Prune ``name`` every way asked, score each on held-out inputs, time them all interleaved.
    Returns JSON-able numbers (what ``render`` reads)."""
    task = bench_tasks.get_task(name)
    original, fused = prepare(task.model_path())
    calibration = task.calibration(calib_n)
    held_out = task.evaluation(min(eval_n, task.max_evaluation))
    reference = run_all(make_session(original), held_out)
    variants = [Variant("fused", fused, scores=evaluate(task, reference, fused, held_out))]
    for allocation in allocations:
        ctx = Context(calibration=dataset(calibration), seed=0)
        for refit in (True, False):
            model = copy(fused)
            start = time.perf_counter()
            result = prune_channels(model, ctx, ratio=ratio, allocation=allocation, refit=refit)
            seconds = time.perf_counter() - start
            label = f"{allocation}, {'refit' if refit else 'no refit'}"
            variants.append(Variant(label, model, dict(result.counts), evaluate(task, reference, model, held_out), seconds,
                                    result.layers, result.notes))
            print(f"{name} {label}: {seconds:.0f} s, {result.counts}, {variants[-1].scores}", file=sys.stderr)
    sessions = {"original": make_session(original), **{v.name: make_session(v.model) for v in variants}}
    timed = measure_interleaved(sessions, task.timed(), rounds=rounds, warmup=3)
    return {
        "latency_ms": {k: s.median_ms for k, s in timed.items()},
        "variants": {v.name: {"counts": v.counts, "scores": v.scores, "seconds": v.seconds, "layers": v.layers, "notes": v.notes}
                     for v in variants},
        "calib": len(calibration), "held_out": len(held_out),
        "shape": "x".join(map(str, next(iter(task.timed().values())).shape)),
    }


def render(results: dict[str, dict], ratio: float, rounds: int, command: str) -> str:
    """The "## prune channel" section from ``bench_model``'s numbers."""
    lines = [
        SECTION,
        "",
        f"`prune{{method=channel,ratio={ratio:g}}}` ({ratio:.0%} of every prunable group's channels for `uniform`; as",
        "many MACs saved, spread by measured output distortion, for `adaptive`) on the fused models (`cleanup,fuse`",
        "first), with and without the least-squares refit; the same channels are removed both times, and without",
        "refit the removed channels' calibration mean is still folded into the reading layer's bias. MACs and",
        "parameters are those of the weight layers (Conv, ConvTranspose, Gemm, MatMul) at the timed input size.",
        "Task metric on held-out real inputs against the original fp32 model; drift is the per-channel relative RMS",
        "error of the outputs. Latency: ONNX Runtime CPU, default session options (spinning off), median of",
        f"{rounds} interleaved rounds after warm-up (the original, the fused unpruned model and every pruned one in",
        "one run); speedup = unpruned median / pruned median, against the fused unpruned model (the honest",
        "baseline: the pruned models are fused too) and against the original.",
        "",
        "| model | variant | MACs | MACs cut | params | task metric | drift | ms | speedup vs fused | speedup vs original | prune s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in results.items():
        task, timed = bench_tasks.get_task(name), r["latency_ms"]
        base_ms, orig_ms = timed["fused"], timed["original"]
        unpruned = next((v["counts"] for v in r["variants"].values() if v["counts"]), {})
        for label, v in r["variants"].items():
            ms = timed[label]
            counts = v["counts"] or {"macs_after": unpruned.get("macs_before"), "params_after": unpruned.get("params_before"),
                                     "macs_before": unpruned.get("macs_before")}
            macs, before = counts.get("macs_after"), counts.get("macs_before")
            cut = f"{1 - macs / before:.1%}" if macs and before else "-"
            lines.append(
                f"| {name} | {label} | {_big(macs)} | {cut} | {_big(counts.get('params_after'))} | "
                f"{task.metric} {v['scores'][task.metric]:.3f} | {v['scores']['drift']:.3f} | {ms:.2f} | "
                f"{base_ms / ms:.2f}x | {orig_ms / ms:.2f}x | {v['seconds']:.0f} |"
            )
        lines.append(f"| {name} | original | | | | | | {orig_ms:.2f} | {base_ms / orig_ms:.2f}x | 1.00x | |")
    lines += ["", "The refit and no-refit models of one allocation have the very same layers: the gap between their",
              "times is the timing noise of this shared machine. prune s is the pass's wall time here (calibration",
              "statistics, distortion measurement, removal, sequential refit).", "",
              f"Produced by `{command}` on {datetime.date.today().isoformat()}.", ""]
    lines += [f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; onnxruntime {ort.__version__}"]
    for name, r in results.items():
        task = bench_tasks.get_task(name)
        lines.append(f"- {name}: {task.metric_text}; {r['calib']} calibration feeds, {r['held_out']} held-out "
                     f"({task.data_text}); timed: {r['shape']}.")
        label, v = next(((k, v) for k, v in r["variants"].items() if v["counts"]), (None, None))
        if v is None:
            continue
        counts = v["counts"]
        frozen = "; ".join(n.strip() for n in v.get("notes", []) if n.startswith("  "))
        lines.append(f"  {counts['groups_prunable']} of {counts['groups']} channel groups prunable"
                     + (f" (the others: {frozen})" if frozen else "") + f". {label}: {counts['channels_removed']} "
                     f"channels removed in {counts['groups_pruned']} groups; the layers with the largest MACs cut, "
                     "with the relative error of the layer reading the pruned channels (refit / no refit):")
        for rec in sorted(v["layers"], key=lambda x: x["macs_after"] - x["macs_before"])[:6]:
            error = (f"{rec['error']:.3f} / {rec['error_no_refit']:.3f} (`{rec['error_layer']}`)"
                     if rec["error"] is not None else "not measured")
            lines.append(f"  - `{rec['layer']}` ({rec['op_type']}): out channels {rec['channels_before']} -> "
                         f"{rec['channels_after']}, in {rec['in_channels_before']} -> {rec['in_channels_after']}, MACs "
                         f"{_big(rec['macs_before'])} -> {_big(rec['macs_after'])}; error {error}")
    return "\n".join(lines) + "\n"


def _big(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.1f} M"


def write_section(doc: Path, section: str) -> None:
    """Replace the section (up to the next ``## `` heading) in ``doc``, or append it; atomic."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nMeasured by the scripts in bench/; every table says how it was made.\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\s*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = doc.with_name(f".{doc.name}.part")
    tmp.write_text(text.rstrip("\n") + "\n")
    tmp.replace(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--allocations", default="adaptive,uniform")
    parser.add_argument("--calib", type=int, help="calibration feeds (default: 16 for yolov8n, 8 for ppocr_det)")
    parser.add_argument("--eval", type=int, help="held-out feeds (default: all the task has)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--json", type=Path, help="also save the measured numbers here")
    parser.add_argument("--render", type=Path, help="only write the section from numbers saved by --json")
    args = parser.parse_args(argv)
    command = "python bench/channel_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.render:
        saved = json.loads(args.render.read_text())
        results, command, rounds = saved["models"], saved["command"], saved["rounds"]
    else:
        rounds = args.rounds
        results = {}
        for name in [m for m in args.models.split(",") if m]:
            results[name] = bench_model(name, args.ratio, args.allocations.split(","), args.calib or CALIB[name],
                                        args.eval or EVAL[name], args.rounds)
        if args.json:
            args.json.write_text(json.dumps({"command": command.strip(), "rounds": rounds, "models": results}, indent=1))
    section = render(results, args.ratio, rounds, command.strip())
    print(section)
    if not args.no_doc:
        write_section(args.doc, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
