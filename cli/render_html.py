"""A profile as one self-contained HTML page: inline SVG plots and a table, no scripts, no network.

Plots: per-layer time (before and after with --compare), time by op type, and a roofline of
the layers against this machine's measured compute and memory ceilings (render_roofline).
Every bar's value is written past the longest bar of its row, so no label covers a bar or
another label; hovering a bar or point shows its numbers (SVG ``<title>``). The layer
table has a fixed layout that fits the page (1400 px and narrower): long names wrap, the
kernel and the origin are cut with an ellipsis and shown whole on hover; share is a
percentage, FLOPs, parameters and bytes carry k/M/G.
"""

from __future__ import annotations

from html import escape
from typing import Any

from onnxsmith.ceilings import Ceilings
from onnxsmith.cli.render_profile import divergence_line, layer_speedup, named, where
from onnxsmith.cli.render_roofline import COMPUTE, MEMORY, roofline_svg, text_width

__all__ = ["BAR_LAYERS", "html_page", "si"]

BAR_LAYERS = 30
_AFTER, _BEFORE = "#2f6fb0", "#c8a03c"
_BORDER = "#b9c3cf"  # the table's borders (the Chromium test finds the table's right edge by it)
_CSS = f"""body{{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}}h1{{font-size:20px}}
h2{{font-size:16px;margin-top:28px}}svg{{background:#fafafa;border:1px solid #eee;display:block;max-width:100%;height:auto}}
.legend span{{margin-right:14px}}p.note{{color:#555;font-size:12px;max-width:1000px}}
table{{border-collapse:collapse;font-size:12px;table-layout:fixed;width:100%}}
td,th{{border:1px solid {_BORDER};padding:2px 5px;text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}}
th{{background:#f1f4f7;white-space:normal;vertical-align:bottom}}td.name,th.name{{text-align:left;white-space:normal;overflow-wrap:anywhere}}
td.text,th.text{{text-align:left}}"""


def html_page(profile: dict[str, Any], title: str, ceilings: Ceilings | None = None) -> str:
    """The whole page for ``profile`` (``Profile.to_dict()``), titled ``title``; ``ceilings``
    (this machine's, measured: core/ceilings.py) draw the roofline's roofs."""
    total = profile["total"]
    compare = profile.get("compare")
    summary = (f"{escape(profile['backend'])} in {escape(profile.get('precision', 'fp32'))} on {escape(where(profile))}: "
               f"{total['median_ms']:.3f} ms median, {total['p90_ms']:.3f} ms p90 over {profile['runs']} runs; "
               f"layers sum {total['layers_sum_ms']:.3f} ms ({total['coverage']:.0%} coverage); session {total['session_ms']:.0f} ms")
    if compare:
        summary += f"<br>{escape(divergence_line(compare))}"
    legend = (f'<p class="legend"><span style="color:{_AFTER}">&#9632; this model</span>'
              f'<span style="color:{_BEFORE}">&#9632; {escape(compare["other"])}</span></p>') if compare else ""
    roof_note = ('<p class="note">Each point is a layer with FLOPs (area by its time); the slowest '
                 f'are named. <span style="color:{COMPUTE}">Compute ceiling</span>: the fastest fp32 GEMM this machine ran; '
                 f'<span style="color:{MEMORY}">memory ceiling</span>: its fastest large copy, both measured when this page '
                 "was written (hover a ceiling for how). A layer above the compute ceiling ran in a narrower type (int8, "
                 "bf16); one above the memory ceiling kept its tensors in cache.</p>") if ceilings else ""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>", f"<p>{summary}</p>",
        f"<h2>Time per layer (slowest {min(BAR_LAYERS, len(profile['layers']))})</h2>", legend, _layer_bars(profile),
        "<h2>Time by op type</h2>", _op_bars(profile),
        "<h2>Roofline: arithmetic intensity vs achieved throughput</h2>", roofline_svg(profile, ceilings), roof_note,
        f"<h2>All {len(profile['layers'])} layers</h2>", _table(profile), "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def si(value: float | None, unit: str = "") -> str:
    """``value`` with a k/M/G/T prefix and three significant digits: 1183744 -> ``1.18 M``."""
    if value is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip() if isinstance(value, float) else f"{value} {unit}".rstrip()


def _bars(rows: list[tuple[str, list[tuple[float, str]], str, str]], css: str) -> str:
    """Horizontal bars: per row a label, one or more (value, colour) bars, a hover text and
    the value text, written past the row's longest bar (the bars' scale leaves room for it)."""
    label_w, value_w, width, row_h = 330, 250, 1000, 20
    bar_w = width - label_w - value_w - 10
    peak = max((v for _, bars, _, _ in rows for v, _ in bars), default=0) or 1.0
    height = row_h * len(rows) + 16
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="bars {css}">']
    for i, (label, bars, hover, value) in enumerate(rows):
        y = 8 + i * row_h
        shown = _fit(label, label_w - 14, 11)
        out.append(f'<text class="bar-name" x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">{escape(shown)}'
                   f"<title>{escape(label)}</title></text>")
        thickness = (row_h - 4) / len(bars)
        longest = 0.0
        for j, (amount, colour) in enumerate(bars):
            length = max(bar_w * amount / peak, 1.0)
            longest = max(longest, length)
            out.append(f'<rect class="bar" x="{label_w}" y="{y + 2 + j * thickness:.1f}" width="{length:.1f}" height="{thickness:.1f}" '
                       f'fill="{colour}"><title>{escape(hover)}</title></rect>')
        out.append(f'<text class="value" x="{label_w + longest + 6:.1f}" y="{y + 14}" font-size="10" fill="#333">{escape(value)}</text>')
    out.append("</svg>")
    return "".join(out)


def _layer_bars(profile: dict[str, Any]) -> str:
    rows = []
    compared = bool(profile.get("compare"))
    for layer in profile["layers"][:BAR_LAYERS]:
        bars = [(layer["median_ms"], _AFTER)]
        value = f"{layer['median_ms']:.3f} ms, {layer['share']:.1%}"
        if compared:
            before = layer.get("before_ms")
            bars.append((before or 0.0, _BEFORE))
            if before is not None:
                value = f"{layer['median_ms']:.3f} ms (before {before:.3f}" + (f", {layer['speedup']:.2f}x)" if layer.get("speedup") else ")")
        hover = (f"{named(layer)} ({layer['op_type']}, {layer['kernel']}): {layer['median_ms']:.3f} ms, {layer['share']:.1%}, "
                 f"{si(layer['flops'], 'FLOP')}, {si(layer['bytes'], 'B')}")
        rows.append((named(layer), bars, hover, value))
    return _bars(rows, "layers")


def _op_bars(profile: dict[str, Any]) -> str:
    rows = [(e["op_type"], [(e["median_ms"], _AFTER)],
             f"{e['op_type']}: {e['count']} layers, {e['median_ms']:.3f} ms, {e['share']:.1%}, {si(e.get('flops'), 'FLOP')}",
             f"{e['median_ms']:.3f} ms, {e['share']:.1%}") for e in profile["by_op_type"]]
    return _bars(rows, "ops")


# header, css class, width (%), cell text, hover text (None: none)
_Column = tuple[str, str, float, Any, Any]
_COLUMNS: list[_Column] = [
    ("layer", "name", 14, named, lambda l: f"{named(l)}: {l['op_type']} on {l['provider']}"),
    ("op / kernel", "text", 11, lambda l: _op_kernel(l), lambda l: f"{l['op_type']}, kernel {l['kernel']}"),
    ("prec", "text", 3.5, lambda l: l["precision"], None),
    ("median ms", "", 5, lambda l: f"{l['median_ms']:.3f}", None),
    ("p90 ms", "", 4.5, lambda l: f"{l['p90_ms']:.3f}", None),
    ("share", "", 4.5, lambda l: f"{l['share']:.1%}", None),
    ("FLOPs", "", 5, lambda l: si(l["flops"] or None), lambda l: f"{l['flops']:,} FLOPs (a MAC is 2)"),
    ("params", "", 5, lambda l: si(l["params"] or None), lambda l: f"{l['params']:,} parameters"),
    ("bytes", "", 5, lambda l: si(l["bytes"] or None, "B"), lambda l: f"{l['bytes']:,} bytes moved"),
    ("FLOP/B", "", 5, lambda l: _num(l.get("intensity"), ".3g"), lambda l: "arithmetic intensity: FLOPs per byte moved"),
    ("GFLOP/s", "", 5.5, lambda l: _num(l.get("gflops_per_s"), ".3g"), None),
]


def _compared(compare: dict[str, Any]) -> list[_Column]:
    """The columns --compare adds; a layer whose output matches exactly says so under SQNR."""
    exact = set(compare.get("exact") or ())

    def sqnr(layer: dict[str, Any]) -> str:
        if layer.get("sqnr_db") is None:
            return "exact" if layer["name"] in exact else "-"
        return f"{layer['sqnr_db']:.1f}"

    return [
        ("before ms", "", 5, lambda l: _num(l.get("before_ms"), ".3f"), None),
        ("speedup", "", 5.5, layer_speedup, None),
        ("SQNR dB", "", 4.5, sqnr, None),
    ]


_ORIGIN: _Column = ("origin", "text", 0, lambda l: _origin(l), lambda l: _origin(l, every=True))


def _table(profile: dict[str, Any]) -> str:
    columns = [*_COLUMNS, *(_compared(profile["compare"]) if profile.get("compare") else []), _ORIGIN]
    rest = max(100 - sum(c[2] for c in columns), 6)  # the origin column takes what is left
    cols = "".join(f'<col style="width:{c[2] or rest:g}%">' for c in columns)
    head = "".join(f'<th class="{c[1]}">{escape(c[0])}</th>' for c in columns)
    rows = []
    for layer in profile["layers"]:
        cells = []
        for _, css, _, text, hover in columns:
            tip = f' title="{escape(hover(layer))}"' if hover else ""
            cells.append(f'<td class="{css}"{tip}>{escape(str(text(layer)))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="layers"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _op_kernel(layer: dict[str, Any]) -> str:
    kernel = layer["kernel"].removeprefix("com.microsoft::").removeprefix("com.microsoft.")  # the whole name is on hover
    return layer["op_type"] if kernel == layer["op_type"] else f"{layer['op_type']} / {kernel}"


def _origin(layer: dict[str, Any], every: bool = False) -> str:
    """The original nodes a layer stands for, its own name first; Constants only on hover."""
    if layer.get("inserted_by"):
        return f"(inserted by {layer['inserted_by']})"
    names = sorted(layer["origin"], key=lambda n: n != layer["name"])
    shown = names if every else [n for n in names if not n.startswith("Constant")] or names
    return ", ".join(shown)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fit(text: str, width: float, size: float) -> str:
    """``text`` cut with an ellipsis where it would pass ``width`` px."""
    if text_width(text, size) <= width:
        return text
    chars = max(int(width / text_width("x", size)) - 1, 3)
    return text[:chars] + "\u2026"
