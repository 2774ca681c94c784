"""The two output sinks: results on stdout, progress and errors on stderr.

Everything printed through them passes a render hook that shows control characters as
visible escapes (``\\x1b``): names, doc strings and producers come from untrusted models
and data files, and a raw escape sequence in one would reach the user's terminal (an OSC 52
clipboard write, a screen clear). Rich's own styling and cursor control are untouched: they
are added after the text, or carried as control segments.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderHook, RenderResult
from rich.segment import Segment
from rich.table import Column, Table

__all__ = ["clean", "folding_table", "print_json", "stderr", "stdout"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1


def clean(text: str) -> str:
    """``text`` with every control character but tab and newline shown as a visible escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Cleaned:
    """A renderable whose text segments are ``clean``ed."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.renderable, options):
            yield segment if segment.control else Segment(clean(segment.text), segment.style)


class _CleanHook(RenderHook):
    def process_renderables(self, renderables: list[RenderableType]) -> list[RenderableType]:
        return [_Cleaned(r) for r in renderables]


stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)
for _console in (stdout, stderr):
    _console.push_render_hook(_CleanHook())


def folding_table(*headers: str, **options: Any) -> Table:
    """A rich Table whose cells fold onto another line where they do not fit, instead of being
    cut off with an ellipsis: on an 80-column terminal or in a pipe every name stays whole."""
    return Table(*(Column(header, overflow="fold") for header in headers), **options)


def print_json(data: Any) -> None:
    """One JSON document on stdout, unstyled, so it can be piped to jq (json escapes control characters)."""
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
