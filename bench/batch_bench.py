#!/usr/bin/env python
"""Throughput of ``onnxsmith batch``: models per minute with 1 and 2 local workers, and on Ray.

    python bench/batch_bench.py [--models ppocr_det,ppocr_rec,ppocr_cls,yolov8n] [--copies 2]
                                [--rounds 3] [--latency-rounds 15] [--no-ray] [--doc docs/benchmarks.md]

The same manifest of real models (``--copies`` copies of each, their dynamic input dims
pinned) is converted with ``--preset fast`` (cleanup, fuse, verification after every pass,
and each model's own interleaved before/after timing) by the real command line, into a
fresh OUTDIR every time: ``-j 1``, ``-j 2`` and ``--executor ray -j 2`` (a local Ray
started by the batch; its start-up is part of its time). The configurations are run in
rounds, their order alternating from round to round (A, B, C, C, B, A, ...), so machine
noise hits all alike; the table has each one's median wall time over the rounds,
models per minute, and the ratio to one local worker. The section "## batch throughput"
of docs/benchmarks.md is replaced; the rest of the file is kept.

With 2 workers each model's ONNX Runtime sessions use one intra-op thread (cores /
workers), so the two workers do not oversubscribe two cores; with 1 worker, ONNX
Runtime's default (a thread per core). The load average of the machine is written down
with the result: other work on the machine lowers the ratio.
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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import realmodels as rm  # noqa: E402
from fuse_bench import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## batch throughput"
TARGET = 1.6  # the target: 2 workers at least 1.6x the throughput of 1 on this 2-core machine
# Input shapes for the models' dynamic dims (rapidocr's line shapes; a small page for det).
SHAPES = {"ppocr_det": "1x3x160x320", "ppocr_rec": "1x3x48x320", "ppocr_cls": "1x3x48x192", "yolov8n": "1x3x320x320"}


@dataclass(frozen=True)
class Config:
    label: str
    args: tuple[str, ...]
    workers: int
    threads: str  # intra-op threads per model session, as the batch sets them


@dataclass
class Timing:
    wall_s: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)  # summary.json "seconds": scheduling until the last model
    load: list[float] = field(default_factory=list)  # 1-minute load average after each run
    failures: list[str] = field(default_factory=list)


def configs(ray: bool) -> list[Config]:
    cores = len(os.sched_getaffinity(0))
    found = [
        Config("local, 1 worker", ("-j", "1"), 1, f"ONNX Runtime default ({cores} on {cores} cores)"),
        Config("local, 2 workers", ("-j", "2"), 2, str(max(1, cores // 2))),
    ]
    if ray:
        found.append(Config("ray, 2 workers", ("--executor", "ray", "-j", "2"), 2, "1 (one CPU per task)"))
    return found


def make_manifest(folder: Path, models: list[str], copies: int) -> tuple[Path, int]:
    """A manifest of ``copies`` entries per model (distinct outputs), interleaving the models."""
    entries = []
    for copy in range(copies):
        for name in models:
            entry = {"model": str(rm.real_model(name)), "output": f"{name}_{copy}.onnx"}
            if name in SHAPES:
                entry["input_shape"] = [SHAPES[name]]
            entries.append(entry)
    manifest = folder / "zoo.yaml"
    manifest.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return manifest, len(entries)


def run_batch(manifest: Path, config: Config, work: Path, latency_rounds: int, count: int) -> tuple[float, float | None, str | None]:
    """One batch through the command line into a fresh OUTDIR: (wall s, summary seconds, error)."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    command = [sys.executable, "-m", "onnxsmith", "batch", str(manifest), "-o", str(out), "--preset", "fast",
               "--latency-rounds", str(latency_rounds), "--no-resume", "--json", *config.args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return wall, None, f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
    summary = json.loads(done.stdout)
    if summary["counts"]["ok"] != count:
        return wall, summary["seconds"], f"{summary['counts']} ({[m['error'] for m in summary['models'] if m['error']][:2]})"
    return wall, summary["seconds"], None


def _autogroup_note() -> list[str]:
    """Linux's autogroup shares the CPU between sessions, not processes: say so when it is on."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return []
    if not enabled:
        return []
    return ["Linux autogroup scheduling is on here (`/proc/sys/kernel/sched_autogroup_enabled` = 1): the kernel",
            "shares the CPU fairly between sessions, not processes, so while other sessions keep the cores busy",
            "a batch gets about one session's share however many workers it runs, and the ratio tends to 1."]


def load_average() -> float:
    return os.getloadavg()[0]


def render(models: list[str], copies: int, count: int, rounds: int, latency_rounds: int,
           results: dict[Config, Timing], command: str, load_before: float) -> str:
    first = results[next(iter(results))].wall_s
    base = statistics.median(first) if first else float("nan")
    lines = [
        SECTION,
        "",
        f"`onnxsmith batch` over {count} real models ({copies} copies each of {', '.join(models)}; dynamic dims pinned:",
        f"{', '.join(f'{m} {SHAPES[m]}' for m in models if m in SHAPES)}), `--preset fast` (cleanup, fuse, verification",
        f"after every pass) and `--latency-rounds {latency_rounds}` (each model's before/after timing), by the real command",
        "line into a fresh OUTDIR each time (`--no-resume`). Wall time is the whole command, process start",
        "and, for Ray, starting a local Ray included. Each configuration ran once per round, the order",
        f"alternating between rounds; the table has the median over {rounds} rounds.",
        "",
        "| executor | intra-op threads per model | median wall s | min..max wall s | models/min | vs 1 local worker |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for config, timing in results.items():
        if not timing.wall_s:
            lines.append(f"| {config.label} | {config.threads} | failed | | | |")
            continue
        wall = statistics.median(timing.wall_s)
        lines.append(f"| {config.label} | {config.threads} | {wall:.1f} | {min(timing.wall_s):.1f}..{max(timing.wall_s):.1f} "
                     f"| {count / wall * 60:.1f} | {base / wall:.2f}x |")
    two = next((t for c, t in results.items() if c.label == "local, 2 workers"), None)
    ratio = base / statistics.median(two.wall_s) if two and two.wall_s else float("nan")
    loads = [v for t in results.values() for v in t.load]
    lines += [
        "",
        f"2 local workers: **{ratio:.2f}x** the throughput of 1 (target: at least {TARGET}x on 2 cores): "
        f"{'met' if ratio >= TARGET else 'NOT met'} in this run.",
        "",
        f"Machine load (1-minute load average, `os.getloadavg`): {load_before:.2f} before the first run; "
        f"{min(loads):.2f}..{max(loads):.2f} after the runs (median {statistics.median(loads):.2f}). "
        "A load above zero means other processes competed for the cores; with load near 2 or more on",
        "2 cores, neither configuration has a core to itself and the ratio says little.",
        *_autogroup_note(),
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}; {os.cpu_count()} logical cores "
        f"(nproc {len(os.sched_getaffinity(0))}).",
    ]
    failures = [f"{c.label}: {f}" for c, t in results.items() for f in t.failures]
    if failures:
        lines += ["", "Failed runs (not in the medians):", "", *[f"- {f}" for f in failures]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ppocr_det,ppocr_rec,ppocr_cls,yolov8n")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rounds", type=int, default=15)
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray executor")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    command = "python bench/batch_bench.py " + shlex.join(sys.argv[1:])
    found = configs(ray=not args.no_ray)
    results = {config: Timing() for config in found}
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="onnxsmith-batch-bench-") as tmp:
        work = Path(tmp)
        manifest, count = make_manifest(work, models, args.copies)
        for r in range(args.rounds):
            for config in found if r % 2 == 0 else reversed(found):
                wall, batch_s, error = run_batch(manifest, config, work, args.latency_rounds, count)
                timing = results[config]
                timing.load.append(load_average())
                if error:
                    timing.failures.append(error)
                else:
                    timing.wall_s.append(wall)
                    timing.batch_s.append(batch_s or 0.0)
                print(f"round {r + 1}: {config.label}: {wall:.1f} s{' FAILED ' + error if error else ''} "
                      f"(load {timing.load[-1]:.2f})", file=sys.stderr, flush=True)
    section = render(models, args.copies, count, args.rounds, args.latency_rounds, results, command, load_before)
    if args.no_write:
        print(section)
    else:
        write_section(args.doc, section, SECTION)
        print(section)
        print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
