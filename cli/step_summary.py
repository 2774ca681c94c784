"""CI step summaries: with ``GITHUB_STEP_SUMMARY`` set (GitHub Actions; any CI can set it to
a file path), ``optimize``, ``batch`` and ``profile`` append a short Markdown section there."""

from __future__ import annotations

import logging
import os

__all__ = ["append_step_summary", "step_summary_writes"]

logger = logging.getLogger(__name__)


def step_summary_writes() -> list[tuple[str, str, str]]:
    """The step summary file as a planned write (paths_guard's ``Write``), where the environment
    names one: a command checks it with its other writes before any work, so a summary path
    that names the input model or cannot be written is refused before anything runs."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    return [("the step summary file ($GITHUB_STEP_SUMMARY)", path, "point GITHUB_STEP_SUMMARY at a file of its own")] if path else []


def append_step_summary(markdown: str) -> None:
    """Append ``markdown`` (one section) to the step summary file, if the environment names one.

    The command's work is done by now (its artifact written), so a summary that cannot be
    appended is a warning, not a failure of the command."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        logger.warning("could not append to the step summary %s: %s", path, getattr(e, "strerror", None) or e)
