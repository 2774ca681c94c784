"""A profile (``Profile.to_dict()``) as a terminal table, Markdown or CSV.

The Markdown is short on purpose (totals, the top layers, the top op types) so it fits a
CI step summary; CSV has every layer and every field.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.markup import escape

from onnxsmith.cli.console import folding_table, stdout

__all__ = ["brief_compare", "csv_text", "divergence_line", "layer_speedup", "markdown", "named", "table", "where"]

TABLE_ROWS = 25
WIDE_COLUMNS = 150  # terminal width from which the layer table has every column
MARKDOWN_ROWS = 10
BRIEF_ROWS = 8
NOISE_MARK_NOTE = "≈: a layer's before and after times differ by no more than their run-to-run spread (IQR): no change"
CSV_FIELDS = ("name", "origin", "op_type", "kernel", "provider", "precision", "median_ms", "p90_ms", "share", "flops", "params",
              "bytes", "intensity", "gflops_per_s", "module", "inserted_by", "node", "tensor", "order",
              "before_ms", "after_ms", "speedup", "speedup_within_noise", "sqnr_db")


def table(profile: dict[str, Any], rows: int = TABLE_ROWS) -> None:
    """Totals, the slowest layers and the time by op type, as rich tables on stdout. Below
    WIDE_COLUMNS (an 80-column terminal, a pipe) the layer table keeps the columns that
    matter and leaves kernel, p90, FLOPs and origin to --format csv/json."""
    stdout.print(_totals_line(profile))
    compare = profile.get("compare")
    wide = stdout.width >= WIDE_COLUMNS
    title = f"Slowest {min(rows, len(profile['layers']))} of {len(profile['layers'])} layers"
    if not wide:
        title += " (a wider terminal shows kernel, p90, FLOPs and origin; --format csv has every field)"
    compared = ["before ms", "speedup", "SQNR dB"] if compare else []
    columns = (["layer", "op / kernel", "prec", "median ms", "p90 ms", "share", *compared, "GFLOP", "GFLOP/s", "origin"] if wide
               else ["layer", "op", "prec", "median ms", "share", *compared])
    exact = set(compare["exact"]) if compare else set()
    layers = folding_table(*columns, title=title, title_justify="left")
    for layer in profile["layers"][:rows]:
        cells = _layer_cells(layer, exact)
        layers.add_row(*(cells[column] for column in columns))
    stdout.print(layers)
    ops = folding_table("op type", "layers", "median ms", "share", title="Time by op type", title_justify="left")
    for entry in profile["by_op_type"]:
        ops.add_row(escape(entry["op_type"]), str(entry["count"]), f"{entry['median_ms']:.3f}", f"{entry['share']:.1%}")
    stdout.print(ops)
    if compare:
        stdout.print(escape(divergence_line(compare)))
        stdout.print(NOISE_MARK_NOTE)


def brief_compare(profile: dict[str, Any], rows: int = BRIEF_ROWS) -> None:
    """The slowest layers of an optimize run's after-profile, with their time before: what
    ``optimize`` prints under its summary (``onnxsmith profile`` gives the whole table)."""
    layers = folding_table("layer", "op", "prec", "before ms", "after ms", "speedup",
                           title=f"Per-layer profile on {profile['backend']} ({profile['runs']} runs each): slowest "
                                 f"{min(rows, len(profile['layers']))} of {len(profile['layers'])} layers after", title_justify="left")
    for layer in profile["layers"][:rows]:
        layers.add_row(escape(named(layer)), escape(layer["op_type"]), layer["precision"], _num(layer.get("before_ms"), ".3f"),
                       f"{layer['median_ms']:.3f}", layer_speedup(layer))
    stdout.print(layers)
    stdout.print(NOISE_MARK_NOTE)


def markdown(profile: dict[str, Any], model: str, rows: int = MARKDOWN_ROWS) -> str:
    """A short Markdown summary of ``model``'s profile: totals, the top layers and op types (and the compare result)."""
    total = profile["total"]
    compare = profile.get("compare")
    lines = [
        f"### Profile of `{model}` on `{profile['backend']}` ({profile['runs']} runs)",
        "",
        f"Ran in **{profile.get('precision', 'fp32')}** on {where(profile)}.",
        "",
        f"End-to-end **{total['median_ms']:.3f} ms** median, {total['p90_ms']:.3f} ms p90; layers add up to "
        f"{total['layers_sum_ms']:.3f} ms ({total['coverage']:.0%} coverage); session created in {total['session_ms']:.0f} ms.",
    ]
    if compare:
        lines += ["", divergence_line(compare)]
    header = ["layer", "op", "kernel", "median ms", "share", "precision"] + (["before ms", "speedup", "SQNR dB"] if compare else [])
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for layer in profile["layers"][:rows]:
        cells = [f"`{layer['name']}`", layer["op_type"], f"`{layer['kernel']}`", f"{layer['median_ms']:.3f}", f"{layer['share']:.1%}", layer["precision"]]
        if compare:
            cells += [_num(layer.get("before_ms"), ".3f"), layer_speedup(layer), _sqnr(layer, set(compare["exact"]))]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    top_ops = ", ".join(f"{e['op_type']} {e['share']:.0%}" for e in profile["by_op_type"][:6])
    lines += ["", *([NOISE_MARK_NOTE + ".", ""] if compare else []), f"Time by op type: {top_ops}.", ""]
    return "\n".join(lines)


def csv_text(profile: dict[str, Any]) -> str:
    """Every layer, one row each, every field (origin joined with ';')."""
    buffer = io.StringIO()
    compared = ("before_ms", "after_ms", "speedup", "speedup_within_noise", "sqnr_db")
    fields = [f for f in CSV_FIELDS if profile.get("compare") or f not in compared]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for layer in profile["layers"]:
        writer.writerow({**layer, "origin": ";".join(layer["origin"])})
    return buffer.getvalue()


def _totals_line(profile: dict[str, Any]) -> str:
    t = profile["total"]
    memory = f", peak RSS {t['peak_rss_mb']:.0f} MiB" if t.get("peak_rss_mb") else ""
    if t.get("kernel_overhead_us"):
        memory += f"; profiler overhead {t['kernel_overhead_us']:.1f} us/kernel (mean) taken off"
    return (f"[bold]{profile['backend']}[/bold] in {profile.get('precision', 'fp32')} on {where(profile)}: "
            f"{t['median_ms']:.3f} ms median, {t['p90_ms']:.3f} ms p90 over {profile['runs']} runs; "
            f"layers sum {t['layers_sum_ms']:.3f} ms ({t['coverage']:.0%} coverage); session {t['session_ms']:.0f} ms{memory}")


def where(profile: dict[str, Any]) -> str:
    """The CPU a profile ran on, with its ISA and threads: every timing names its machine."""
    target = profile.get("target") or {}
    cpu = target.get("measured_on") or target.get("cpu")
    if not cpu:
        return "an unnamed CPU"
    threads = target.get("threads") or "all"
    return f"{cpu['model']} ({cpu['isa']}, {threads} threads)"


def divergence_line(compare: dict[str, Any]) -> str:
    """The compare result in one sentence: end-to-end before/after and where accuracy breaks."""
    timing = compare.get("timing") or {}
    how = f"timed interleaved, {timing['rounds']} rounds" if timing.get("method") == "interleaved" else "from the two profiles"
    speed = f"{compare['before_ms']:.3f} ms before, {compare['after_ms']:.3f} ms after ({_speedup(compare['speedup'])}, {how})"
    first = compare.get("first_divergence")
    if first is None:
        return f"Compared with {compare['other']}: {speed}; every compared layer stays above {compare['threshold_db']:g} dB SQNR."
    return (f"Compared with {compare['other']}: {speed}; first layer below {compare['threshold_db']:g} dB SQNR: "
            f"{first['name']} ({_num(first['sqnr_db'], '.1f')} dB).")


def _layer_cells(layer: dict[str, Any], exact: set[str]) -> dict[str, str]:
    """Every column the layer table can show, by header."""
    return {
        "layer": escape(named(layer)), "op": escape(layer["op_type"]), "op / kernel": escape(f"{layer['op_type']} / {layer['kernel']}"),
        "prec": layer["precision"], "median ms": f"{layer['median_ms']:.3f}", "p90 ms": f"{layer['p90_ms']:.3f}",
        "share": f"{layer['share']:.1%}", "before ms": _num(layer.get("before_ms"), ".3f"), "speedup": layer_speedup(layer),
        "SQNR dB": _sqnr(layer, exact), "GFLOP": _num(layer["flops"] / 1e9 if layer["flops"] else None, ".3f"),
        "GFLOP/s": _num(layer["gflops_per_s"], ".1f"), "origin": escape(_origin(layer)),
    }


def named(layer: dict[str, Any]) -> str:
    """The layer's name, with its PyTorch module where the exporter recorded one."""
    return f"{layer['name']} ({layer['module']})" if layer.get("module") else layer["name"]


def _origin(layer: dict[str, Any]) -> str:
    if layer.get("inserted_by"):
        return f"(inserted by {layer['inserted_by']})"
    origin = layer["origin"]
    return ", ".join(origin[:3]) + (f" +{len(origin) - 3}" if len(origin) > 3 else "")


def _sqnr(layer: dict[str, Any], exact: set[str]) -> str:
    if layer.get("sqnr_db") is None:
        return "exact" if layer["name"] in exact else "-"
    return f"{layer['sqnr_db']:.1f}"


def _speedup(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def layer_speedup(layer: dict[str, Any]) -> str:
    """A layer's speedup, "≈1.03x" where its before and after times differ by less than their run-to-run spread."""
    text = _speedup(layer.get("speedup"))
    return f"≈{text}" if layer.get("speedup_within_noise") else text


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
