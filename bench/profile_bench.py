#!/usr/bin/env python
"""The per-layer profile on the real models: coverage, naming, OpenVINO, and its own cost.

    python bench/profile_bench.py [--models ppocr_det,ppocr_rec,ppocr_cls,yolov8n,minilm]
                                  [--runs 30] [--repeats 3] [--no-doc]

For every model, with the timed input of bench/fuse_bench.py (real images and sentences):
the original and its ``--preset fast`` artifact (cleanup + fuse) are profiled on ``cpu``
(ONNX Runtime's trace) and on ``openvino`` (its performance counters), ``--repeats`` times
each. Per profile: end-to-end median, the sum of the layer times, their ratio
(``coverage``; the target on cpu is within 15% of 1), how many layers are named by a node
of the user's original model, how many a pass or the runtime inserted, and how many are
named by nothing (the target is none). Then the cost of profiling itself: the wall time
of ``onnxsmith profile`` over 100 runs of PP-OCRv4 det (4.7 MB) through the command line.
The section "## per-layer profile" of docs/benchmarks.md is replaced.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import realmodels as rm  # noqa: E402
from fuse_bench import CASES, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## per-layer profile"
ALL_MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n", "minilm")
COVERAGE_TARGET = 0.15
SPEED_RUNS = 100
SPEED_SHAPE = "1x3x320x320"


@dataclass
class Row:
    model: str
    variant: str
    backend: str
    e2e_ms: list[float]
    layers_sum_ms: list[float]
    coverage: list[float]
    layers: int
    original: int  # layers named by nodes of the original model
    inserted: dict[str, int]  # inserted_by -> layers
    unnamed: int  # layers with neither (the target: 0)
    foreign: int  # layers whose origin names a node the original model does not have (must be 0)
    overhead_us: float | None


def profile_rows(name: str, runs: int, repeats: int, backends: list[str], work: Path) -> list[Row]:
    from onnxsmith.backend import get_backend
    from onnxsmith.modelio import load_onnx
    from onnxsmith.optimize import OptimizeOptions, optimize
    from onnxsmith.recipe import load_preset, validate_recipe

    case = CASES[name]()
    original_nodes = {n.name for n in onnx.load(str(case.path), load_external_data=False).graph.node}
    fused_path = work / f"{name}.fast.onnx"
    npz = work / f"{name}.calibration.npz"
    np.savez(npz, **case.calibration)
    recipe = validate_recipe({**load_preset("fast").model_dump(mode="json"), "calibration": {"data": str(npz)}})
    optimize(str(case.path), fused_path, recipe, OptimizeOptions(latency_rounds=0))
    rows = []
    for variant, path in (("original", case.path), ("preset fast", fused_path)):
        model, _ = load_onnx(path)
        for backend_name in backends:
            backend = get_backend(backend_name)
            profiles = [backend.profile(model, [case.timed], runs=runs, warmup=3) for _ in range(repeats)]
            last = profiles[-1]
            inserted: dict[str, int] = {}
            for layer in last.layers:
                if not layer.origin and layer.inserted_by:
                    inserted[layer.inserted_by] = inserted.get(layer.inserted_by, 0) + 1
            rows.append(Row(
                model=name, variant=variant, backend=backend_name,
                e2e_ms=[p.total.median_ms for p in profiles],
                layers_sum_ms=[p.total.layers_sum_ms for p in profiles],
                coverage=[p.total.coverage for p in profiles],
                layers=len(last.layers),
                original=sum(bool(layer.origin) for layer in last.layers),
                inserted=inserted,
                unnamed=sum(not layer.origin and not layer.inserted_by for layer in last.layers),
                foreign=sum(not set(layer.origin) <= original_nodes for layer in last.layers),
                overhead_us=last.total.kernel_overhead_us,
            ))
            print(f"  {name} {variant} {backend_name}: coverage {', '.join(f'{c:.3f}' for c in rows[-1].coverage)}", flush=True)
    return rows


def profile_speed(work: Path) -> dict[str, float]:
    """Wall time of ``onnxsmith profile`` over 100 runs of PP-OCRv4 det, and its parts."""
    path = rm.real_model("ppocr_det")
    out = work / "det.profile.json"
    command = [sys.executable, "-m", "onnxsmith", "profile", str(path), "--runs", str(SPEED_RUNS), "--input-shape", SPEED_SHAPE,
               "--format", "json", "-o", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    profile = json.loads(out.read_text())["profile"]
    return {"wall_s": wall, "e2e_ms": profile["total"]["median_ms"], "layers": len(profile["layers"]),
            "mb": path.stat().st_size / 1e6, "session_ms": profile["total"]["session_ms"]}


def render(rows: list[Row], speed: dict[str, float], runs: int, repeats: int, command: str, loads: list[float]) -> str:
    lines = [
        SECTION,
        "",
        f"`onnxsmith profile` on the real models (inputs as in \"fuse vs onnxslim\": the timed feed), {runs} runs after 3",
        f"warm-up, repeated {repeats} times; the original model and its `--preset fast` artifact (cleanup + fuse).",
        "On `cpu`, end-to-end is a plain session run interleaved with the profiled one; layer times are",
        "ONNX Runtime's kernel events less the profiler's own cost per event and per parallel section (measured",
        "alongside every profile on chains of trivial kernels, serial and parallel). Coverage = sum of layer",
        "medians / end-to-end median; the target on cpu",
        f"is 1 ± {COVERAGE_TARGET:.2f}. Layers: named by original nodes / inserted (by whom) / named by nothing.",
        "",
        "| model | variant | backend | e2e ms (median of repeats) | layers sum ms | coverage per repeat | target | layers | original / inserted / unnamed |",
        "|---|---|---|--:|--:|---|---|--:|---|",
    ]
    for r in rows:
        ok = all(abs(c - 1.0) <= COVERAGE_TARGET for c in r.coverage)
        target = ("met" if ok else "**not met**") if r.backend == "cpu" else "-"
        inserted = ", ".join(f"{n} by {who}" for who, n in sorted(r.inserted.items())) or "0"
        foreign = f"; {r.foreign} name nodes the original lacks" if r.foreign else ""
        lines.append(
            f"| {r.model} | {r.variant} | {r.backend} | {statistics.median(r.e2e_ms):.2f} | {statistics.median(r.layers_sum_ms):.2f} "
            f"| {', '.join(f'{c:.2f}' for c in r.coverage)} | {target} | {r.layers} | {r.original} / {inserted} / {r.unnamed}{foreign} |"
        )
    overheads = [r.overhead_us for r in rows if r.overhead_us]
    lines += [
        "",
        f"Profiler cost per kernel event taken off on cpu (mean over events): {min(overheads):.1f}..{max(overheads):.1f} us." if overheads else "",
        "",
        f"Profiling cost: `onnxsmith profile` of PP-OCRv4 det ({speed['mb']:.1f} MB, {SPEED_SHAPE}, {speed['layers']} layers), "
        f"{SPEED_RUNS} runs: **{speed['wall_s']:.1f} s** wall for the whole command (process start, session creation "
        f"{speed['session_ms']:.0f} ms, 3 warm-up + {SPEED_RUNS} profiled runs interleaved with as many plain ones at "
        f"{speed['e2e_ms']:.1f} ms each, the trace read as a stream, JSON written).",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}; 1-minute load average "
        f"{min(loads):.2f}..{max(loads):.2f} during the runs on {len(os.sched_getaffinity(0))} cores "
        "(other work on the machine shows up as noise in both end-to-end and layer times).",
        "",
        "On a loaded machine coverage drifts above 1 on small models: a profiled run lasts longer than a plain one",
        "(the profiler's work between kernels), so it is preempted more often, and the waits land inside kernel",
        "events. Judge the target with a 1-minute load average well below the core count.",
    ]
    return "\n".join(line for line in lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="cpu,openvino")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    command = "python bench/profile_bench.py " + shlex.join(sys.argv[1:])
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows: list[Row] = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="onnxsmith-profile-bench-") as tmp:
        for name in models:
            print(f"{name}", flush=True)
            rows += profile_rows(name, args.runs, args.repeats, backends, Path(tmp))
            loads.append(os.getloadavg()[0])
        speed = profile_speed(Path(tmp))
        loads.append(os.getloadavg()[0])
    section = render(rows, speed, args.runs, args.repeats, command, loads)
    print(section)
    if not args.no_doc:
        write_section(args.doc, section, SECTION)
        print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
