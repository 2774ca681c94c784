"""Shape inference that leaves sequence and optional types alone.

onnx's inference, as onnx-ir's ShapeInferencePass runs it, can write a tensor type on a value
that holds a sequence: on an If or Loop whose branch returns ``seq(tensor)`` it types the
output from the element (tensor(float)), and ONNX Runtime then refuses the model ("type case
mismatch"); on SequenceEmpty it writes the element type. Passes infer shapes only to read
them, so every non-tensor type is put back and no sequence op's output keeps a tensor type.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxsmith.graph_stats import all_nodes

__all__ = ["infer_shapes", "relax_contradicted_output_shapes"]

CONTROL_FLOW_OUTPUTS = {"If": 0, "Loop": 1, "Scan": 0}  # how many body outputs come before the node's outputs
NON_TENSOR_OPS = {"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence", "Optional"}


def infer_shapes(model: ir.Model, *, strict: bool = True) -> None:
    """Annotate ``model``'s values with inferred types and shapes, in place, keeping every
    sequence or optional type it had and the ones its control-flow bodies return."""
    kept = {id(v): v.type for v in _values(model) if _non_tensor(v.type)}
    common_passes.ShapeInferencePass(strict_mode=strict)(model)
    values = {id(v): v for v in _values(model)}
    for key, type_ in kept.items():
        if key in values:
            values[key].type = type_
    for node in all_nodes(model):
        if node.domain == "" and node.op_type in NON_TENSOR_OPS and not _non_tensor(node.outputs[0].type):
            node.outputs[0].type = kept.get(id(node.outputs[0]))  # None where it was unknown: the runtime infers it
        skip = CONTROL_FLOW_OUTPUTS.get(node.op_type) if node.domain == "" else None
        if skip is None:
            continue
        for attribute in node.attributes.values():
            if attribute.type != ir.AttributeType.GRAPH:
                continue
            for output, returned in zip(node.outputs, list(attribute.value.outputs)[skip:]):
                if _non_tensor(returned.type):
                    output.type = returned.type


def relax_contradicted_output_shapes(model: ir.Model, outputs: list[dict[str, np.ndarray]]) -> list[str]:
    """Make dynamic, in place, every declared graph-output dim that the model's own outputs
    (one dict per run) contradict, and say which. Exporters get these wrong (ddddocr's CRNN
    declares [1, seqlen] and returns [T, 1, 8210]); the constant folder trusts them and
    rewrote that model's last Reshape to the declared shape, changing its output."""
    notes = []
    for value in model.graph.outputs:
        seen = {np.shape(run[value.name]) for run in outputs if value.name in run}
        if value.shape is None or not seen or not isinstance(value.type, ir.TensorType):
            continue
        declared = list(value.shape)
        ranks = {len(shape) for shape in seen}
        if ranks != {len(declared)}:  # the rank is wrong: every dim dynamic, at the rank it has (or none)
            value.shape = ir.Shape([None] * ranks.pop()) if len(ranks) == 1 else None
        else:
            value.shape = ir.Shape([d if all(not isinstance(d, int) or shape[k] == d for shape in seen) else None
                                    for k, d in enumerate(declared)])
        if value.shape is None or list(value.shape) != declared:
            actual = " or ".join(str(list(shape)) for shape in sorted(seen))
            notes.append(f"output '{value.name}' is declared {[str(d) for d in declared]} but the model returns {actual}: "
                         "the declaration was made dynamic where it is wrong")
    return notes


def _non_tensor(type_: ir.TypeProtocol | None) -> bool:
    return isinstance(type_, (ir.SequenceType, ir.OptionalType))


def _values(model: ir.Model):
    for node in all_nodes(model):
        yield from node.outputs
    yield from model.graph.inputs
