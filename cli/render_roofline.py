"""The roofline plot of a profile as inline SVG: layers against this machine's two ceilings.

Both axes are logarithmic: arithmetic intensity (FLOP per byte moved) across, achieved
GFLOP/s up. The memory ceiling (bandwidth x intensity) rises to the ridge point, the compute
ceiling is flat after it; both were measured on this machine (core/ceilings.py) and the plot
says how. Each layer with FLOPs is a point (area by its time); the slowest are labelled next
to their points, each label placed where it covers no other label, no labelled point and no
ceiling label (a leader line joins a label moved away from its point).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from onnxsmith.ceilings import Ceilings
from onnxsmith.cli.render_profile import named

__all__ = ["COMPUTE", "LABELLED", "MEMORY", "POINT", "roofline_svg", "text_width"]

COMPUTE, MEMORY, POINT = "#c0392b", "#1e8449", "#2f6fb0"
LABELLED = 5  # the slowest layers get their name beside their point
WIDTH, HEIGHT = 1000, 580
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 62, 56  # the plot area's margins
_LABEL_SIZE = 11
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def text_width(text: str, size: float) -> float:
    """A generous estimate of a text's width in px (DejaVu/Liberation Sans average under 0.6 em)."""
    return len(text) * size * 0.62


def roofline_svg(profile: dict[str, Any], ceilings: Ceilings | None) -> str:
    """The roofline of ``profile``'s layers, with ``ceilings`` (none: the points alone)."""
    points = [layer for layer in profile["layers"] if layer.get("intensity") and layer.get("gflops_per_s")]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" class="roofline">']
    if not points:
        out.append(f'<text x="{LEFT}" y="{HEIGHT / 2}">no layer with FLOPs to place</text></svg>')
        return "".join(out)
    xs = [math.log10(p["intensity"]) for p in points]
    ys = [math.log10(p["gflops_per_s"]) for p in points]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    if ceilings:
        ridge = math.log10(ceilings.ridge)
        x_lo, x_hi = min(x_lo, ridge - 1), max(x_hi, ridge + 1)
        y_hi = max(y_hi, math.log10(ceilings.peak_gflops) + 0.35)  # room for the compute label above its line
    x0, x1 = math.floor(x_lo), max(math.ceil(x_hi), math.floor(x_lo) + 1)
    y0, y1 = math.floor(y_lo), max(math.ceil(y_hi), math.floor(y_lo) + 1)

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)

    def py(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    out += _axes(x0, x1, y0, y1, px, py)
    taken: list[Box] = []
    if ceilings:
        out += _ceilings(ceilings, x0, x1, y0, px, py, taken)
    else:
        out.append(f'<text x="{LEFT}" y="18" font-size="12">no ceilings: this machine\'s peak and bandwidth were not measured</text>')
    peak_ms = max(p["median_ms"] for p in points) or 1.0
    circles = []
    for point, x, y in zip(points, xs, ys, strict=True):
        radius = 3 + 9 * math.sqrt(point["median_ms"] / peak_ms)
        circles.append((px(x), py(y), radius))
        hover = (f"{named(point)} ({point['op_type']}, {point['precision']}): {point['intensity']:.3g} FLOP/B, "
                 f"{point['gflops_per_s']:.3g} GFLOP/s, {point['median_ms']:.3f} ms")
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius:.1f}" fill="{POINT}" fill-opacity="0.55" stroke="#123">'
                   f"<title>{escape(hover)}</title></circle>")
    slowest = sorted(range(len(points)), key=lambda i: -points[i]["median_ms"])[:LABELLED]
    dots = [(cx - r, cy - r, cx + r, cy + r) for cx, cy, r in circles]
    taken += [dots[i] for i in slowest]
    for i in slowest:
        out.append(_point_label(points[i], circles[i], taken, dots))
    out.append("</svg>")
    return "".join(out)


def _axes(x0: int, x1: int, y0: int, y1: int, px, py) -> list[str]:
    out = []
    for decade in range(x0, x1 + 1):
        out.append(f'<line x1="{px(decade):.1f}" y1="{TOP}" x2="{px(decade):.1f}" y2="{HEIGHT - BOTTOM}" stroke="#ddd"/>'
                   f'<text x="{px(decade):.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" text-anchor="middle">{_decade(decade)}</text>')
    for decade in range(y0, y1 + 1):
        out.append(f'<line x1="{LEFT}" y1="{py(decade):.1f}" x2="{WIDTH - RIGHT}" y2="{py(decade):.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{py(decade) + 4:.1f}" font-size="11" text-anchor="end">{_decade(decade)}</text>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 14}" font-size="12" text-anchor="middle">'
               "arithmetic intensity (FLOP per byte moved)</text>"
               f'<text x="16" y="{(TOP + HEIGHT - BOTTOM) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 16 {(TOP + HEIGHT - BOTTOM) / 2})">achieved GFLOP/s</text>')
    return out


def _ceilings(c: Ceilings, x0: int, x1: int, y0: int, px, py, taken: list[Box]) -> list[str]:
    """The memory ceiling up to the ridge, the compute ceiling after it, their labels, and
    where they come from (a line above the plot)."""
    ridge, peak, bw = math.log10(c.ridge), math.log10(c.peak_gflops), math.log10(c.bandwidth_gbs)
    start = max(x0, y0 - bw)  # where the memory ceiling enters the plot
    mem = (px(start), py(bw + start), px(ridge), py(peak))
    out = [
        (f'<line class="ceiling compute" x1="{px(ridge):.1f}" y1="{py(peak):.1f}" x2="{px(x1):.1f}" y2="{py(peak):.1f}" '
         f'stroke="{COMPUTE}" stroke-width="2.5"><title>{escape(c.compute_how)}</title></line>'),
        (f'<line class="ceiling memory" x1="{mem[0]:.1f}" y1="{mem[1]:.1f}" x2="{mem[2]:.1f}" y2="{mem[3]:.1f}" '
         f'stroke="{MEMORY}" stroke-width="2.5"><title>{escape(c.memory_how)}</title></line>'),
    ]
    compute_text = f"compute ceiling {c.peak_gflops:.0f} GFLOP/s (fp32 GEMM)"
    width = text_width(compute_text, _LABEL_SIZE)
    x_text = max(px(x1) - 6 - width, px(ridge) + 6)
    out.append(f'<text class="ceiling-label compute" x="{x_text:.1f}" y="{py(peak) - 6:.1f}" font-size="{_LABEL_SIZE}" '
               f'fill="{COMPUTE}">{escape(compute_text)}</text>')
    taken.append((x_text, py(peak) - 6 - _LABEL_SIZE, x_text + width, py(peak) - 2))
    memory_text = f"memory ceiling {c.bandwidth_gbs:.1f} GB/s"
    angle = math.degrees(math.atan2(mem[3] - mem[1], mem[2] - mem[0]))
    along = 0.12  # from the line's start, the label's start, written along the line above it
    lx, ly = mem[0] + along * (mem[2] - mem[0]), mem[1] + along * (mem[3] - mem[1])
    out.append(f'<text class="ceiling-label memory" x="{lx:.1f}" y="{ly - 6:.1f}" font-size="{_LABEL_SIZE}" fill="{MEMORY}" '
               f'transform="rotate({angle:.2f} {lx:.1f} {ly:.1f})">{escape(memory_text)}</text>')
    w = text_width(memory_text, _LABEL_SIZE)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    corners = [(lx + dx * cos - dy * sin, ly + dx * sin + dy * cos) for dx in (0, w) for dy in (-6 - _LABEL_SIZE, -2)]
    taken.append((min(x for x, _ in corners), min(y for _, y in corners), max(x for x, _ in corners), max(y for _, y in corners)))
    lines = (f"Ceilings measured on this machine, {c.machine}, the fastest of short runs:",
             f"compute: {c.compute_how}", f"memory: {c.memory_how}")
    for i, line in enumerate(lines):
        out.append(f'<text class="ceiling-source" x="{LEFT}" y="{15 + 14 * i}" font-size="11" fill="#444">'
                   f"{escape(_fit(line, WIDTH - LEFT - RIGHT, 11))}<title>{escape(' '.join(lines))}</title></text>")
    return out


def _point_label(point: dict[str, Any], circle: tuple[float, float, float], taken: list[Box], dots: list[Box]) -> str:
    """A slow layer's name and time beside its point, at the first place around it that covers
    no label, no labelled point and no ceiling label (and, where one is left, no other point)."""
    cx, cy, r = circle
    text = f"{_fit(named(point), 200, _LABEL_SIZE)} {point['median_ms']:.3f} ms"
    w, h = text_width(text, _LABEL_SIZE), _LABEL_SIZE + 2
    candidates = []
    for step in range(-14, 15):
        for side in (1, -1):
            for reach in (4, 24, 60):
                x = cx + side * (r + reach)
                candidates.append((x if side > 0 else x - w, cy - h / 2 + step * (h + 2)))
    inside = [c for c in candidates if LEFT + 2 <= c[0] and c[0] + w <= WIDTH - RIGHT - 2 and TOP <= c[1] and c[1] + h <= HEIGHT - BOTTOM - 2]
    inside.sort(key=lambda c: math.dist((cx, cy), (min(max(cx, c[0]), c[0] + w), min(max(cy, c[1]), c[1] + h))))  # nearest first
    for obstacles in (taken + dots, taken):
        for left, top in inside:
            box = (left, top, left + w, top + h)
            if not any(_overlap(box, other) for other in obstacles):
                taken.append(box)
                leader = ""
                if abs(top + h / 2 - cy) > r or min(abs(left - cx), abs(left + w - cx)) > r + 6:  # away from its point: join them
                    edge = left if left > cx else left + w
                    leader = f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{edge:.1f}" y2="{top + h / 2:.1f}" stroke="#555" stroke-width="0.8"/>'
                return (f'{leader}<text class="point-label" x="{left:.1f}" y="{top + h - 3:.1f}" font-size="{_LABEL_SIZE}" fill="#111" '
                        f'stroke="#fafafa" stroke-width="3" paint-order="stroke">{escape(text)}<title>{escape(named(point))}</title></text>')
    return ""  # nowhere free: the layer stays in the table and its point's hover text


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fit(text: str, width: float, size: float) -> str:
    """``text`` cut with an ellipsis to about ``width`` px."""
    chars = max(int(width / (size * 0.62)), 4)
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _decade(power: int) -> str:
    return {-3: "0.001", -2: "0.01", -1: "0.1", 0: "1", 1: "10", 2: "100", 3: "1k", 4: "10k", 5: "100k"}.get(power, f"1e{power}")
