"""Before/after the measurement layer: wall time, peak memory and ONNX Runtime sessions of
``fuse,quantize{mode=int8}`` and ``prune{method=channel}`` on the real models.

Each run is a fresh ``onnxsmith optimize`` process (the CLI, as a user runs it), with
latency timing off so only the build is measured. "before" is the code of an earlier commit
(``--before DIR``: a folder holding that commit's package laid out as ``onnxsmith/``, see
``main``), "after" the installed one; the two run one after the other per model and
pipeline, which of them first alternating, so drift of the shared machine hits both alike. Writes its
table to docs/benchmarks.md ("## measurement layer") unless --no-docs.

    python bench/measure_bench.py --before /tmp/before_pkg [--after /tmp/after_pkg] [--models ppocr_cls,yolov8n] [--no-docs]

A package folder of a commit: ``git archive COMMIT core cli passes backends | tar -x -C T``,
then ``T/core`` copied to ``PKG/onnxsmith`` with ``cli``, ``passes``, ``backends`` inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT / "tests"))  # realmodels.py, tasks.py: shared with the tests

MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n", "minilm")
PIPELINES = ("fuse,quantize{mode=int8}", "prune{method=channel}")
CALIBRATION_SAMPLES = 16

# Run inside the child: count InferenceSession constructions, then run the CLI; report on exit.
_CHILD = """
import json, resource, sys, time
import onnxruntime as ort
sessions = [0]
init = ort.InferenceSession.__init__
def counted(self, *args, **kwargs):
    sessions[0] += 1
    return init(self, *args, **kwargs)
ort.InferenceSession.__init__ = counted
from onnxsmith.cli.main import app
start = time.perf_counter()
code = 0
try:
    app(sys.argv[1:], prog_name="onnxsmith")
except SystemExit as e:
    code = e.code or 0
print("MEASURE_BENCH " + json.dumps({"seconds": time.perf_counter() - start, "code": code, "sessions": sessions[0],
      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)
"""


def run_once(package: Path | None, model: Path, pipeline: str, calib: Path, out: Path) -> dict:
    """One optimize process; ``package``: a folder to import onnxsmith from (the "before" code)."""
    env = {**os.environ, "PYTHONPATH": str(package)} if package else {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = [sys.executable, "-c", _CHILD, "optimize", str(model), "-o", str(out), "--passes", pipeline,
            "--calib", str(calib), "--latency-rounds", "0"]
    proc = subprocess.run(args, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=1800)
    line = next((l for l in proc.stderr.splitlines() if l.startswith("MEASURE_BENCH ")), None)
    if line is None:
        raise RuntimeError(f"{model.name} {pipeline}: no result\n{proc.stderr[-2000:]}")
    result = json.loads(line.split(" ", 1)[1])
    result["error"] = None if result["code"] == 0 else proc.stderr.strip().splitlines()[0][:200]
    return result


def calibration_file(name: str, folder: Path) -> tuple[Path, Path]:
    """The model's path and a .npz of CALIBRATION_SAMPLES real inputs (bench/tasks.py)."""
    import tasks
    from realmodels import real_model

    task = tasks.get_task(name)
    path = real_model(name)
    return path, tasks.save_npz(task.calibration(CALIBRATION_SAMPLES), folder / f"{name}.npz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="folder with the earlier commit's onnxsmith/ package")
    parser.add_argument("--before-label", default="before")
    parser.add_argument("--after", type=Path, default=None, help="the same for the later code (default: the installed onnxsmith)")
    parser.add_argument("--after-label", default="installed")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    from onnxsmith.target import detect_cpu

    cpu = detect_cpu()
    rows = []
    with tempfile.TemporaryDirectory(prefix="measure-bench-") as tmp:
        folder = Path(tmp)
        for name in args.models.split(","):
            model, calib = calibration_file(name, folder)
            model.read_bytes()  # in the page cache before either version reads it
            for pipeline in PIPELINES:
                versions = [("before", args.before), ("after", args.after)]
                if len(rows) % 2:
                    versions.reverse()  # neither version always runs first
                results = {label: run_once(package, model, pipeline, calib, folder / f"{name}-{label}.onnx")
                           for label, package in versions}
                rows.append({"model": name, "pipeline": pipeline, **results})
                print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows, cpu, args.before_label, args.after_label)
    print(table)
    if not args.no_docs:
        from report_md import write_section

        write_section(ROOT / "docs" / "benchmarks.md", "## measurement layer", table)


def markdown(rows: list[dict], cpu, before_label: str, after_label: str) -> str:
    lines = [
        "## measurement layer",
        "",
        f"`python bench/measure_bench.py`, before = {before_label}, after = {after_label}, {time.strftime('%Y-%m-%d')}, on {cpu.model} "
        f"({cpu.isa}, {cpu.cores} cores). One `onnxsmith optimize` process per cell ({CALIBRATION_SAMPLES} calibration "
        "samples, latency timing off), before and after one after the other, the first of them alternating. Sessions: "
        "ONNX Runtime `InferenceSession`s the process created.",
        "",
        "| model | pipeline | wall s before | after | ratio | peak MiB before | after | sessions before | after |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        b, a = row["before"], row["after"]
        failed = [f"{k}: {r['error']}" for k, r in (("before", b), ("after", a)) if r["error"]]
        ratio = f"{b['seconds'] / a['seconds']:.2f}x" if not failed else "; ".join(failed)
        lines.append(f"| {row['model']} | `{row['pipeline']}` | {b['seconds']:.1f} | {a['seconds']:.1f} | {ratio} | "
                     f"{b['peak_mb']:.0f} | {a['peak_mb']:.0f} | {b['sessions']} | {a['sessions']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
