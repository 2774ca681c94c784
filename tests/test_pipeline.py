"""The pipeline contract: a pass that breaks the model is stopped and named; drift is recorded."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import pytest

from conftest import FIXTURES
from onnxsmith.context import Context
from onnxsmith.data import load_dataset, model_inputs, split_dataset
from onnxsmith.errors import DataError, PassFailure
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.pipeline import Pipeline
from onnxsmith.registry import create_pass
from onnxsmith.runtime import make_session, run_all
from onnxsmith.sources import load_source


@dataclasses.dataclass(frozen=True)
class ScaleFirstWeight(Pass):
    """Test pass: multiplies the first float initializer, a deliberate numerical change."""

    name = "scale-first-weight"
    summary = "test only"
    factor: float = 1.5

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        value = next(v for v in model.graph.initializers.values() if v.const_value.dtype == ir.DataType.FLOAT)
        value.const_value = ir.tensor(value.const_value.numpy() * self.factor)
        return PassResult(model, modified=True)


@dataclasses.dataclass(frozen=True)
class LossyScale(ScaleFirstWeight):
    name = "lossy-scale"
    exact = False
    factor: float = 1.001


@dataclasses.dataclass(frozen=True)
class DropFirstNode(Pass):
    """Test pass: removes a node whose output is still used, leaving an invalid graph."""

    name = "drop-first-node"
    summary = "test only"

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        model.graph.remove(model.graph.node(0), safe=False)
        return PassResult(model, modified=True)


@dataclasses.dataclass(frozen=True)
class NeedsData(Pass):
    name = "needs-data"
    summary = "test only"
    needs_calibration = True

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        return PassResult(model, modified=False)


def _setup(name: str = "cnn"):
    model = load_source(str(FIXTURES / f"{name}.onnx"))
    data = load_dataset(FIXTURES / f"{name}.npz", model_inputs(model.ir))
    calibration, evaluation = split_dataset(data)
    reference = run_all(make_session(model.ir, optimize=False), evaluation.feeds())
    return model, Context(calibration=calibration, evaluation=evaluation, reference=reference)


def test_an_exact_pass_that_changes_outputs_is_stopped_and_named():
    model, ctx = _setup()
    with pytest.raises(PassFailure, match="pass 'scale-first-weight' should keep outputs unchanged but output 'logits' differs"):
        Pipeline([create_pass("cleanup"), ScaleFirstWeight()]).run(model, ctx)


def test_a_pass_that_breaks_the_graph_is_stopped_and_named():
    model, ctx = _setup()
    with pytest.raises(PassFailure, match="pass 'drop-first-node' produced a model that does not load"):
        Pipeline([DropFirstNode()]).run(model, ctx)


def test_a_lossy_pass_records_its_drift():
    model, ctx = _setup()
    result = Pipeline([create_pass("cleanup"), LossyScale()]).run(model, ctx)
    cleanup, lossy = result.records
    assert cleanup.drift < 1e-6
    assert 1e-5 < lossy.drift < 0.05
    assert result.drift == lossy.drift
    assert result.outputs["logits"].sqnr_db < 120
    np.testing.assert_allclose(result.outputs["logits"].cosine, 1.0, atol=1e-4)


def test_a_pass_that_needs_calibration_refuses_without_it():
    model, ctx = _setup()
    ctx.calibration = None
    with pytest.raises(DataError, match="pass 'needs-data' needs calibration data.*--calib"):
        Pipeline([NeedsData()]).run(model, ctx)


def test_a_late_pass_that_needs_calibration_refuses_before_the_first_pass_runs():
    model, ctx = _setup()
    ctx.calibration = None
    seen = []

    class Recorder:
        def before_pass(self, pass_, model):
            seen.append(pass_.name)

        def after_pass(self, pass_, model, record):
            pass

    with pytest.raises(DataError, match="pass 'needs-data' needs calibration data"):
        Pipeline([create_pass("cleanup"), NeedsData()], instruments=[Recorder()]).run(model, ctx)
    assert seen == []


def test_instruments_see_every_pass_in_order():
    seen = []

    class Recorder:
        def before_pass(self, pass_, model):
            seen.append(("before", pass_.name))

        def after_pass(self, pass_, model, record):
            seen.append(("after", record.name, record.nodes_before >= record.nodes_after))

    model, ctx = _setup()
    Pipeline([create_pass("cleanup"), create_pass("opset", {"version": 21})], instruments=[Recorder()]).run(model, ctx)
    assert seen == [("before", "cleanup"), ("after", "cleanup", True), ("before", "opset"), ("after", "opset", True)]
