"""Human rendering (rich tables) of library results; JSON output bypasses this module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from onnxsmith.cli import render_profile
from onnxsmith.cli.console import folding_table, stderr, stdout
from onnxsmith.latency import ratio_with_spread
from onnxsmith.registry import PassInfo
from onnxsmith.report import Report

if TYPE_CHECKING:
    from onnxsmith.auto import Candidate  # not at run time: onnxsmith.auto loads ONNX Runtime


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def inspection(info: dict[str, Any]) -> None:
    opsets = escape(", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info["opsets"].items()))
    stdout.print(f"[bold]{escape(info['path'])}[/bold]  IR {info['ir_version']}  opsets: {opsets}"
                 + (f"  producer: {escape(info['producer'])}" if info["producer"] else ""))
    io = folding_table("", "name", "dtype", "shape", title="Inputs and outputs", title_justify="left")
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            io.add_row(kind[:-1], escape(v["name"]), v["dtype"], escape("[" + ", ".join(str(d) for d in v["shape"]) + "]"))
    stdout.print(io)
    ops = folding_table("op", "count", title=f"{info['nodes']} nodes", title_justify="left")
    for op, n in info["op_histogram"].items():
        ops.add_row(escape(op), str(n))
    stdout.print(ops)
    params = folding_table("dtype", "params", "bytes", title=f"{info['params']:,} parameters, {human_bytes(info['param_bytes'])}", title_justify="left")
    for dtype, e in info["params_by_dtype"].items():
        params.add_row(dtype, f"{e['params']:,}", human_bytes(e["bytes"]))
    stdout.print(params)
    if info["external_data"]:
        stdout.print("external data: " + escape(", ".join(f"{d['file']} ({human_bytes(d['bytes'])})" for d in info["external_data"])))
    if info["custom_domains"]:
        stdout.print("custom domains: " + escape(", ".join(info["custom_domains"])))
    prov = info["provenance"]
    if prov:
        passes = [next(iter(p)) for p in (prov.get("recipe") or {}).get("passes", [])]
        stdout.print(f"written by onnxsmith {prov['version']} from sha256 {prov['source_sha256'][:12]}… with passes: {', '.join(passes)}")


def pass_list(infos: list[PassInfo]) -> None:
    table = folding_table("pass", "kind", "options (default)", "what it does")
    for info in infos:
        kind = ("exact" if info.exact else "lossy") + (", needs --calib" if info.needs_calibration else "")
        options = "\n".join(escape(f"{p.name}: {p.type} = {p.default!r}") + (f"  [dim]{escape(p.doc)}[/dim]" if p.doc else "") for p in info.params)
        table.add_row(info.name, kind, options or "-", escape(info.summary))
    stdout.print(table)
    for info in infos:
        if info.rules:
            rules = folding_table("rule", "what it does", title=_rules_title(info), title_justify="left")
            for name, doc in info.rules.items():
                rules.add_row(name, escape(doc))
            stdout.print(rules)


def _rules_title(info: PassInfo) -> str:
    """How a pass's catalogue is selected: rules by only/disable where it has those options, else methods by method=."""
    options = {p.name for p in info.params}
    if {"only", "disable"} <= options:
        return f"{info.name} rules (select with {info.name}{{only=[...]}} or {info.name}{{disable=[...]}})"
    if "method" in options:
        return f"{info.name} methods (choose with {info.name}{{method=...}})"
    return f"{info.name} rules"


def optimize_summary(report: Report, report_path: Path | None) -> None:
    """The before/after table, the outputs' errors, the gates, the warnings and what was written
    (``report_path`` None: nothing was, the accuracy gate failed)."""
    s = report.summary
    table = folding_table("", "before", "after", "change", title="Summary", title_justify="left")
    for row in _summary_rows(report):
        table.add_row(*row)
    stdout.print(table)
    outputs = folding_table("output", "max abs err", "cosine", "SQNR dB", title="Outputs vs original (held-out feeds)", title_justify="left")
    for name, o in s.outputs.items():
        sqnr = "exact" if o.sqnr_db == float("inf") else f"{o.sqnr_db:.1f}"
        outputs.add_row(name, f"{o.max_abs:.3g}", f"{o.cosine:.6f}", sqnr)
    stdout.print(outputs)
    if report.profile:
        render_profile.brief_compare(report.profile["after"])
    for row in report.gates or []:
        verdict = "[green]passed[/green]" if row["passed"] else "[red]FAILED[/red]"
        stdout.print(f"gate {row['gate']}: {_gate_value(row['gate'], row['value'])} vs limit "
                     f"{_gate_value(row['gate'], row['limit'])}: {verdict}")
    for warning in report.warnings:
        stderr.print(f"[yellow]warning:[/yellow] {warning}")
    if report_path is not None:
        stdout.print(f"wrote {report.artifact['path']} and {report_path}")


def optimize_markdown(report: Report) -> str:
    """A short Markdown section for a CI step summary: the model, the recipe, before/after, the gates."""
    source, artifact = Path(report.source["path"]).name, report.artifact.get("path")
    passes = ", ".join(p.name for p in report.passes) or "none"
    cpu = (report.target or {}).get("cpu", {})
    lines = [f"### onnxsmith optimize: `{source}` → " + (f"`{Path(artifact).name}`" if artifact else "nothing written"), "",
             f"Passes: `{passes}` on `{report.backend}` ({cpu.get('model', 'this CPU')}, {cpu.get('isa', '')})."
             + (f" `--auto` kept **{report.auto['kept']}**." if report.auto else ""), "",
             "| | before | after | change |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _summary_rows(report)]
    if report.gates:
        lines += ["", "| gate | limit | value | verdict |", "|---|---|---|---|"]
        lines += [f"| {row['gate']} | {_gate_value(row['gate'], row['limit'])} | {_gate_value(row['gate'], row['value'])} | "
                  f"{'passed' if row['passed'] else '**FAILED**'} |" for row in report.gates]
    lines += [""] + [f"- warning: {w}" for w in report.warnings]
    return "\n".join(lines).rstrip() + "\n"


def _summary_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(what, before, after, change) rows of the summary: the terminal table and the Markdown section."""
    s, lat = report.summary, report.summary.latency_ms
    rows = [("nodes", str(s.nodes["before"]), str(s.nodes["after"]), _ratio(s.nodes["before"], s.nodes["after"])),
            ("parameters", f"{s.params['before']:,}", f"{s.params['after']:,}", _ratio(s.params["before"], s.params["after"])),
            ("file size", human_bytes(s.bytes["before"]), human_bytes(s.bytes["after"]), _ratio(s.bytes["before"], s.bytes["after"]))]
    if lat["before"] is not None:
        rows.append((f"latency ({report.backend}, median)", f"{lat['before']:.3f} ms", f"{lat['after']:.3f} ms", speedup_text(lat)))
        if lat.get("speedup_iqr"):
            rows.append(("speedup per round (IQR)", "", "", spread_text(lat)))
        if lat.get("as_is"):  # the original as the runtime compiles it when told nothing: the user's alternative
            as_is = lat["as_is"]
            rows.append((f"vs {report.backend}'s own defaults ({as_is['precision']})", f"{as_is['before']:.3f} ms",
                         f"{as_is['after']:.3f} ms", speedup_text(as_is)))
    rows.append((_drift_label(report.accuracy["metric"] if report.accuracy else "drift"), "", f"{s.drift:.3g}", ""))
    return rows


def _drift_label(metric: str) -> str:
    """What the drift number is of: "drift" itself, or a task metric's ("top1 drift")."""
    return "drift" if metric == "drift" else f"{metric} drift"


def speedup_text(latency: dict) -> str:
    """"1.32x faster", "0.91x, slower", "1.03x, within the noise": a ratio is a change only when it held in most rounds."""
    verdict = latency.get("verdict")
    if verdict is None:
        return f"{latency['speedup']:.2f}x speed"
    return f"{latency['speedup']:.2f}x faster" if verdict == "faster" else f"{latency['speedup']:.2f}x, {verdict}"


def spread_text(latency: dict) -> str:
    low, high = latency["speedup_iqr"]
    return f"{low:.2f}-{high:.2f}x over {latency['rounds']} rounds"


def _gate_value(gate: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    return {"min_speedup": f"{value:.2f}x", "max_size": human_bytes(int(value))}.get(gate, f"{value:.4g}")


def auto_candidate(candidate: Candidate, passes: str) -> None:
    """The header over one ``--auto`` candidate's pass lines (stderr, like the pass lines)."""
    runtime = f", runtime {candidate.precision}" if candidate.precision != "fp32" else ""
    stderr.print(f"[bold]--auto {candidate.name}[/bold] [dim]({passes}{runtime})[/dim]")


def auto_search(report: Report) -> None:
    """The ``--auto`` search table: every candidate, its measured speed, size, metric and verdict."""
    auto = report.auto
    budget = auto["budget"]
    drift = _drift_label(budget["metric"])
    table = folding_table("candidate", "speedup (IQR)", "size", drift, "verdict", "build s",
                          title=f"--auto on {report.backend}: budget {budget['metric']} <= {budget['max_drift']:g}", title_justify="left")
    for c in auto["candidates"]:
        table.add_row(c["name"], ratio_with_spread(c["speedup"], *(c.get("speedup_iqr") or (None, None))), human_bytes(c["bytes"]) if c["bytes"] else "",
                      f"{c['drift']:.3g}" if c["drift"] is not None else "", c["verdict"], f"{c['seconds']:.1f}" if c["seconds"] else "")
    stdout.print(table)
    stdout.print(f"base of the other candidates: {auto['base']['passes']} ({auto['base']['why']})")
    for line in auto["advice"]:
        stdout.print(f"[bold]hint:[/bold] {line}")


def _ratio(before: int | None, after: int | None) -> str:
    if not before or after is None:
        return ""
    change = (after - before) / before * 100
    return f"{change:+.1f}%"
