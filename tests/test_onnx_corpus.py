"""The ONNX backend test corpus through onnxsmith (issue 18): a fixed sample in CI, and each
failure class the whole corpus showed as a named regression case. bench/onnx_corpus_bench.py
runs every case."""

from __future__ import annotations

import random

import pytest

import onnx_corpus

PIPELINES = ["cleanup", "fuse", "quantize{mode=fp16}"]
SAMPLE_SIZE = 400

# case -> the failure class it showed (all now fixed in the general mechanism named)
REGRESSIONS = {
    "pytorch-converted/test_PixelShuffle": "IR version 3: folded Constants became initializers that are not inputs (modelio)",
    "pytorch-operator/test_operator_view": "IR version 3, as above",
    "simple/test_sequence_model5": "opset 12 got Unsqueeze with axes as an input (opset_forms)",
    "simple/test_sequence_model8": "opset 12 got Split with a graph-input split (folding_guards)",
    "test_split_to_sequence_1": "onnxscript's SplitToSequence folding raised on a graph-input split (folding_guards)",
    "test_split_to_sequence_2": "sequence outputs crashed the metric choice (runtime.named_outputs)",
    "test_loop16_seq_none": "shape inference typed an If's seq(tensor) output as a tensor (shape_inference)",
    "test_sequence_map_add_2_sequences_expanded": "the SDPA fusion's shape inference typed SequenceEmpty's output as a tensor",
    "test_sequence_insert_at_front": "sequence inputs were fed tensors (data: sequence inputs)",
    "test_identity_opt": "optional(seq) inputs, as above",
    "test_constant": "a model without inputs had no samples (data)",
    "test_attention_4d_fp16_expanded": "a 1-ulp float16 change failed float32's rtol (metrics.tolerance_for)",
}


@pytest.fixture(scope="module")
def all_cases() -> dict[str, onnx_corpus.Case]:
    return {case.name: case for case in onnx_corpus.node_cases() + onnx_corpus.data_cases()}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_each_failure_class_of_the_corpus_is_fixed(all_cases, name):
    results = onnx_corpus.run_cases([all_cases[name]], PIPELINES)
    assert [(r.pipeline, r.outcome, r.detail) for r in results if r.outcome != "ok"] == [], REGRESSIONS[name]


def test_a_sample_of_the_corpus_gives_no_wrong_output_no_crash_and_no_refusal(all_cases):
    counted = [c for c in all_cases.values() if onnx_corpus.reference_holds(c) is None]
    sample = random.Random(18).sample(counted, SAMPLE_SIZE)
    results = onnx_corpus.run_cases(sample, PIPELINES)
    bad = [(r.case, r.pipeline, r.outcome, r.detail[:200]) for r in results if r.outcome not in ("ok", *onnx_corpus.ACCEPTED)]
    assert bad == []
    assert sum(r.outcome == "ok" for r in results) >= 0.95 * len(results)
