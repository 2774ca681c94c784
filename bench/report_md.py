"""bench/run.py's results as Markdown (the "## summary" and "## per model" sections of
docs/benchmarks.md) and as a plot (speedup against task metric, one point per recipe).

Results are the plain dicts run.py keeps in docs/bench_results.json: per model, the task
(metric, bound, data) and one row per recipe.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

__all__ = ["phases_text", "plot", "render", "write_section"]

NOISE = 0.05  # speedups closer than this (or than the model's A/A control is off 1) are called even


def _f(value, fmt: str = ".2f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def _metric(row: dict, metric: str) -> str:
    if row["status"] != "ok":
        return "-"
    value = row["scores"].get(metric)
    mark = "" if row.get("passed") is None else (" ✓" if row["passed"] else " ✗")
    return _f(value, ".3f") + mark


def _speedup(row: dict) -> str:
    return "-" if row.get("speedup") is None else f"{row['speedup']:.2f}x"


def _passing(rows: list[dict], ours: bool) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r.get("passed") and r["ours"] == ours and r.get("speedup")]


def _best(rows: list[dict]) -> dict | None:
    return max(rows, key=lambda r: r["speedup"], default=None)


def _name(row: dict) -> str:
    return f"{row['tool']} {row['label']}"


def verdict(result: dict) -> str:
    """Where onnxsmith stands on this model: its fastest recipe within the bound against the
    fastest other tool within the bound. Speedups closer than the noise floor (NOISE, or how
    far the A/A control of this model's run was from 1, whichever is larger) are even."""
    ours, theirs = _best(_passing(result["rows"], True)), _best(_passing(result["rows"], False))
    if ours is None and theirs is None:
        return "nothing within the bound"
    if ours is None:
        return f"behind: no onnxsmith recipe within the bound; {_name(theirs)} {theirs['speedup']:.2f}x"
    if theirs is None:
        return f"ahead: only onnxsmith within the bound ({ours['label']} {ours['speedup']:.2f}x)"
    ratio = ours["speedup"] / theirs["speedup"]
    aa = result.get("aa_ratio") or 1.0
    noise = max(NOISE, abs(math.log(aa)) if aa > 0 and math.isfinite(aa) else NOISE)
    if abs(math.log(ratio)) <= noise:
        return (f"even (within the {noise:.0%} noise floor): ours {ours['speedup']:.2f}x ({ours['label']}), "
                f"{_name(theirs)} {theirs['speedup']:.2f}x")
    word = "ahead" if ratio > 1 else "behind"
    return f"{word}: ours {ours['speedup']:.2f}x ({ours['label']}) vs {_name(theirs)} {theirs['speedup']:.2f}x"


def _cell(result: dict, key: str) -> str:
    row = next((r for r in result["rows"] if r["key"] == key), None)
    if row is None:
        return "-"
    if row["status"] != "ok":
        return row["status"]
    return f"{_metric(row, result['metric'])} / {_speedup(row)} / {_f(row.get('size_mb'), '.1f')} MB"


def phases_text(phases: dict, jobs: int | None) -> str:
    """Where a run's time went, from run.py's run-wide phase seconds."""
    if not phases:
        return ""
    at_once = f", {jobs} at a time" if jobs else ""
    return (f"data {phases['data_s']:.0f} s; builds {phases['build_s']:.0f} s wall{at_once} (the tools' own "
            f"{phases['tools_s']:.0f} s wall, {phases['tools_cpu_s']:.0f} s CPU; scoring {phases['scoring_s']:.0f} s "
            f"alongside); timing {phases['timing_s']:.0f} s")


def _model_phases(r: dict) -> str:
    """A model's own time: its data, its tools (summed), its scoring and timing."""
    ph = r.get("phases")
    if not ph:
        return f"{r['minutes']:.1f} min for this model" if "minutes" in r else ""
    return (f"this model's share: data {ph.get('data', 0):.0f} s, tools {ph.get('tools', 0):.0f} s wall "
            f"({ph.get('tools_cpu', 0):.0f} s CPU), scoring {ph.get('scoring', 0):.0f} s, timing {ph.get('timing', 0):.0f} s")


def _title(name: str, r: dict) -> str:
    return f"{name} (quick run)" if r.get("quick") else name


def render(models: dict[str, dict], runs: dict[str, dict]) -> tuple[str, str]:
    """(the "## summary" section, the "## per model" section)."""
    order = [m for m in ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n", "minilm") if m in models]
    order += sorted(set(models) - set(order))
    summary = [
        "## summary",
        "",
        "Written by `bench/run.py` (how each number is made: see \"## per model\"). Each cell: task",
        "metric vs the fp32 model on held-out real inputs (✓ within the bound of issue 4, ✗ not) /",
        "latency speedup over fp32 on ONNX Runtime CPU, interleaved in one run / artifact size. The",
        "fp32 column: size, and median latency under the load of that run. The last column",
        "compares onnxsmith's fastest recipe that keeps the bound with the fastest other tool's.",
        "Rerun: `python bench/run.py` (every model; `--models` for some; `--quick` for a smoke run",
        "that prints its tables and leaves this file alone).",
        "",
        "| model | bound | fp32 | ours int8 (guard) | ours int8 (no guard) | ORT quantize_static (opset 13) | NNCF | OpenVINO fp32 model | onnxsmith vs the others, within bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in order:
        r = models[m]
        summary.append(
            f"| {_title(m, r)} | {r['metric']} >= {r['bound']:g} | {r['fp32_mb']:.1f} MB, {r['fp32_ms']:.0f} ms on {r['timed_shape']} | {_cell(r, 'ours-int8')} | {_cell(r, 'ours-int8-noguard')} "
            f"| {_cell(r, 'ort-qdq-opset13')} | {_cell(r, 'nncf')} | {_cell(r, 'openvino')} | {verdict(r)} |"
        )
    summary += ["", "Runs:", ""]
    seen = set()
    for m in order:
        run = runs.get(m)
        if run is None:
            continue
        ident = (run["command"], run["date"])
        if ident in seen:
            continue
        seen.add(ident)
        these = [n for n in order if runs.get(n, {}).get("command") == run["command"] and runs[n].get("date") == run["date"]]
        cpu = f", {run['cpu_minutes']} min of CPU time" if run.get("cpu_minutes") is not None else ""
        where = f" ({phases_text(run['phases'], run.get('jobs'))})" if run.get("phases") else ""
        kind = "quick run" if run.get("quick") else "run"
        summary.append(f"- {kind} `{run['command']}` on {run['date']} ({', '.join(these)}): {run['minutes']} min in all{cpu}{where}. "
                       + " ".join(f"{fact}." for fact in run["machine"]))
    per_model = [
        "## per model",
        "",
        "- Artifacts are built by `bench/anchors.py`, one process per recipe, from the original",
        "  file, with each tool's defaults; \"tool s\" is that process's wall time (start-up and",
        "  imports included), \"CPU s\" its user + system time (steadier on a shared machine), and",
        "  \"peak MB\" its `ru_maxrss`. Builds run `--jobs` at a time (the run line says how many;",
        "  fewer when their memory would not fit) while finished ones are scored, so wall times",
        "  include that load; CPU times do not. Tools that need calibration get the",
        "  same calibration feeds (onnxsmith holds a quarter of them out for its own checks). For",
        "  onnxsmith, the notes split its time: each pass, and \"other\" (loading, reference outputs,",
        "  the verification after each pass, writing).",
        "- An artifact that is the same graph as the fp32 model or as another row's (weights,",
        "  opsets and nodes identical; metadata aside) is scored and timed once; its notes say so.",
        "- Task metric: on held-out real inputs never used for calibration, against the fp32",
        "  model's outputs (tests/tasks.py); ✓/✗: within the bound or not. Max abs / SQNR: the worst",
        "  over every output.",
        "- Speedup: timed after every build has finished (no tool running); ONNX Runtime CPU,",
        "  default session options except intra-op spinning off; the",
        "  fp32 model and up to five distinct artifacts timed interleaved in one run, median of the",
        "  rounds stated, after warm-up (a round's sample of a small model is the mean of back-to-back",
        "  runs lasting at least 0.1 s); speedup = fp32 median / artifact median from the same run. The",
        "  A/A control (a second fp32 session in the first run) shows the noise floor. OpenVINO:",
        "  its CPU runtime on the fp32 model, timed against the ONNX Runtime fp32 session; its",
        "  \"tool s\" and \"peak MB\" are those of a process that reads, compiles and runs it once.",
        "- The machine is shared by other jobs while this runs, so absolute milliseconds and tool",
        "  times wander; the ratios are from one interleaved run each.",
        "",
    ]
    for m in order:
        per_model += _model_table(models[m])
    return "\n".join(summary) + "\n", "\n".join(per_model) + "\n"


def _model_table(r: dict) -> list[str]:
    metric = r["metric"]
    lines = [
        f"### {_title(r['model'], r)}",
        "",
        f"Task metric: {r['metric_text']}; bound {metric} >= {r['bound']:g}. Data: {r['data']} "
        f"({r['calibration']} calibration feeds, {r['evaluation']} held out). fp32: {r['fp32_mb']:.1f} MB, "
        f"{r['fp32_ms']:.2f} ms on {r['timed_shape']}; A/A control {r['aa_ratio']:.3f}; {r['rounds']} rounds; "
        f"{_model_phases(r)}.",
        "",
        f"| tool | recipe | {metric} | speedup | ms | fp32 ms, same run | MB | max abs | SQNR dB | tool s | CPU s | peak MB | notes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    rows = sorted(r["rows"], key=lambda x: (not x["ours"], x["tool"] != "ONNX Runtime"))
    for row in rows:
        scores = row.get("scores") or {}
        extra = _extra_scores(scores, metric)
        notes = ([row["error"]] if row["error"] else []) + extra + row.get("notes", []) + _time_split(row)
        status = "" if row["status"] == "ok" else f"**{row['status']}** "
        lines.append(
            f"| {row['tool']} | {row['label']} | {_metric(row, metric)} | {_speedup(row)} | {_f(row.get('ms'))} "
            f"| {_f(row.get('fp32_ms'))} | {_f(row.get('size_mb'))} | {_f(scores.get('max_abs'), '.3g')} | {_f(scores.get('sqnr_db'), '.1f')} "
            f"| {_f(row.get('tool_s'), '.0f')} | {_f(row.get('tool_cpu_s'), '.0f')} | {_f(row.get('peak_mb'), '.0f')} | {status}{'; '.join(notes).replace('|', '/')} |"
        )
    lines += ["", f"Verdict: {verdict(r)}.", ""]
    return lines


def _time_split(row: dict) -> list[str]:
    """onnxsmith's run time by pass, from the phases anchors.py reports."""
    phases = row.get("phases") or {}
    if not phases:
        return []
    return ["time in the tool: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())]


def _extra_scores(scores: dict, metric: str) -> list[str]:
    """The task's secondary numbers: detections matched as m/n, the rest to 3 decimals."""
    extra = []
    if "matched" in scores and "detections" in scores:
        extra.append(f"matched {scores['matched']:.0f}/{scores['detections']:.0f} reference detections")
    for k, v in scores.items():
        if k not in (metric, "max_abs", "sqnr_db", "matched", "detections"):
            extra.append(f"{k} {_f(v, '.3f')}")
    return extra


def write_section(doc: Path, heading: str, section: str) -> None:
    """Replace the section ``heading`` (up to the next ``## `` heading) in ``doc``, or append
    it; other sections are kept. Written atomically."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nMeasured by the scripts in bench/; every table says how it was made.\n"
    pattern = re.compile(rf"^{re.escape(heading)}\s*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    text = text.rstrip("\n") + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(f".{doc.name}.part")
    tmp.write_text(text)
    tmp.replace(doc)


TOOL_COLORS = {"onnxsmith": "#d62728", "ONNX Runtime": "#1f77b4", "onnxslim": "#2ca02c", "onnxsim": "#9467bd",
               "NNCF": "#ff7f0e", "OpenVINO": "#8c564b"}


def plot(models: dict[str, dict], path: Path) -> None:
    """One panel per model: speedup over fp32 (y) against the task metric (x), one point per
    recipe that ran, the bound as a dashed line; onnxsmith's points in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n", "minilm") if m in models]
    names += sorted(set(models) - set(names))
    cols = min(3, len(names) + 1)
    rows_n = math.ceil((len(names) + 1) / cols)  # one spare panel for the legend
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        r = models[name]
        points = [row for row in r["rows"] if row["status"] == "ok" and row.get("speedup") and r["metric"] in row["scores"]]
        for row in points:
            x = row["scores"][r["metric"]]
            ax.scatter(x, row["speedup"], color=TOOL_COLORS.get(row["tool"], "grey"), s=36 if row["ours"] else 22,
                       marker="o" if row["ours"] else "s", zorder=3)
            ax.annotate(row["key"], (x, row["speedup"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axvline(r["bound"], color="black", linestyle="--", linewidth=0.8)
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.set_title(_title(name, r), fontsize=10)
        ax.set_xlabel(f"{r['metric']} vs fp32 (bound {r['bound']:g})", fontsize=8)
        ax.set_ylabel("speedup over fp32 (ORT CPU)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o" if t == "onnxsmith" else "s", color=c, linestyle="", label=t) for t, c in TOOL_COLORS.items()]
    axes.flat[len(names)].legend(handles=handles, loc="center", fontsize=9, title="speedup vs task metric;\nright of the dashed line:\nwithin the bound", title_fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
