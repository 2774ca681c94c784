#!/usr/bin/env python
"""onnxsmith's ``prune`` (magnitude, wanda, nm) and ``lowrank`` passes on real models.

    python bench/prune_bench.py [--models minilm,yolov8n] [--calib N] [--eval N]
                                [--rounds N] [--keep DIR] [--no-doc]

For every model (tests/tasks.py: real calibration and held-out inputs that never overlap,
and the task metric against the original: MiniLM's mean-pooled embedding cosine with the
attention mask, YOLOv8n's detection F1) and every variant, the artifact is built with
``onnxsmith.optimize`` (the pipeline's checks included) from the calibration .npz, then:

* the task metric on the held-out inputs, and the mean of the per-layer errors the pass
  reports (each layer's relative output error on calibration data, upstream changes
  excluded);
* parameters: non-zero weights for pruning (the artifact still stores every zero), stored
  parameters for lowrank; dense MACs per run from the pass's per-layer records;
* size: the artifact's bytes, and zipped (deflate, zipfile's default level): the only size
  unstructured sparsity saves;
* latency: the original, an A/A control (a second session of the original) and every
  variant, timed interleaved in one run on ONNX Runtime CPU (onnxsmith.latency, median of
  ``--rounds`` rounds after warm-up; sessions with graph optimizations on and thread
  spinning off, as bench/fuse_bench.py); ratio = original / variant.

The table goes to the section "## prune and lowrank" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
from fuse_bench import machine_facts, outputs, session, write_section  # noqa: E402
from tasks import get_task, save_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## prune and lowrank"
CONTROL = "original (A/A control)"
ROUNDS, WARMUP = 31, 3
# model -> variants (label, pipeline); lowrank factors MatMul/Gemm only, so not on YOLOv8n's convs
VARIANTS: dict[str, list[tuple[str, str]]] = {
    "minilm": [
        ("magnitude 50%", "prune{method=magnitude,ratio=0.5}"),
        ("wanda 50%", "prune{method=wanda,ratio=0.5}"),
        ("magnitude 30%", "prune{method=magnitude,ratio=0.3}"),
        ("wanda 30%", "prune{method=wanda,ratio=0.3}"),
        ("nm 2:4 (wanda scores)", "prune{method=nm}"),
        ("lowrank asvd energy 0.99", "lowrank{energy=0.99}"),
        ("lowrank asvd 85% params", "lowrank{param_budget=0.85}"),
        ("lowrank asvd 70% params", "lowrank{param_budget=0.7}"),
        ("lowrank svd 70% params", "lowrank{param_budget=0.7,method=svd}"),
    ],
    # YOLOv8n (3M parameters, BatchNorm folded into its convs) loses every detection at 30%
    # unstructured sparsity with either score, so it is measured at 10% and 20%.
    "yolov8n": [
        ("magnitude 10%", "prune{method=magnitude,ratio=0.1}"),
        ("wanda 10%", "prune{method=wanda,ratio=0.1}"),
        ("magnitude 20%", "prune{method=magnitude,ratio=0.2}"),
        ("wanda 20%", "prune{method=wanda,ratio=0.2}"),
    ],
}
DEFAULT_CALIB = {"minilm": 32, "yolov8n": 16}
DEFAULT_EVAL = {"minilm": 64, "yolov8n": 19}


@dataclass
class Row:
    label: str
    pipeline: str
    path: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    params_before: int = 0  # of the layers the pass touched
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    layer_error: float | None = None
    layers: int = 0
    bytes: int = 0
    zipped: int = 0
    ms: float | None = None
    notes: list[str] = field(default_factory=list)


def zipped_size(path: Path, work: Path) -> int:
    """Bytes of ``path`` in a zip archive (deflate at zipfile's default level)."""
    archive = work / (path.name + ".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, path.name)
    size = archive.stat().st_size
    archive.unlink()
    return size


def build(model: Path, row: Row, calib: Path, out: Path) -> None:
    from onnxsmith.optimize import OptimizeOptions, optimize
    from onnxsmith.recipe import parse_pipeline, validate_recipe

    recipe = validate_recipe({"passes": parse_pipeline(row.pipeline), "calibration": {"data": str(calib), "eval_samples": 2}})
    start = time.perf_counter()
    report = optimize(str(model), out, recipe, OptimizeOptions(latency_rounds=0))
    row.seconds = time.perf_counter() - start
    row.path = out
    record = report.passes[-1]
    row.layers = len(record.layers)
    row.params_before = sum(r["params_before"] for r in record.layers)
    row.params_after = sum(r["params_after"] for r in record.layers)
    row.macs_before = sum(r["macs_before"] or 0 for r in record.layers)
    row.macs_after = sum(r["macs_after"] or 0 for r in record.layers)
    errors = [r["error"] for r in record.layers if r.get("error") is not None]
    row.layer_error = statistics.mean(errors) if errors else None
    if record.name == "lowrank":
        ranks = [r["rank"] / r["full_rank"] for r in record.layers]
        row.notes.append(f"{record.counts.get('layers_factored', 0)} layers factored, {record.counts.get('layers_dense', 0)} "
                         f"left dense; rank / full rank from {min(ranks, default=0):.2f} to {max(ranks, default=0):.2f}, "
                         f"median {statistics.median(ranks) if ranks else 0:.2f}")
    else:
        row.notes += [n for n in record.notes if "patterns run faster" in n]


def bench_model(name: str, calib_n: int, eval_n: int, rounds: int, work: Path) -> tuple[str, list[Row], dict]:
    from onnxsmith.latency import measure_interleaved

    task = get_task(name)
    model = task.model_path()
    calib = save_npz(task.calibration(calib_n), work / f"{name}.calib.npz")
    held_out = task.evaluation(eval_n)
    reference = outputs(model, held_out)
    original = Row("original", "-", path=model, bytes=model.stat().st_size, zipped=zipped_size(model, work))
    rows = [original]
    for i, (label, pipeline) in enumerate(VARIANTS[name]):
        row = Row(label, pipeline)
        print(f"  {name}: {pipeline}", flush=True)
        try:
            build(model, row, calib, work / f"{name}.{i}.onnx")
            row.scores = task.score(reference, outputs(row.path, held_out), held_out)
            row.bytes, row.zipped = row.path.stat().st_size, zipped_size(row.path, work)
        except Exception as e:  # a failing variant is a result too
            row.error = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        print(f"    {row.scores.get(task.metric, float('nan')):.4f} {task.metric}, {row.seconds:.0f} s", flush=True)
        rows.append(row)
    ok = [r for r in rows if r.error is None]
    sessions = {r.label: session(r.path, optimized=True) for r in ok}
    sessions[CONTROL] = session(model, optimized=True)
    timed = measure_interleaved(sessions, task.timed(), rounds=rounds, warmup=WARMUP)
    for r in ok:
        r.ms = timed[r.label].median_ms
    info = {"task": task, "control": timed[original.label].median_ms / timed[CONTROL].median_ms, "calib": calib_n, "eval": eval_n}
    return name, rows, info


# --- the Markdown section -------------------------------------------------------------------


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def findings(rows: list[Row], metric: str) -> list[str]:
    """One line per pair that differs only in the method (magnitude/wanda, svd/asvd): which
    one kept the task metric closer to the original's, by how much."""
    by_label = {r.label: r for r in rows if r.error is None and metric in r.scores}
    lines = []
    for a, b in (("magnitude", "wanda"), ("lowrank svd", "lowrank asvd")):
        for label, row in by_label.items():
            if not label.startswith(a + " "):
                continue
            other = by_label.get(b + label[len(a):])
            if other is None:
                continue
            x, y = row.scores[metric], other.scores[metric]
            better = other.label if y > x else row.label
            sqnr = [r.scores.get("sqnr_db") for r in (other, row)]
            generic = f"; SQNR {sqnr[0]:.1f} vs {sqnr[1]:.1f} dB" if None not in sqnr else ""
            lines.append(f"- {other.label} vs {row.label}: {metric} {y:.4f} vs {x:.4f}{generic}: by {metric}, {better} "
                         f"is closer to the original (by {abs(y - x):.4f}).")
    return lines


def render(results: list[tuple[str, list[Row], dict]], rounds: int, command: str) -> str:
    lines = [
        SECTION,
        "",
        "onnxsmith's `prune` (unstructured magnitude, Wanda, N:M) and `lowrank` (SVD / activation-aware SVD)",
        "passes, run by `onnxsmith.optimize` on real models with real calibration inputs, measured on",
        "other, held-out inputs (tests/tasks.py).",
        "",
        "- Task metric: MiniLM, cosine of the mean-pooled (attention mask) sentence embeddings with the",
        "  original's, mean (min) over held-out sentences; YOLOv8n, detection F1 against the original's",
        "  detections (nudenet's post-processing). SQNR: of the raw outputs against the original's, the",
        "  worst output.",
        "- Layer err: the mean over the touched layers of each layer's own relative output error on the",
        "  calibration data (the pass's per-layer records).",
        "- Params: of the touched layers (weights + biases), non-zero ones for pruning, stored ones for",
        "  lowrank. MACs: dense multiply-accumulates of those layers per run, as ONNX Runtime runs them.",
        "- Zipped: the artifact in a zip archive (deflate). Unstructured zeros are still stored, so the",
        "  file does not shrink: only compression sees them.",
        f"- Latency: ONNX Runtime CPU, median of {rounds} interleaved rounds (every variant, the original and",
        "  a second session of the original as an A/A control, order alternating) after warm-up;",
        "  ratio = original / variant. Zeros, unstructured or N:M, do not make ONNX Runtime CPU's dense",
        "  kernels faster: their ratios only show the noise (compare the A/A control). N:M patterns run",
        "  faster only on backends with sparse kernels (TensorRT on NVIDIA Ampere or newer), not here.",
        "",
    ]
    for name, rows, info in results:
        task = info["task"]
        original = rows[0]
        lines += [
            f"### {name}",
            "",
            f"{task.data_text}; {info['calib']} calibration and {info['eval']} held-out inputs. "
            f"A/A control ran at {info['control']:.2f}x the original.",
            "",
            f"| variant | {task.metric} (min) | SQNR dB | layer err | params | MACs | file MB | zipped MB | latency ratio |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in rows[1:]:
            if r.error is not None:
                lines.append(f"| {r.label} | failed: {r.error} | | | | | | | |")
                continue
            metric = r.scores.get(task.metric)
            low = r.scores.get(f"{task.metric}_min")
            params = f"{r.params_after / 1e6:.2f}M / {r.params_before / 1e6:.2f}M" if r.params_before else "-"
            macs = f"{r.macs_after / max(r.macs_before, 1):.0%}" if r.macs_before else "-"
            ratio = f"{original.ms / r.ms:.2f}x" if original.ms and r.ms else "-"
            lines.append(
                f"| {r.label} | {_f(metric, '.4f')}" + (f" ({low:.4f})" if low is not None else "")
                + f" | {_f(r.scores.get('sqnr_db'), '.1f')} | {_f(r.layer_error, '.3f')} | {params} | {macs} | {r.bytes / 1e6:.1f} | {r.zipped / 1e6:.1f} | {ratio} |"
            )
        detections = next((r.scores["detections"] for r in rows if "detections" in r.scores), None)
        if detections:
            lines += ["", f"The original makes {detections:.0f} detections on the held-out images: one detection "
                          f"more or less moves F1 by about {1 / detections:.2f}."]
        detections = next((r.scores["detections"] for r in rows if "detections" in r.scores), None)
        if detections:
            lines += ["", f"The original makes {detections:.0f} detections on the held-out images: one detection "
                          f"more or less moves F1 by about {1 / detections:.2f}."]
        lines += ["", *findings(rows, task.metric)]
        lines += ["", f"Original: {original.bytes / 1e6:.1f} MB, zipped {original.zipped / 1e6:.1f} MB, "
                      f"{_f(original.ms, '.2f')} ms. Pipelines and what they did:", ""]
        lines += [f"- {r.label}: `{r.pipeline}`" + (f"; {'; '.join(r.notes)}" if r.notes else "") + "." for r in rows[1:]]
        lines.append("")
    lines += [
        f"Produced by `{command}` on {datetime.date.today().isoformat()}.",
        "",
        *[f"- {fact}" for fact in machine_facts()],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--calib", type=int, help="calibration inputs (default: minilm 32, yolov8n 16)")
    parser.add_argument("--eval", type=int, help="held-out inputs (default: minilm 64, yolov8n 19, all it has)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds (default {ROUNDS})")
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file to update (default docs/benchmarks.md)")
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not write it")
    parser.add_argument("--keep", type=Path, help="keep the artifacts in this folder")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in VARIANTS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {','.join(VARIANTS)}")
    command = "python bench/prune_bench.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = []
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in models:
            results.append(bench_model(name, args.calib or DEFAULT_CALIB[name], args.eval or DEFAULT_EVAL[name], args.rounds, work))
    section = render(results, args.rounds, command.strip())
    print(section)
    if not args.no_doc:
        write_section(args.doc, section, heading=SECTION)
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
