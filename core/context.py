"""The one explicit context a pass receives: backend, data, reference outputs, seed, caches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onnxsmith.errors import DataError
from onnxsmith.measure import Measurements
from onnxsmith.metrics import DriftMetric, default_drift, first_nan

if TYPE_CHECKING:
    from onnxsmith.backend import Backend
    from onnxsmith.costs import CostTable
    from onnxsmith.data import Dataset
    from onnxsmith.runtime import Outputs

__all__ = ["Context"]


@dataclass
class Context:
    """Everything a pass may read besides the model; passes never read globals or env vars.

    ``reference`` holds the original model's outputs on ``evaluation``; ``measure`` is the
    one service that runs models to read their tensors and outputs (measure.py): passes and
    the pipeline share its caches, so activations are collected once per pipeline.
    """

    backend: Backend | None = None
    calibration: Dataset | None = None
    evaluation: Dataset | None = None
    reference: list[Outputs] | None = None
    seed: int = 0
    max_drift: float | None = None  # the accuracy budget (recipe accuracy.max_drift); lossy passes guard it
    measure: Measurements = field(default_factory=Measurements)
    metric: DriftMetric = default_drift  # what max_drift budgets; --metric NAME or package.module:function
    costs: CostTable | None = None  # per-layer int8 costs measured on the target (--costs): used instead of timing here

    def drift(self, candidate: list[Outputs]) -> float:
        """The metric of ``candidate`` outputs (on ``evaluation``) against ``reference``; infinite
        where a candidate output holds NaN, whatever the metric (a task metric may not see it)."""
        if self.reference is None or self.evaluation is None:
            raise ValueError("drift needs ctx.reference and ctx.evaluation")
        if first_nan(candidate):
            return math.inf
        return self.metric(self.reference, candidate, self.evaluation.feeds())

    def require_calibration(self, pass_name: str) -> Dataset:
        """The calibration set, or a DataError telling the user how to give one."""
        if self.calibration is None:
            raise DataError(
                f"pass '{pass_name}' needs calibration data",
                "pass --calib PATH (an .npz keyed by input name, or a folder of .npz/.npy files or images)",
            )
        return self.calibration
