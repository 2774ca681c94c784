"""The two output sinks: results on stdout, progress and errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout, unstyled, so it can be piped to jq."""
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
