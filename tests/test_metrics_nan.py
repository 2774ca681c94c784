"""The verifier and NaN (issue 17 item 3): NaN in a candidate output matches nothing, NaN in the
reference is a data error before any pass, and no metric can report a NaN output as close."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import onnx_ir as ir
import pytest

from conftest import FIXTURES
from onnxsmith.context import Context
from onnxsmith.data import load_dataset, model_inputs, split_dataset
from onnxsmith.errors import DataError, PassFailure
from onnxsmith.metrics import check_reference, compare_outputs, default_drift, first_nan, within_tolerance
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.pipeline import Pipeline
from onnxsmith.registry import create_pass
from onnxsmith.runtime import make_session, run_all
from onnxsmith.sources import load_source


def _outputs(*samples: list[float]) -> list[dict[str, np.ndarray]]:
    return [{"y": np.asarray([s], np.float32)} for s in samples]


REFERENCE = _outputs([1.0, -2.0, 3.0], [0.5, 0.25, 4.0])


def _with_nan(outputs, sample: int, index: int):
    copy = [{k: v.copy() for k, v in o.items()} for o in outputs]
    copy[sample]["y"][0, index] = np.nan
    return copy


def test_nan_in_a_candidate_is_never_within_tolerance():
    candidate = _with_nan(REFERENCE, 1, 2)
    assert within_tolerance(REFERENCE, candidate, rtol=1e-3, atol=1e-3) == "output 'y' is NaN on sample 1 where the original gives a number"
    # NaN against NaN is no match either (the reference is refused before it gets here)
    assert within_tolerance(candidate, candidate, rtol=1e-3, atol=1e-3) is not None


def test_nan_in_a_candidate_is_infinite_drift_in_every_number():
    candidate = _with_nan(REFERENCE, 0, 0)
    (drift,) = compare_outputs(REFERENCE, candidate).values()
    assert drift.max_abs == drift.mean_abs == drift.channel_error == math.inf
    assert drift.sqnr_db == -math.inf and drift.cosine == 0.0
    assert default_drift(REFERENCE, candidate) == math.inf
    same = compare_outputs(REFERENCE, REFERENCE)["y"]
    assert same.max_abs == 0 and same.sqnr_db == math.inf


def test_context_drift_is_infinite_for_nan_whatever_the_metric():
    """A task metric (argmax, matched detections) may not see a NaN; the context does."""
    evaluation = load_dataset(FIXTURES / "cnn.npz", model_inputs(load_source(str(FIXTURES / "cnn.onnx")).ir), samples=2)
    ctx = Context(evaluation=evaluation, reference=REFERENCE, metric=lambda reference, candidate, feeds: 0.0)
    assert ctx.drift(REFERENCE) == 0.0
    assert ctx.drift(_with_nan(REFERENCE, 1, 0)) == math.inf


def test_a_reference_with_nan_is_a_data_error_naming_output_and_sample():
    assert first_nan(REFERENCE) is None
    assert first_nan(_with_nan(REFERENCE, 1, 1)) == ("y", 1)
    with pytest.raises(DataError, match="outputs NaN in 'y' on sample 7 of data.npz"):
        check_reference(_with_nan(REFERENCE, 1, 1), lambda i: f"sample {i + 6} of data.npz")
    check_reference([{"ids": np.asarray([1, 2])}])  # integer outputs cannot hold NaN


def _cnn():
    model = load_source(str(FIXTURES / "cnn.onnx"))
    calibration, evaluation = split_dataset(load_dataset(FIXTURES / "cnn.npz", model_inputs(model.ir)))
    reference = run_all(make_session(model.ir, optimize=False), evaluation.feeds())
    return model, Context(calibration=calibration, evaluation=evaluation, reference=reference)


def test_pipeline_refuses_a_nan_reference_before_any_pass():
    model, ctx = _cnn()
    ctx.reference[2]["logits"][0, 0] = np.nan
    where = ctx.evaluation.describe_sample(2)
    with pytest.raises(DataError, match=re.escape(f"outputs NaN in 'logits' on {where}")):
        Pipeline([create_pass("cleanup")]).run(model, ctx)


def test_an_exact_pass_whose_outputs_turn_nan_is_stopped():
    @dataclasses.dataclass(frozen=True)
    class PoisonWeight(Pass):
        name = "poison-weight"
        summary = "test only"

        def run(self, model, ctx):
            value = next(v for v in model.graph.initializers.values() if v.const_value.dtype == ir.DataType.FLOAT)
            array = value.const_value.numpy().copy()
            array.flat[0] = np.nan
            value.const_value = ir.tensor(array)
            return PassResult(model, modified=True)

    model, ctx = _cnn()
    with pytest.raises(PassFailure, match="pass 'poison-weight' should keep outputs unchanged but output 'logits' is NaN"):
        Pipeline([PoisonWeight()]).run(model, ctx)
