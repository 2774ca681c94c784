"""Does the default drift metric track the task? int8 variants of each real model, scored both ways.

For each real model: int8 variants of graded quality (every layer quantized, with several
calibration methods and per-tensor weights, then the most sensitive 1, 2, 4, ... layers
left in float), each scored with the task metric of bench/tasks.py and with candidate
generic drift metrics. A good default orders the variants like the task metric does and
puts every variant within the default budget above the task's bound.

    python bench/metric_study.py [--models yolov8n ppocr_det] [--write]

Writes the section "## drift metric vs task metric" of docs/benchmarks.md with --write.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks as task_lib  # noqa: E402
from fuse_bench import write_section  # noqa: E402

from onnxsmith.context import Context  # noqa: E402
from onnxsmith.data import Dataset  # noqa: E402
from onnxsmith.metrics import channel_error, compare_outputs, drift  # noqa: E402
from onnxsmith.passes.quantize.guard import DEFAULT_BUDGET, layer_sensitivity  # noqa: E402
from onnxsmith.passes.quantize.quantize_pass import QuantizePass  # noqa: E402
from onnxsmith.runtime import make_session, run_all  # noqa: E402
from onnxsmith.sources import load_source  # noqa: E402

CACHE = Path.home() / ".cache" / "onnxsmith" / "metric_study"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## drift metric vs task metric"


def _dataset(feeds: list[dict[str, np.ndarray]]) -> Dataset:
    return Dataset({name: np.stack([f[name] for f in feeds]) for name in feeds[0]}, "bench")


def variants(model_path: Path, calibration: list[dict], ctx_backend=None):
    """(name, ir model) pairs of int8 variants from coarse to nearly float."""
    model = load_source(str(model_path)).ir
    ctx = Context(calibration=_dataset(calibration))
    yield "float", model
    for label, options in [
        ("int8 minmax per-tensor", dict(calibration="minmax", per_channel=False)),
        ("int8 minmax", dict(calibration="minmax")),
        ("int8 entropy", dict(calibration="entropy")),
        ("int8 percentile", dict(calibration="percentile")),
    ]:
        yield label, QuantizePass(guard=False, bias_correction=False, **options).run(model, ctx).model
    full = QuantizePass(guard=False).run(model, ctx).model
    yield "int8 percentile+bc", full
    layers = [n for n in model.graph if n.op_type in ("Conv", "MatMul", "Gemm", "ConvTranspose")]
    ranked = sorted(layer_sensitivity(model, full, layers, calibration[:8]).items(), key=lambda item: -item[1])
    for k in (1, 2, 4, 8, 16):
        if k >= len(ranked):
            break
        keep = tuple(name for name, _ in ranked[:k])
        yield f"int8, {k} most sensitive float", QuantizePass(guard=False, exclude=keep).run(model, ctx).model


# --- candidate generic metrics: (reference, candidate) -> drift (0 = identical) --------------

def per_channel_relative(reference, candidate) -> float:
    """onnxsmith's default before this study: mean over channels of RMS error / RMS value."""
    return drift(compare_outputs(reference, candidate))


def _channels(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim < 2:
        return array.reshape(1, -1)
    return np.moveaxis(array, 1, 0).reshape(array.shape[1], -1)


def _stacked(outputs, name):
    return np.concatenate([_channels(o[name]) for o in outputs], axis=1)


def per_channel_peak(reference, candidate) -> float:
    """Mean over channels of RMS error / the channel's peak |value| (error in full-scale units)."""
    worst = 0.0
    for name in reference[0]:
        ref, got = _stacked(reference, name), _stacked(candidate, name)
        err = np.sqrt(np.mean((got - ref) ** 2, axis=1))
        peak = np.max(np.abs(ref), axis=1)
        worst = max(worst, float(np.mean(err / np.maximum(peak, 1e-12))))
    return worst


def per_channel_floored(reference, candidate, fraction: float = 0.05) -> float:
    """Per-channel relative RMS error, with each channel's scale floored at ``fraction`` of the
    largest channel peak among channels of the same order of magnitude (within 100x)."""
    worst = 0.0
    for name in reference[0]:
        ref, got = _stacked(reference, name), _stacked(candidate, name)
        err = np.sqrt(np.mean((got - ref) ** 2, axis=1))
        rms = np.sqrt(np.mean(ref**2, axis=1))
        peak = np.max(np.abs(ref), axis=1)
        floor = fraction * np.median(peak)
        worst = max(worst, float(np.mean(err / np.maximum(rms, max(floor, 1e-12)))))
    return worst


def sqnr_db(reference, candidate) -> float:
    return min(d.sqnr_db for d in compare_outputs(reference, candidate).values())


CANDIDATES = {
    "channel_rms": per_channel_relative,
    "channel_peak": per_channel_peak,
    "channel_floored": per_channel_floored,
    "sqnr_db": sqnr_db,
}


def study(name: str, calibration_n: int, evaluation_n: int) -> list[dict]:
    task = task_lib.get_task(name)
    calibration = task.calibration(calibration_n)
    evaluation = task.evaluation(min(evaluation_n, task.max_evaluation))
    rows = []
    reference = None
    for label, model in variants(task.model_path(), calibration):
        start = time.perf_counter()
        outputs = run_all(make_session(model, optimize=False), evaluation)
        if reference is None:
            reference = outputs
        scores = task.score(reference, outputs, evaluation)
        row = {"model": name, "variant": label, "task_metric": task.metric, "task": scores[task.metric],
               "passed": task.passed(scores)}
        row.update({k: f(reference, outputs) for k, f in CANDIDATES.items()})
        rows.append(row)
        print(json.dumps(row), f"({time.perf_counter() - start:.1f} s)", flush=True)
    return rows


def render(rows: list[dict], command: str) -> str:
    """The docs section: one row per variant, the task metric beside each candidate metric."""
    lines = [
        SECTION, "",
        f"`{command}` — int8 variants (Conv/MatMul/Gemm weights and their inputs, no backend op set), held-out real "
        "inputs of bench/tasks.py. A default metric is safe when no variant within the budget "
        f"({DEFAULT_BUDGET:g}) fails the task bound, and useful when variants that pass the task fit the budget.", "",
        "| model | variant | task metric | passes bound | channel_rms (default) | channel_peak | channel_floored | SQNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['task_metric']} {r['task']:.3f} | {'yes' if r['passed'] else 'no'} | "
                     f"{r['channel_rms']:.3g} | {r['channel_peak']:.3g} | {r['channel_floored']:.3g} | {r['sqnr_db']:.1f} |")
    lines += ["", "Per candidate at the default budget (SQNR: at least 30 dB), over the int8 variants above:", ""]
    quantized = [r for r in rows if r["variant"] != "float"]
    for key in ("channel_rms", "channel_peak", "channel_floored", "sqnr_db"):
        fits = [r for r in quantized if (r[key] >= 30.0 if key == "sqnr_db" else r[key] <= DEFAULT_BUDGET)]
        wrong = sum(1 for r in fits if not r["passed"])
        passing = [r for r in quantized if r["passed"]]
        kept = sum(1 for r in passing if r in fits)
        lines.append(f"- {key}: {len(fits)} variant(s) fit, {wrong} of them fail the task bound (unsafe); "
                     f"{kept} of {len(passing)} task-passing variant(s) fit (useful)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(task_lib.TASKS))
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--evaluation", type=int, default=32)
    parser.add_argument("--out", type=Path, default=CACHE / "rows.jsonl")
    parser.add_argument("--write", action="store_true", help="render the rows collected so far into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.write:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        command = "python bench/metric_study.py --models " + " ".join(dict.fromkeys(r["model"] for r in rows))
        write_section(DOC, render(rows, command), SECTION)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as sink:
        for name in args.models:
            for row in study(name, args.calibration, args.evaluation):
                sink.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
