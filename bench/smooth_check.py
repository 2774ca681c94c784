#!/usr/bin/env python
"""MiniLM: int8 on its MatMuls with and without smooth, under the default guard budget.

    python bench/smooth_check.py

Prints, per variant, the layers the guard left in float, the quantized ones, the drift the
pipeline measured and the task score (mean-pooled embedding cosine) on held-out sentences.
Issue 5's smooth target: fewer layers left in float than without smooth, the same bound met.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks as task_lib  # noqa: E402

from onnxsmith.optimize import OptimizeOptions, optimize  # noqa: E402
from onnxsmith.recipe import parse_pipeline, validate_recipe  # noqa: E402
from onnxsmith.runtime import make_session, run_all  # noqa: E402
from onnxsmith.sources import load_source  # noqa: E402

VARIANTS = {
    "plain": "quantize{mode=int8,ops=[MatMul]}",
    "smooth (alpha 0.5)": "smooth,quantize{mode=int8,ops=[MatMul]}",
    "smooth{search=true}": "smooth{search=true},quantize{mode=int8,ops=[MatMul]}",
}


def main() -> None:
    task = task_lib.get_task("minilm")
    calibration, held_out = task.calibration(32), task.evaluation(32)
    reference = run_all(make_session(load_source(str(task.model_path())).ir), held_out)
    with tempfile.TemporaryDirectory(prefix="smooth-check-") as tmp:
        npz = Path(tmp) / "calibration.npz"
        np.savez(npz, **{name: np.stack([feed[name] for feed in calibration]) for name in calibration[0]})
        for label, passes in VARIANTS.items():
            recipe = validate_recipe({"passes": parse_pipeline(passes), "calibration": {"data": str(npz)}})
            out = Path(tmp) / "artifact.onnx"
            report = optimize(str(task.model_path()), out, recipe, OptimizeOptions(latency_rounds=0))
            counts = report.passes[-1].counts
            score = task.score(reference, run_all(make_session(load_source(str(out)).ir), held_out), held_out)
            print(f"{label}: {counts.get('layers_float')} float, {counts.get('layers_quantized')} int8, "
                  f"drift {report.summary.drift:.4f}, cosine {score['cosine']:.4f} (min {score['cosine_min']:.4f})", flush=True)


if __name__ == "__main__":
    main()
