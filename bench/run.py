#!/usr/bin/env python
"""onnxsmith against the tools a user would pick instead, on the real models of DESIGN.md.

    python bench/run.py [--models ppocr_det,ppocr_rec,ppocr_cls,yolov8n,minilm] [--quick]
                        [--recipes KEY,...] [--rounds N] [--jobs N] [--keep DIR] [--doc/--no-doc]
    python bench/run.py --render     # rewrite the doc and plot from docs/bench_results.json

For every model (tests/tasks.py: its real calibration and held-out data, its task metric
and bound) and every recipe of bench/anchors.py (onnxsmith's fuse / int8 / int8 with the
accuracy guard / fp16 / int4 / channel pruning; ONNX Runtime's quantize_static, quantize_dynamic
and fp16 converter; onnxslim; onnxsim's simplify, quantize and prune modes; NNCF; the OpenVINO
runtime), in three phases:

1. data: the task's feeds, and the fp32 model's outputs on the held-out ones;
2. build: every artifact in its own process (bench/builds.py, bench/anchors.py), ``--jobs``
   at a time (as memory allows), longest first: the tool's wall time (process start and imports included, the
   same for every tool), its CPU time and peak memory (``ru_maxrss``). As each finishes it is
   scored here on ONNX Runtime CPU, default session options (graph optimizations on, as
   deployed) except intra-op thread spinning, turned off (core/runtime.py says why): the task
   metric against the fp32 model's outputs, max abs error, SQNR. An artifact that is the
   same graph as the fp32 model or as an earlier artifact (bench/builds.py content_key:
   metadata aside) is not scored or timed again; its row says which it equals;
3. timing, with no build running: the fp32 model and up to five distinct artifacts timed
   interleaved in one run (onnxsmith.latency.measure_interleaved, median of at least
   ``--rounds`` (15) rounds after warm-up, up to 45 for a fast model; a small model's
   sample is the mean of back-to-back runs lasting >= 0.1 s); speedup = fp32 median /
   artifact median from the same run. The first group also times a second fp32 session,
   an A/A control whose ratio is the noise floor. OpenVINO is timed in its own group,
   against the ORT fp32 session.

A recipe whose pass or package is missing gets a "not available" row; a tool that fails,
writes a model that does not load, or runs past ``--tool-timeout`` gets a row with its
one-line error. A full run writes docs/bench_results.json (models not run now keep their
previous results) and, from it, the sections "## summary" and "## per model" of
docs/benchmarks.md and docs/bench_plot.png. ``--quick`` (2 small models, 8 recipes, fewer
feeds) is a smoke run: it prints its tables, labelled quick, and writes docs/ only with --doc.
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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import anchors  # noqa: E402
import builds  # noqa: E402
import realmodels  # noqa: E402
import report_md  # noqa: E402
import tasks  # noqa: E402
from rows import ModelResult, Row, load_results, previous_runs, to_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "docs" / "bench_results.json"
PLOT = ROOT / "docs" / "bench_plot.png"
ESTIMATES = realmodels.cache_dir() / "bench_estimates.json"  # each build's last run time and peak memory: scheduling hints

ROUNDS, WARMUP, GROUP = 15, 2, 5
BLOCK_S = 0.1  # a timed block repeats a small model's run until it lasts this long (timer and scheduler noise)
MAX_ROUNDS, GROUP_BUDGET_S = 45, 25.0  # fast models get more rounds, up to this, while a group fits in the budget (not --quick)
FULL = {"calibration": 16, "evaluation": 32, "tool_timeout": 900}  # wall s: det prune took 370 s under load
QUICK = {"calibration": 8, "evaluation": 12, "tool_timeout": 300}
QUICK_MODELS = ("ppocr_cls", "yolov8n")
QUICK_RECIPES = ("ours-fuse", "ours-int8", "ours-fp16", "ort-qdq-opset13", "ort-fp16", "onnxslim", "nncf", "openvino")
FP32 = "fp32"


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

    def run(self, names, feed):
        result = self.request.infer(feed)
        return [np.array(result[o]) for o in self.compiled.outputs]

    def outputs(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [dict(zip(self.names, self.run(None, f), strict=True)) for f in feeds]


def outputs(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from onnxsmith.runtime import run_all

    return run_all(session, feeds)


# --- one model's state across the phases ------------------------------------------------------


@dataclass
class Bench:
    """A model's task, data and fp32 reference, and the rows and artifacts made so far."""

    name: str
    task: tasks.Task
    src: Path
    calibration: int
    evaluation: list[dict[str, np.ndarray]]
    calib: Path
    reference: list[dict[str, np.ndarray]]
    timed: dict[str, np.ndarray]
    order: list[str]  # recipe keys, in table order
    rows: dict[str, Row] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)  # distinct artifacts that run on ORT
    graphs: dict[str, list[str]] = field(default_factory=dict)  # content key -> rows with it, first built first (or FP32)
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, seconds: float, phase: str) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds


def prepare(name: str, recipes: list[anchors.Recipe], settings: dict, work: Path) -> Bench:
    """Phase 1: the task's feeds, the fp32 outputs, and rows for recipes that cannot run here."""
    began = time.perf_counter()
    task = tasks.get_task(name)
    src = task.model_path()
    calibration = task.calibration(settings["calibration"])
    evaluation = task.evaluation(min(settings["evaluation"], task.max_evaluation))
    bench = Bench(
        name, task, src, len(calibration), evaluation, tasks.save_npz(calibration, work / f"{name}.calib.npz"),
        outputs(ort_session(src), evaluation), task.timed(), [r.key for r in recipes if anchors.applies(r, name)],
    )
    bench.graphs[builds.content_key(src)] = [FP32]
    for recipe in recipes:
        reason = anchors.applies(recipe, name) and anchors.unavailable(recipe)
        if reason:
            bench.rows[recipe.key] = Row(recipe.key, recipe.tool, recipe.label, recipe.kind, recipe.ours, "not available", reason)
    bench.add(time.perf_counter() - began, "data")
    shape = "x".join(map(str, next(iter(bench.timed.values())).shape))
    print(f"{name}: {len(calibration)} calibration, {len(evaluation)} held-out feeds; timed on {shape} "
          f"({bench.phases['data']:.0f} s)", flush=True)
    return bench


def load_estimates() -> dict[str, dict[str, dict]]:
    """Per model and recipe, the last measured {"tool_s", "peak_mb"}: from ESTIMATES (any
    earlier run, --quick and --no-doc ones too), else from docs/bench_results.json."""
    estimates = {m: {r["key"]: r for r in result.get("rows", [])} for m, result in load_results(RESULTS).items()}
    try:
        for model, rows in json.loads(ESTIMATES.read_text()).items():
            estimates.setdefault(model, {}).update(rows)
    except (OSError, ValueError):
        pass
    return estimates


def save_estimates(estimates: dict[str, dict[str, dict]], benches: dict[str, "Bench"]) -> None:
    for bench in benches.values():
        for row in bench.rows.values():
            if row.tool_s is not None and row.peak_mb is not None:
                estimates.setdefault(bench.name, {})[row.key] = {"tool_s": round(row.tool_s, 1), "peak_mb": round(row.peak_mb)}
    try:
        ESTIMATES.parent.mkdir(parents=True, exist_ok=True)
        slim = {m: {k: {"tool_s": v.get("tool_s"), "peak_mb": v.get("peak_mb")} for k, v in rows.items()} for m, rows in estimates.items()}
        ESTIMATES.write_text(json.dumps(slim, indent=1) + "\n")
    except OSError:
        pass  # only hints


def jobs_for(bench: Bench, recipes: list[anchors.Recipe], work: Path, estimates: dict) -> list[builds.Job]:
    """The builds of ``bench``'s runnable recipes, each with its expected run time and peak
    memory (the last run's, else a guess): the longest start first, and builds that would
    not fit in memory together do not run together."""
    before = estimates.get(bench.name, {})

    def expected(key: str, what: str, guess: float) -> float:
        return before.get(key, {}).get(what) or guess

    return [
        builds.Job(bench.name, r, bench.src, work / f"{bench.name}.{r.key}.onnx", bench.calib,
                   expected(r.key, "tool_s", 60.0 if r.ours else 15.0), expected(r.key, "peak_mb", 4000.0 if r.ours else 1500.0))
        for r in recipes
        if anchors.applies(r, bench.name) and r.key not in bench.rows
    ]


def finish_build(bench: Bench, job: builds.Job, row: Row) -> None:
    """Phase 2, as each build ends: recognise a graph seen before, else score the artifact."""
    began = time.perf_counter()
    bench.rows[row.key] = row
    bench.add(row.tool_s or 0.0, "tools")
    bench.add(row.tool_cpu_s or 0.0, "tools_cpu")
    if row.status == "ok" and row.kind != "runtime":
        graph = builds.content_key(job.out)
        members = bench.graphs.setdefault(graph, [])
        members.append(row.key)
        first = members[0]
        if first == FP32:
            row.scores = bench.task.score(bench.reference, bench.reference, bench.evaluation)
            row.passed = bench.task.passed(row.scores)
        elif first != row.key:
            other = bench.rows[first]
            row.status, row.error, row.scores, row.passed = other.status, other.error, dict(other.scores), other.passed
        elif _score(row, job.out, bench):
            bench.artifacts[row.key] = job.out
    bench.add(time.perf_counter() - began, "scoring")
    _print_row(bench, row)


def settle_twins(bench: Bench) -> None:
    """After the builds: in each set of rows with the same graph, the first in table order is
    scored and timed (or the fp32 model is), the others say which they equal."""
    for members in bench.graphs.values():
        if len(members) < 2:
            continue
        if members[0] == FP32:
            for key in members[1:]:
                bench.rows[key].same_as = FP32
                bench.rows[key].notes.insert(0, "the same graph as the fp32 model (metadata aside): speedup 1 by construction, not timed")
            continue
        first = min(members, key=bench.order.index)
        if members[0] in bench.artifacts:
            bench.artifacts[first] = bench.artifacts.pop(members[0])
        for key in members:
            if key != first:
                bench.rows[key].same_as = first
                bench.rows[key].notes.insert(0, f"the same graph as {first} (metadata aside): scored and timed once")


def _score(row: Row, path: Path, bench: Bench) -> bool:
    """Score the artifact on the held-out feeds; False (and the row failed) when it does not run."""
    try:
        got = outputs(ort_session(path), bench.evaluation)
        row.scores = bench.task.score(bench.reference, got, bench.evaluation)
    except Exception as e:  # a tool's artifact that does not load or run is a result
        reason = re.sub(r"Load model from \S+ failed:\s*", "", f"{type(e).__name__}: {e}")
        row.status, row.error = "failed", "does not run on ONNX Runtime: " + builds.one_line(reason)
        return False
    row.passed = bench.task.passed(row.scores)
    return True


def _print_row(bench: Bench, r: Row) -> None:
    if r.status != "ok":
        detail = r.error
    elif r.kind == "runtime":
        detail = f"read, compiled and run once in {r.tool_s:.0f} s (CPU {r.tool_cpu_s or 0:.0f} s); scored and timed after the builds"
    else:
        detail = (f"{bench.task.metric} {r.scores.get(bench.task.metric, float('nan')):.4f}  {r.size_mb:.2f} MB  "
                  f"tool {r.tool_s:.0f} s (CPU {r.tool_cpu_s or 0:.0f} s)")
    print(f"  {bench.name:9} {r.key:18} {r.status:13} {detail}", flush=True)


def rounds_for(fp32: ort.InferenceSession, feed: dict[str, np.ndarray], sessions: int, least: int, most: int) -> int:
    """Timing rounds for a model: at least ``least``; more for a fast model (up to ``most``,
    while a group of ``sessions`` stays within GROUP_BUDGET_S): on a shared machine the
    load comes and goes over seconds, and more rounds sample it more evenly for every session."""
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        fp32.run(None, feed)
        runs.append(time.perf_counter() - start)
    round_s = sessions * max(BLOCK_S, min(runs))
    return max(least, min(most, int(GROUP_BUDGET_S / round_s)))


def time_model(bench: Bench, least_rounds: int, most_rounds: int) -> tuple[float, float, int]:
    """Phase 3: latency of the distinct artifacts and OpenVINO against fp32, interleaved.
    Returns (fp32 median ms over the groups, A/A ratio, rounds)."""
    from onnxsmith.latency import measure_interleaved

    began = time.perf_counter()
    keys = [k for k in bench.order if k in bench.artifacts]
    fp32 = ort_session(bench.src)
    rounds = rounds_for(fp32, bench.timed, min(len(keys), GROUP) + 2, least_rounds, most_rounds)
    fp32_medians, aa = [], float("nan")
    for g in range(0, max(len(keys), 1), GROUP):
        group = {FP32: fp32, **{k: ort_session(bench.artifacts[k]) for k in keys[g:g + GROUP]}}
        if g == 0:
            group["fp32 (A/A control)"] = ort_session(bench.src)
        stats = measure_interleaved(group, bench.timed, rounds=rounds, warmup=WARMUP, min_block_s=BLOCK_S)
        fp32_medians.append(stats[FP32].median_ms)
        if g == 0:
            aa = stats[FP32].median_ms / stats["fp32 (A/A control)"].median_ms
        for k in keys[g:g + GROUP]:
            bench.rows[k].ms, bench.rows[k].fp32_ms = stats[k].median_ms, stats[FP32].median_ms
        del group
    fp32_ms = float(np.median(fp32_medians))
    for row in bench.rows.values():
        if row.same_as == FP32:
            row.ms = row.fp32_ms = fp32_ms
        elif row.same_as:
            twin = bench.rows[row.same_as]
            row.ms, row.fp32_ms = twin.ms, twin.fp32_ms
    runtime = bench.rows.get("openvino")
    if runtime is not None and runtime.status == "ok":
        _time_openvino(runtime, bench, fp32, rounds)
    bench.add(time.perf_counter() - began, "timing")
    return fp32_ms, aa, rounds


def _time_openvino(row: Row, bench: Bench, fp32: ort.InferenceSession, rounds: int) -> None:
    from onnxsmith.latency import measure_interleaved

    try:
        session = OpenVinoSession(bench.src)
        row.scores = bench.task.score(bench.reference, session.outputs(bench.evaluation), bench.evaluation)
        row.passed = bench.task.passed(row.scores)
        stats = measure_interleaved({FP32: fp32, "openvino": session}, bench.timed, rounds=rounds, warmup=WARMUP, min_block_s=BLOCK_S)
        row.ms, row.fp32_ms = stats["openvino"].median_ms, stats[FP32].median_ms
    except Exception as e:
        row.status, row.error = "failed", builds.one_line(f"{type(e).__name__}: {e}")


def result_of(bench: Bench, fp32_ms: float, aa: float, rounds: int, quick: bool) -> ModelResult:
    return ModelResult(
        bench.name, bench.task.metric, bench.task.metric_text, bench.task.bound, bench.task.data_text,
        bench.calibration, len(bench.evaluation), "x".join(map(str, next(iter(bench.timed.values())).shape)),
        fp32_ms, builds.file_mb(bench.src), aa, rounds, quick, {k: round(v, 1) for k, v in bench.phases.items()},
        [bench.rows[k] for k in bench.order if k in bench.rows],
    )


# --- the run ----------------------------------------------------------------------------------


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


def measure(models: list[str], recipes: list[anchors.Recipe], settings: dict, args) -> tuple[dict[str, dict], dict]:
    """Run the three phases on ``models``; (results per model, run-wide phase seconds)."""
    estimates = load_estimates()
    with tempfile.TemporaryDirectory(prefix="onnxsmith-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        benches = {name: prepare(name, recipes, settings, work) for name in models}
        t1 = time.perf_counter()
        jobs = [job for b in benches.values() for job in jobs_for(b, recipes, work, estimates)]
        print(f"building {len(jobs)} artifacts, {args.jobs} at a time (scoring each as it is done)", flush=True)
        build_s = builds.run_builds(jobs, workers=args.jobs, timeout=settings["tool_timeout"],
                                    on_done=lambda job, row: finish_build(benches[job.model], job, row))
        save_estimates(estimates, benches)
        for bench in benches.values():
            settle_twins(bench)
        t2 = time.perf_counter()
        print("timing (no build running)", flush=True)
        results = {}
        for name, bench in benches.items():
            fp32_ms, aa, rounds = time_model(bench, args.rounds, args.rounds if args.quick else MAX_ROUNDS)
            results[name] = to_json(result_of(bench, fp32_ms, aa, rounds, args.quick))
            print(f"  {name:9} fp32 {fp32_ms:.2f} ms; A/A {aa:.3f}; {len(bench.artifacts)} distinct artifacts timed, "
                  f"{rounds} rounds, in {bench.phases['timing']:.0f} s", flush=True)
        t3 = time.perf_counter()
    phases = {"data_s": round(t1 - t0, 1), "build_s": round(build_s, 1), "timing_s": round(t3 - t2, 1),
              "tools_s": round(sum(b.phases.get("tools", 0) for b in benches.values()), 1),
              "tools_cpu_s": round(sum(b.phases.get("tools_cpu", 0) for b in benches.values()), 1),
              "scoring_s": round(sum(b.phases.get("scoring", 0) for b in benches.values()), 1)}
    return results, phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated, from {','.join(tasks.TASKS)} (default: all; --quick: {','.join(QUICK_MODELS)})")
    parser.add_argument("--recipes", help=f"comma-separated, from {','.join(anchors.BY_KEY)} (default: all; --quick: {','.join(QUICK_RECIPES)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {len(QUICK_MODELS)} models, {len(QUICK_RECIPES)} recipes, {QUICK['calibration']} calibration "
                             f"and {QUICK['evaluation']} held-out feeds; writes docs/ only with --doc")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"interleaved timing rounds, at least (default {ROUNDS}, the least the doc takes; fast models get up to {MAX_ROUNDS}, not with --quick)")
    parser.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="artifacts built at once (default 2; 1 gives each tool the machine to itself, slower)")
    parser.add_argument("--tool-timeout", type=float, help="seconds a tool may run (default 900; --quick 300)")
    parser.add_argument("--keep", type=Path, help="keep the artifacts, and this run's results and tables, in this folder")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/bench_results.json, docs/benchmarks.md and the plot (default: yes, no with --quick)")
    parser.add_argument("--render", action="store_true", help="measure nothing: rewrite the doc sections and plot from docs/bench_results.json")
    args = parser.parse_args(argv)
    if args.render:
        models = load_results(RESULTS)
        return _render(models, previous_runs(RESULTS, set(models)))
    settings = dict(QUICK if args.quick else FULL)
    if args.tool_timeout:
        settings["tool_timeout"] = args.tool_timeout
    models = _pick(args.models, QUICK_MODELS if args.quick else tasks.TASKS, tasks.TASKS, parser, "model")
    keys = _pick(args.recipes, QUICK_RECIPES if args.quick else [r.key for r in anchors.RECIPES], list(anchors.BY_KEY), parser, "recipe")
    recipes = [r for r in anchors.RECIPES if r.key in keys]
    write = args.doc if args.doc is not None else not args.quick
    if write and args.rounds < 15:
        parser.error("the doc reports medians of at least 15 interleaved rounds: use --rounds >= 15, or --no-doc")
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    began, cpu_began = time.perf_counter(), _cpu_seconds()
    results, phases = measure(models, recipes, settings, args)
    minutes, cpu_minutes = (time.perf_counter() - began) / 60, (_cpu_seconds() - cpu_began) / 60
    run = {
        "command": command.strip(), "date": datetime.date.today().isoformat(), "minutes": round(minutes, 1),
        "cpu_minutes": round(cpu_minutes, 1), "phases": phases, "jobs": args.jobs,
        "quick": args.quick, "machine": machine_facts(), "settings": settings, "rounds": args.rounds,
    }
    label = "QUICK RUN (a smoke test, not the published numbers)" if args.quick else "full run"
    print(f"\n{label}: {minutes:.1f} min wall, {cpu_minutes:.1f} min CPU (this process and its children); "
          + report_md.phases_text(phases, args.jobs))
    runs = {name: run for name in results}
    summary, _ = report_md.render(results, runs)
    print(summary)
    if write:
        merged = {**load_results(RESULTS), **results}
        all_runs = {**previous_runs(RESULTS, set(merged)), **runs}
        RESULTS.write_text(json.dumps({"models": merged, "runs": all_runs}, indent=1, default=float) + "\n")
        _render(merged, all_runs)
    else:
        print(f"(not written to docs/: {'--quick' if args.quick else '--no-doc'}; add --doc to write)")
    if args.keep:  # this run's own results and tables beside its artifacts
        (args.keep / "bench_results.json").write_text(json.dumps({"models": results, "runs": runs}, indent=1, default=float) + "\n")
        (args.keep / "benchmarks.md").write_text("# bench/run.py, this run only\n\n" + "\n".join(report_md.render(results, runs)))
        print(f"this run's results and tables: {args.keep}/bench_results.json, {args.keep}/benchmarks.md")
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


def _pick(given: str | None, default, allowed, parser, what: str) -> list[str]:
    chosen = [x.strip() for x in given.split(",") if x.strip()] if given else list(default)
    unknown = [x for x in chosen if x not in allowed]
    if unknown:
        parser.error(f"unknown {what}(s) {unknown}; choose from {','.join(allowed)}")
    return chosen


if __name__ == "__main__":
    raise SystemExit(main())
