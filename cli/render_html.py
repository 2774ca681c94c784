"""A profile as one self-contained HTML page: inline SVG plots and a table, no scripts, no network.

Plots: per-layer time (before and after with --compare), time by op type, and a
roofline-style scatter of arithmetic intensity (FLOP/byte) against achieved GFLOP/s, both
axes logarithmic. Hovering a bar or point shows its numbers (SVG ``<title>``).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from onnxsmith.cli.render_profile import CSV_FIELDS, divergence_line

__all__ = ["html_page"]

BAR_LAYERS = 30
_AFTER, _BEFORE = "#2f6fb0", "#c8a03c"
_CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}svg{background:#fafafa;border:1px solid #eee}.legend span{margin-right:14px}"""


def html_page(profile: dict[str, Any], title: str) -> str:
    """The whole page for ``profile`` (``Profile.to_dict()``), titled ``title``."""
    total = profile["total"]
    compare = profile.get("compare")
    summary = (f"{escape(profile['backend'])}: {total['median_ms']:.3f} ms median, {total['p90_ms']:.3f} ms p90 over "
               f"{profile['runs']} runs; layers sum {total['layers_sum_ms']:.3f} ms ({total['coverage']:.0%} coverage); "
               f"session {total['session_ms']:.0f} ms")
    if compare:
        summary += f"<br>{escape(divergence_line(compare))}"
    legend = (f'<p class="legend"><span style="color:{_AFTER}">&#9632; this model</span>'
              f'<span style="color:{_BEFORE}">&#9632; {escape(compare["other"])}</span></p>') if compare else ""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>", f"<p>{summary}</p>",
        f"<h2>Time per layer (slowest {min(BAR_LAYERS, len(profile['layers']))})</h2>", legend, _layer_bars(profile),
        "<h2>Time by op type</h2>", _op_bars(profile),
        "<h2>Roofline view: arithmetic intensity vs achieved throughput</h2>", _roofline(profile),
        "<h2>All layers</h2>", _table(profile), "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _bars(rows: list[tuple[str, list[tuple[float, str]], str]], unit: str) -> str:
    """Horizontal bars: per row a label, one or more (value, colour) bars, and a hover text."""
    label_w, bar_w, row_h = 300, 520, 18
    peak = max((v for _, bars, _ in rows for v, _ in bars), default=0) or 1.0
    height = row_h * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{height}" role="img">']
    for i, (label, bars, hover) in enumerate(rows):
        y = 10 + i * row_h
        out.append(f'<text x="{label_w - 6}" y="{y + 12}" font-size="11" text-anchor="end">{escape(label[:48])}</text>')
        thickness = (row_h - 4) / len(bars)
        for j, (value, colour) in enumerate(bars):
            width = max(bar_w * value / peak, 1)
            out.append(f'<rect x="{label_w}" y="{y + j * thickness:.1f}" width="{width:.1f}" height="{thickness:.1f}" fill="{colour}">'
                       f"<title>{escape(hover)}</title></rect>")
        out.append(f'<text x="{label_w + bar_w * bars[0][0] / peak + 4:.1f}" y="{y + 12}" font-size="10">{bars[0][0]:.3f} {unit}</text>')
    out.append("</svg>")
    return "".join(out)


def _layer_bars(profile: dict[str, Any]) -> str:
    rows = []
    for layer in profile["layers"][:BAR_LAYERS]:
        bars = [(layer["median_ms"], _AFTER)]
        if profile.get("compare"):
            bars.append((layer.get("before_ms") or 0.0, _BEFORE))
        hover = f"{layer['name']} ({layer['op_type']}, {layer['kernel']}): {layer['median_ms']:.3f} ms, {layer['share']:.1%}"
        rows.append((layer["name"], bars, hover))
    return _bars(rows, "ms")


def _op_bars(profile: dict[str, Any]) -> str:
    rows = [(e["op_type"], [(e["median_ms"], _AFTER)], f"{e['op_type']}: {e['count']} layers, {e['median_ms']:.3f} ms, {e['share']:.1%}")
            for e in profile["by_op_type"]]
    return _bars(rows, "ms")


def _roofline(profile: dict[str, Any]) -> str:
    points = [layer for layer in profile["layers"] if layer.get("intensity") and layer.get("gflops_per_s")]
    width, height, pad = 760, 420, 56
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    if not points:
        out.append(f'<text x="{pad}" y="{height / 2}">no layer with FLOPs to place</text></svg>')
        return "".join(out)
    xs = [math.log10(p["intensity"]) for p in points]
    ys = [math.log10(p["gflops_per_s"]) for p in points]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs)) + (1 if math.ceil(max(xs)) == math.floor(min(xs)) else 0)
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys)) + (1 if math.ceil(max(ys)) == math.floor(min(ys)) else 0)

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def py(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    for decade in range(x0, x1 + 1):
        out.append(f'<line x1="{px(decade):.1f}" y1="{pad}" x2="{px(decade):.1f}" y2="{height - pad}" stroke="#ddd"/>'
                   f'<text x="{px(decade):.1f}" y="{height - pad + 16}" font-size="11" text-anchor="middle">1e{decade}</text>')
    for decade in range(y0, y1 + 1):
        out.append(f'<line x1="{pad}" y1="{py(decade):.1f}" x2="{width - pad}" y2="{py(decade):.1f}" stroke="#ddd"/>'
                   f'<text x="{pad - 6}" y="{py(decade) + 4:.1f}" font-size="11" text-anchor="end">1e{decade}</text>')
    out.append(f'<text x="{width / 2}" y="{height - 12}" font-size="12" text-anchor="middle">arithmetic intensity (FLOP/byte)</text>'
               f'<text x="14" y="{height / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {height / 2})">achieved GFLOP/s</text>')
    peak_ms = max(p["median_ms"] for p in points) or 1.0
    for point, x, y in zip(points, xs, ys):
        radius = 3 + 9 * math.sqrt(point["median_ms"] / peak_ms)
        hover = (f"{point['name']} ({point['op_type']}, {point['precision']}): {point['intensity']:.2f} FLOP/B, "
                 f"{point['gflops_per_s']:.2f} GFLOP/s, {point['median_ms']:.3f} ms")
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius:.1f}" fill="{_AFTER}" fill-opacity="0.55" stroke="#123">'
                   f"<title>{escape(hover)}</title></circle>")
    out.append("</svg>")
    return "".join(out)


def _table(profile: dict[str, Any]) -> str:
    fields = [f for f in CSV_FIELDS if f in (profile["layers"][0] if profile["layers"] else {})]
    head = "".join(f"<th>{escape(f)}</th>" for f in fields)
    rows = []
    for layer in profile["layers"]:
        cells = []
        for field in fields:
            value = layer.get(field)
            if isinstance(value, list):
                value = ", ".join(value)
            elif isinstance(value, float):
                value = f"{value:.4g}"
            cells.append(f"<td>{escape('' if value is None else str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
