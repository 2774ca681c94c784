"""The accuracy guard for modes that need no calibration data (dynamic, fp16/bf16).

guard.py ranks layers by sensitivity on the calibration feeds. When the user gave none
(``--calib`` is optional for these modes), the held-out feeds stand in for them: the
ranking is then chosen on the data it is judged on, which the report says.
"""

from __future__ import annotations

import dataclasses

from onnxsmith.context import Context

__all__ = ["NOTE", "guard_context"]

NOTE = "guard: no calibration data, so layer sensitivity was ranked on the held-out feeds"


def guard_context(ctx: Context) -> tuple[Context, bool]:
    """(a context whose calibration set is the held-out set when it has none, whether it was replaced)."""
    if ctx.calibration is not None or ctx.evaluation is None:
        return ctx, False
    return dataclasses.replace(ctx, calibration=ctx.evaluation), True
