#!/usr/bin/env python
"""onnxsmith against the tools a user would pick instead, on the real models of DESIGN.md.

    python bench/run.py [--models ppocr_det,ppocr_rec,ppocr_cls,yolov8n,minilm] [--quick]
                        [--recipes KEY,...] [--rounds N] [--keep DIR] [--no-doc]
    python bench/run.py --render     # rewrite the doc and plot from docs/bench_results.json

For every model (bench/tasks.py: its real calibration and held-out data, its task metric
and bound) and every recipe of bench/anchors.py (onnxsmith's fuse / int8 / int8 with the
accuracy guard / fp16 / int4 / channel pruning; ONNX Runtime's quantize_static, quantize_dynamic
and fp16 converter; onnxslim; onnxsim's simplify, quantize and prune modes; NNCF; the OpenVINO
runtime):

* the artifact is built in its own process (``bench/anchors.py``): the tool's wall time
  (process start and imports included, the same for every tool) and its peak memory
  (``ru_maxrss`` of that process, from ``os.wait4``);
* the artifact runs on ONNX Runtime CPU, default session options (graph optimizations on,
  as deployed) except intra-op thread spinning, turned off (core/runtime.py says why), on
  the held-out feeds: the task metric against the fp32 model's outputs, max abs error,
  SQNR;
* latency: the fp32 model and up to five artifacts timed interleaved in one run
  (onnxsmith.latency.measure_interleaved, median of ``--rounds`` >= 15 rounds after
  warm-up); speedup = fp32 median / artifact median from the same run. The first group
  also times a second fp32 session, an A/A control whose ratio is the noise floor.
  OpenVINO is timed in its own group, against the ORT fp32 session.

A recipe whose pass or package is missing gets a "not available" row; a tool that fails,
writes a model that does not load, or runs past ``--tool-timeout`` gets a row with its
one-line error. Results go to docs/bench_results.json (models not run now keep their
previous results), and from there to the sections "## summary" and "## per model" of
docs/benchmarks.md and to docs/bench_plot.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchors  # noqa: E402
import report_md  # noqa: E402
import tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "docs" / "bench_results.json"
PLOT = ROOT / "docs" / "bench_plot.png"

ROUNDS, WARMUP, GROUP = 15, 2, 5
FULL = {"calibration": 16, "evaluation": 32, "tool_timeout": 420}
QUICK = {"calibration": 8, "evaluation": 12, "tool_timeout": 150}
QUICK_MODELS = ("ppocr_cls", "yolov8n")
QUICK_RECIPES = ("ours-fuse", "ours-int8", "ort-qdq-opset13", "onnxslim", "nncf", "openvino")


@dataclass
class Row:
    """One recipe on one model."""

    key: str
    tool: str
    label: str
    kind: str
    ours: bool
    status: str = "ok"  # ok | failed | timed out | not available
    error: str = ""
    tool_s: float | None = None
    tool_cpu_s: float | None = None  # user + system CPU time of the tool's process
    peak_mb: float | None = None
    size_mb: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    passed: bool | None = None
    ms: float | None = None
    fp32_ms: float | None = None  # the fp32 model in the same interleaved run
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.ms if self.ms and self.fp32_ms else None


@dataclass
class ModelResult:
    model: str
    metric: str
    metric_text: str
    bound: float
    data: str
    calibration: int
    evaluation: int
    timed_shape: str
    fp32_ms: float
    fp32_mb: float
    aa_ratio: float
    rounds: int
    minutes: float
    rows: list[Row]


# --- sessions ---------------------------------------------------------------------------------


def ort_session(path: Path) -> ort.InferenceSession:
    """ONNX Runtime CPU, default graph optimizations (as deployed), no thread spinning."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OpenVinoSession:
    """The OpenVINO CPU runtime behind ``run(names, feed)``, so measure_interleaved can time it."""

    def __init__(self, path: Path):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU")  # default config
        self.request = self.compiled.create_infer_request()
        self.names = [o.get_any_name() for o in self.compiled.outputs]
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(getattr(hint, "type_name", None) or hint).removeprefix("<Type: '").removesuffix("'>")

    def run(self, names, feed):
        result = self.request.infer(feed)
        return [np.array(result[o]) for o in self.compiled.outputs]

    def outputs(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [dict(zip(self.names, self.run(None, f), strict=True)) for f in feeds]


def outputs(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from onnxsmith.runtime import run_all

    return run_all(session, feeds)


def file_mb(path: Path) -> float:
    """The artifact's size, external data files beside it included."""
    extra = [p for p in path.parent.glob(path.name + "*.data")] + [p for p in path.parent.glob(path.stem + ".data")]
    return (path.stat().st_size + sum(p.stat().st_size for p in set(extra))) / 1e6


# --- building artifacts -----------------------------------------------------------------------


def build(recipe: anchors.Recipe, src: Path, out: Path, calib: Path, timeout: float) -> Row:
    """Run anchors.py for ``recipe`` in a child process; time it and read its peak memory."""
    row = Row(recipe.key, recipe.tool, recipe.label, recipe.kind, recipe.ours)
    log = out.with_suffix(".log")
    cmd = [sys.executable, str(Path(__file__).with_name("anchors.py")), recipe.key, str(src), str(out), str(calib)]
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        status, usage = _wait(proc, timeout)
    row.tool_s = time.perf_counter() - start
    row.peak_mb = usage.ru_maxrss / 1024 if usage else None
    row.tool_cpu_s = usage.ru_utime + usage.ru_stime if usage else None
    text = log.read_text(errors="replace")
    if status is None:
        row.status, row.error = "timed out", f"stopped after {timeout:.0f} s"
    elif status != 0:
        row.status, row.error = "failed", _error_line(text)
    elif not out.is_file():
        row.status, row.error = "failed", "wrote no model"
    else:
        result = json.loads(text.rsplit("ANCHOR-RESULT ", 1)[1].splitlines()[0])
        row.notes.extend(result.get("notes", []))
        row.size_mb = file_mb(out)
    return row


def _wait(proc: subprocess.Popen, timeout: float):
    """(exit status or None when killed at ``timeout``, the child's rusage)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return None, usage
        time.sleep(0.05)


def _error_line(log: str) -> str:
    """The last line of a traceback (``SomeError: message``), or the last line printed."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Fail", "Exceeded", "Invalid")) or "Error" in head.rsplit(".", 1)[-1]:
            return _one_line(line)
    return _one_line(lines[-1]) if lines else "failed without output"


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- one model --------------------------------------------------------------------------------


def bench_model(name: str, recipes: list[anchors.Recipe], settings: dict, rounds: int, work: Path) -> ModelResult:
    from onnxsmith.latency import measure_interleaved

    began = time.perf_counter()
    task = tasks.get_task(name)
    src = task.model_path()
    calibration = task.calibration(settings["calibration"])
    evaluation = task.evaluation(min(settings["evaluation"], task.max_evaluation))
    calib = tasks.save_npz(calibration, work / f"{name}.calib.npz")
    fp32 = ort_session(src)
    reference = outputs(fp32, evaluation)
    timed = task.timed()
    print(f"{name}: {len(calibration)} calibration, {len(evaluation)} held-out feeds; timed on "
          f"{'x'.join(map(str, next(iter(timed.values())).shape))}", flush=True)

    rows: list[Row] = []
    artifacts: dict[str, Path] = {}  # recipe key -> artifact that loads and runs
    for recipe in recipes:
        if not anchors.applies(recipe, name):
            continue
        reason = anchors.unavailable(recipe)
        if reason:
            rows.append(Row(recipe.key, recipe.tool, recipe.label, recipe.kind, recipe.ours, "not available", reason))
        elif recipe.kind == "runtime":
            rows.append(_openvino_row(recipe, src, task, evaluation, reference, timed, fp32, rounds))
        else:
            path = work / f"{name}.{recipe.key}.onnx"
            row = build(recipe, src, path, calib, settings["tool_timeout"])
            if row.status == "ok" and _score(row, path, task, evaluation, reference):
                artifacts[recipe.key] = path
            rows.append(row)
        r = rows[-1]
        print(f"  {r.key:18} {r.status:13} " + (
            f"{task.metric} {r.scores.get(task.metric, float('nan')):.4f}  {r.size_mb:.2f} MB  tool {r.tool_s:.0f} s"
            if r.status == "ok" and r.kind != "runtime" else r.error), flush=True)

    # latency: fp32 and up to GROUP artifacts per interleaved run (sessions made per group,
    # so a big model's many artifacts are not all in memory at once)
    keys = list(artifacts)
    fp32_medians, aa = [], float("nan")
    for g in range(0, max(len(keys), 1), GROUP):
        group = {"fp32": fp32, **{k: ort_session(artifacts[k]) for k in keys[g:g + GROUP]}}
        if g == 0:
            group["fp32 (A/A control)"] = ort_session(src)
        stats = measure_interleaved(group, timed, rounds=rounds, warmup=WARMUP)
        fp32_medians.append(stats["fp32"].median_ms)
        if g == 0:
            aa = stats["fp32"].median_ms / stats["fp32 (A/A control)"].median_ms
        for k in keys[g:g + GROUP]:
            row = next(r for r in rows if r.key == k)
            row.ms, row.fp32_ms = stats[k].median_ms, stats["fp32"].median_ms
        del group
    minutes = (time.perf_counter() - began) / 60
    print(f"  fp32 {np.median(fp32_medians):.2f} ms; A/A {aa:.2f}; {minutes:.1f} min", flush=True)
    return ModelResult(
        name, task.metric, task.metric_text, task.bound, task.data_text, len(calibration), len(evaluation),
        "x".join(map(str, next(iter(timed.values())).shape)), float(np.median(fp32_medians)), file_mb(src), aa,
        rounds, minutes, rows,
    )


def _score(row: Row, path: Path, task: tasks.Task, evaluation, reference) -> bool:
    """Score the artifact on the held-out feeds; False (and the row failed) when it does not run."""
    try:
        got = outputs(ort_session(path), evaluation)
        row.scores = task.score(reference, got, evaluation)
    except Exception as e:  # a tool's artifact that does not load or run is a result
        reason = re.sub(r"Load model from \S+ failed:\s*", "", f"{type(e).__name__}: {e}")
        row.status, row.error = "failed", "does not run on ONNX Runtime: " + _one_line(reason)
        return False
    row.passed = task.passed(row.scores)
    return True


def _openvino_row(recipe, src, task, evaluation, reference, timed, fp32, rounds) -> Row:
    from onnxsmith.latency import measure_interleaved

    row = Row(recipe.key, recipe.tool, recipe.label, recipe.kind, False)
    try:
        start = time.perf_counter()
        session = OpenVinoSession(src)
        row.tool_s = time.perf_counter() - start  # read + compile
        row.notes.append(f"inference precision {session.precision}")
        row.scores = task.score(reference, session.outputs(evaluation), evaluation)
        row.passed = task.passed(row.scores)
        stats = measure_interleaved({"fp32": fp32, "openvino": session}, timed, rounds=rounds, warmup=WARMUP)
        row.ms, row.fp32_ms = stats["openvino"].median_ms, stats["fp32"].median_ms
        row.size_mb = file_mb(src)
    except Exception as e:
        row.status, row.error = "failed", _one_line(f"{type(e).__name__}: {e}")
    return row


# --- results file -----------------------------------------------------------------------------


def load_results(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("models", {})
    except (OSError, ValueError):
        return {}


def to_json(result: ModelResult) -> dict:
    data = asdict(result)
    for row, raw in zip(result.rows, data["rows"], strict=True):
        raw["speedup"] = row.speedup
    return data


def machine_facts() -> list[str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for package in ("onnxruntime", "onnxslim", "onnxsim", "nncf", "openvino", "onnx"):
        try:
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
        except Exception:
            versions.append(f"{package} not installed")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores; load average {load:.1f} when the run ended",
        f"Python {platform.python_version()}; " + ", ".join(versions),
    ]


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated, from {','.join(tasks.TASKS)} (default: all; --quick: {','.join(QUICK_MODELS)})")
    parser.add_argument("--recipes", help="comma-separated recipe keys (default: all; --quick: a core set); see bench/anchors.py")
    parser.add_argument("--quick", action="store_true", help="fewer models, recipes and samples: a smoke run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"interleaved timing rounds (default {ROUNDS})")
    parser.add_argument("--tool-timeout", type=float, help="seconds a tool may run (default 420; --quick 150)")
    parser.add_argument("--keep", type=Path, help="keep the artifacts in this folder")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/ (results are printed)")
    parser.add_argument("--render", action="store_true", help="measure nothing: rewrite the doc sections and plot from docs/bench_results.json")
    args = parser.parse_args(argv)
    if args.render:
        return _render(load_results(RESULTS), _previous_runs(RESULTS, set(load_results(RESULTS))))

    settings = dict(QUICK if args.quick else FULL)
    if args.tool_timeout:
        settings["tool_timeout"] = args.tool_timeout
    models = _pick(args.models, QUICK_MODELS if args.quick else tasks.TASKS, tasks.TASKS, parser, "model")
    keys = _pick(args.recipes, QUICK_RECIPES if args.quick else [r.key for r in anchors.RECIPES], list(anchors.BY_KEY), parser, "recipe")
    recipes = [anchors.BY_KEY[k] for k in keys]
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    began = time.perf_counter()
    cpu_began = _cpu_seconds()
    results = {}
    with tempfile.TemporaryDirectory(prefix="onnxsmith-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in models:
            results[name] = to_json(bench_model(name, recipes, settings, args.rounds, work))
    minutes = (time.perf_counter() - began) / 60
    cpu_minutes = (_cpu_seconds() - cpu_began) / 60
    run = {
        "command": command.strip(), "date": datetime.date.today().isoformat(), "minutes": round(minutes, 1),
        "cpu_minutes": round(cpu_minutes, 1),
        "quick": args.quick, "machine": machine_facts(), "settings": settings, "rounds": args.rounds,
    }
    print(f"\nall models: {minutes:.1f} min wall, {cpu_minutes:.1f} min CPU (this process and its children)")
    merged = {**load_results(RESULTS), **results}
    runs = {name: run for name in results}
    summary, _ = report_md.render(merged, runs | _previous_runs(RESULTS, set(merged) - set(results)))
    print(summary)
    if not args.no_doc:
        RESULTS.write_text(json.dumps({"models": merged, "runs": {**_previous_runs(RESULTS, set(merged)), **runs}}, indent=1, default=float) + "\n")
        _render(merged, {**_previous_runs(RESULTS, set(merged)), **runs})
    return 0


def _render(models: dict[str, dict], runs: dict[str, dict]) -> int:
    if not models:
        print(f"no results in {RESULTS.relative_to(ROOT)}: run the benchmark first")
        return 1
    summary, per_model = report_md.render(models, runs)
    report_md.write_section(DOC, "## summary", summary)
    report_md.write_section(DOC, "## per model", per_model)
    report_md.plot(models, PLOT)
    print(f"updated {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)} from {RESULTS.relative_to(ROOT)}")
    return 0


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _previous_runs(path: Path, names: set[str]) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text()).get("runs", {})
    except (OSError, ValueError):
        return {}
    return {n: r for n, r in runs.items() if n in names}


def _pick(given: str | None, default, allowed, parser, what: str) -> list[str]:
    chosen = [x.strip() for x in given.split(",") if x.strip()] if given else list(default)
    unknown = [x for x in chosen if x not in allowed]
    if unknown:
        parser.error(f"unknown {what}(s) {unknown}; choose from {','.join(allowed)}")
    return chosen


if __name__ == "__main__":
    raise SystemExit(main())
