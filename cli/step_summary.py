"""CI step summaries: with ``GITHUB_STEP_SUMMARY`` set (GitHub Actions; any CI can set it to
a file path), ``optimize``, ``batch`` and ``profile`` append a short Markdown section there."""

from __future__ import annotations

import os

__all__ = ["append_step_summary"]


def append_step_summary(markdown: str) -> None:
    """Append ``markdown`` (one section) to the step summary file, if the environment names one."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(markdown.rstrip("\n") + "\n\n")
